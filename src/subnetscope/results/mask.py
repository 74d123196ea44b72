"""The ``subnetscope.mask`` JSON document: a mask file written from a compare report, summarised."""

from __future__ import annotations

import os
from typing import Any

from .schema import SCHEMA_VERSION, Report

REPORT_KIND = "subnetscope.mask"


def mask_summary(report: Report, path: str, tol: float) -> dict[str, Any]:
    """The ``subnetscope.mask`` document (``mask --format json``): the mask file written at ``path`` from
    ``report`` at tolerance ``tol``, and how many parameters it marks."""
    ov = report.overall
    i = report.tolerances.index(tol)
    changed = ov.changed[i]
    size = os.path.getsize(path)
    weights = ov.numel * 2  # the same model in bf16
    return {
        "schema_version": SCHEMA_VERSION,
        "report": REPORT_KIND,
        "tool": {"name": "subnetscope", "version": report.tool_version},
        "path": path,
        "tolerance": tol,
        "semantics": report.semantics,
        "base": report.base,
        "target": report.target,
        "tensors": len(report.tensors),
        "numel": ov.numel,
        "changed": changed,
        "sparsity": ov.sparsity[i],
        "bytes": size,
        "bytes_per_bf16_byte": size / weights if weights else None,
        "findings": [f.to_json() for f in report.findings],
    }
