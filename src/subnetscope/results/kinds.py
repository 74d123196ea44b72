"""Every JSON report kind in one table: the ``"report"`` string → where its result type lives and how to load it.

The table names modules by string and imports them only when asked, so reading it costs nothing (and
``results`` stays free of the measures that produce the results). The renderers dispatch on the same strings
(:data:`subnetscope.render.dispatch.PLOTTERS`).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import SubnetscopeError


@dataclass(frozen=True)
class ReportKind:
    """One report kind: its ``"report"`` string, its result type, and what writes it."""

    kind: str  #: the ``"report"`` value of the JSON document
    module: str  #: the module holding the result type (or the function building the document)
    type_name: str  #: the result type's name in ``module``
    written_by: str  #: the library call that returns it
    loadable: bool = False  #: the result type has ``from_json`` (the document reads back into it)

    def result_type(self) -> Any:
        """The result type (imported on first use)."""
        return getattr(importlib.import_module(self.module), self.type_name)

    def load(self, obj: Mapping[str, Any]) -> Any:
        """``obj`` read back into the result type; a kind without ``from_json`` is refused."""
        if not self.loadable:
            raise SubnetscopeError(
                f"a {self.kind} report cannot be read back into a {self.type_name}",
                "use the JSON document as it is (load_json)",
            )
        return self.result_type().from_json(dict(obj))


#: every kind subnetscope writes, by its ``"report"`` string
REPORT_KINDS: dict[str, ReportKind] = {
    k.kind: k
    for k in (
        ReportKind(
            "subnetscope.compare", "subnetscope.results.schema", "Report", "subnetscope.compare", True
        ),
        ReportKind(
            "subnetscope.rank", "subnetscope.results.rank", "RankReport", "anatomy.rank.rank_report", True
        ),
        ReportKind("subnetscope.series", "subnetscope.results.series", "SeriesReport", "series.series"),
        ReportKind("subnetscope.tracker", "subnetscope.train.tracker", "UpdateTracker", "UpdateTracker.save"),
        ReportKind("subnetscope.overlap", "subnetscope.results.overlap", "OverlapReport", "overlap.overlap"),
        ReportKind(
            "subnetscope.conjecture", "subnetscope.results.conjecture", "ConjectureResult", "train.conjecture"
        ),
        ReportKind(
            "subnetscope.mask", "subnetscope.results.mask", "mask_summary", "results.mask.mask_summary"
        ),
        ReportKind(
            "subnetscope.delta_export", "subnetscope.delta.export", "ExportResult", "delta.export_delta"
        ),
        ReportKind("subnetscope.delta_apply", "subnetscope.delta.apply", "ApplyResult", "delta.apply_delta"),
    )
}


def report_kind(obj: Mapping[str, Any], where: str = "the report") -> ReportKind:
    """The :class:`ReportKind` of a JSON document (its ``"report"`` field); an unknown kind is an error."""
    kind = obj.get("report")
    found = REPORT_KINDS.get(kind) if isinstance(kind, str) else None
    if found is None:
        raise SubnetscopeError(
            f"{where}: report kind {kind!r} is not one subnetscope writes",
            "give a JSON document written by subnetscope (known kinds: "
            + ", ".join(sorted(REPORT_KINDS))
            + ")",
        )
    return found
