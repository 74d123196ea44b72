"""Compatibility path: the comparison report's data model lives in :mod:`subnetscope.results.schema`.

Users' code and the docs import ``Report``, ``Finding``, ``SCHEMA_VERSION``, ``json_text`` and
``load_json`` from here; new code imports :mod:`subnetscope.results.schema`.
"""

from __future__ import annotations

from ..results.schema import (
    REPORT_KIND,
    SCHEMA_VERSION,
    Finding,
    Report,
    check_schema,
    json_text,
    load_json,
)

__all__ = ["REPORT_KIND", "SCHEMA_VERSION", "Finding", "Report", "check_schema", "json_text", "load_json"]
