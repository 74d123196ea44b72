"""The result of ``rank``: one :class:`MatrixRank` per 2-D update, and the :class:`RankReport` with its
versioned JSON (see :mod:`subnetscope.anatomy.rank` for how ranks are computed)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import __version__
from ..naming import KINDS
from .schema import SCHEMA_VERSION, Finding, check_schema, load_json

REPORT_KIND = "subnetscope.rank"
#: float32 machine epsilon (torch.finfo(torch.float32).eps)
EPS32 = float(np.finfo(np.float32).eps)
#: ranks are also reported at these multiples of the default tolerance
DEFAULT_RTOL_MULTIPLIERS: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)
#: the finding of a matrix whose update holds NaN or Inf
NONFINITE_DETAIL = "the update holds NaN or Inf values: no rank is defined, the matrix was left out"
METHOD = "gram-eigvalsh-float64"


@dataclass
class MatrixRank:
    """Rank statistics of one 2-D update."""

    name: str
    rows: int
    cols: int
    rank: int  #: numerical rank at the default tolerance
    sigma_max: float
    tol: float  #: σ_max · max(rows, cols) · eps32
    stable_rank: float  #: ‖Δ‖_F² / σ_max²
    effective_rank: float  #: exp(entropy of σ / Σσ) over σ > tol (Roy & Vetterli)
    ranks_at: list[int]  #: rank at each rtol multiplier of the report
    sigma_min: float  #: smallest singular value (resolved to ~1e-8 · σ_max)
    layer: int | None = None
    kind: str = "other"
    dtype: str = ""
    spectrum: dict[str, Any] | None = None  #: :mod:`subnetscope.anatomy.spectrum` metrics, when asked

    @property
    def max_rank(self) -> int:
        """min(rows, cols)."""
        return min(self.rows, self.cols)

    @property
    def rank_pct(self) -> float:
        """Rank as a percentage of min(rows, cols)."""
        return 100.0 * self.rank / self.max_rank if self.max_rank else 0.0

    def to_json(self) -> dict[str, Any]:
        """JSON form (``name``, ``rank`` and ``max_rank`` are stable keys)."""
        d: dict[str, Any] = {
            "name": self.name,
            "shape": [self.rows, self.cols],
            "dtype": self.dtype,
            "layer": self.layer,
            "kind": self.kind,
            "rank": self.rank,
            "max_rank": self.max_rank,
            "rank_pct": self.rank_pct,
            "stable_rank": self.stable_rank,
            "effective_rank": self.effective_rank,
            "sigma_max": self.sigma_max,
            "sigma_min": self.sigma_min,
            "tol": self.tol,
            "ranks_at": list(self.ranks_at),
        }
        if self.spectrum is not None:
            d["spectrum"] = self.spectrum
        return d

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> MatrixRank:
        """Inverse of :meth:`to_json`."""
        rows, cols = obj["shape"]
        return cls(
            name=obj["name"], rows=int(rows), cols=int(cols), rank=int(obj["rank"]),
            sigma_max=float(obj["sigma_max"]), tol=float(obj["tol"]), stable_rank=float(obj["stable_rank"]),
            effective_rank=float(obj["effective_rank"]), ranks_at=[int(r) for r in obj["ranks_at"]],
            sigma_min=float(obj.get("sigma_min", 0.0)), layer=obj.get("layer"), kind=obj.get("kind", "other"),
            dtype=obj.get("dtype", ""), spectrum=obj.get("spectrum"),
        )  # fmt: skip


def _summary(items: Sequence[MatrixRank], nmult: int) -> dict[str, Any]:
    if not items:
        return {"matrices": 0}
    pct = [m.rank_pct for m in items]
    at = [
        sum(100.0 * m.ranks_at[i] / m.max_rank if m.max_rank else 0.0 for m in items) / len(items)
        for i in range(nmult)
    ]
    out: dict[str, Any] = {
        "matrices": len(items),
        "mean_rank_pct": sum(pct) / len(pct),
        "min_rank_pct": min(pct),
        "max_rank_pct": max(pct),
        "full_rank": sum(1 for m in items if m.rank == m.max_rank),
        "mean_stable_rank": sum(m.stable_rank for m in items) / len(items),
        "mean_effective_rank": sum(m.effective_rank for m in items) / len(items),
        "mean_effective_rank_pct": sum(100 * m.effective_rank / m.max_rank for m in items if m.max_rank)
        / len(items),
        "mean_rank_pct_at": at,
    }
    spec = [m.spectrum for m in items if m.spectrum and m.spectrum.get("enrichment") is not None]
    if spec:
        out["mean_enrichment"] = sum(float(s["enrichment"]) for s in spec) / len(spec)
    return out


@dataclass
class RankReport:
    """Result of :func:`rank_report`."""

    base: dict[str, Any]
    target: dict[str, Any]
    tensors: list[MatrixRank]
    rtol_multipliers: list[float] = field(default_factory=lambda: list(DEFAULT_RTOL_MULTIPLIERS))
    device: str = "cpu"
    method: str = METHOD
    selection: dict[str, Any] = field(default_factory=dict)  #: sample / layers / seed / candidates
    tool_version: str = __version__
    spectrum_k: int | None = None
    #: matrices that were not ranked (``nonfinite``: the update holds NaN or Inf)
    findings: list[Finding] = field(default_factory=list)

    def by_kind(self) -> dict[str, dict[str, Any]]:
        """Means per matrix type (unweighted over matrices), in KINDS order."""
        groups: dict[str, list[MatrixRank]] = {}
        for m in self.tensors:
            groups.setdefault(m.kind, []).append(m)
        return {k: _summary(groups[k], len(self.rtol_multipliers)) for k in KINDS if k in groups}

    def overall(self) -> dict[str, Any]:
        """Means over every ranked matrix."""
        return _summary(self.tensors, len(self.rtol_multipliers))

    def to_json(self) -> dict[str, Any]:
        """The versioned JSON document (``"report": "subnetscope.rank"``)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "report": REPORT_KIND,
            "tool": {"name": "subnetscope", "version": self.tool_version},
            "method": self.method,
            "device": self.device,
            "tolerance": "sigma_max * max(rows, cols) * eps(float32), as torch.linalg.matrix_rank",
            "eps": EPS32,
            "rtol_multipliers": list(self.rtol_multipliers),
            "spectrum_k": self.spectrum_k,
            "base": self.base,
            "target": self.target,
            "selection": self.selection,
            "overall": self.overall(),
            "by_kind": self.by_kind(),
            "findings": [f.to_json() for f in self.findings],
            "tensors": [m.to_json() for m in self.tensors],
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> RankReport:
        """Rebuild from :meth:`to_json` output (checks kind and schema version)."""
        check_schema(obj, REPORT_KIND)
        return cls(
            base=obj.get("base", {}), target=obj.get("target", {}),
            tensors=[MatrixRank.from_json(t) for t in obj["tensors"]],
            rtol_multipliers=[float(x) for x in obj.get("rtol_multipliers", DEFAULT_RTOL_MULTIPLIERS)],
            device=obj.get("device", "cpu"), method=obj.get("method", METHOD),
            selection=obj.get("selection", {}), tool_version=obj.get("tool", {}).get("version", ""),
            spectrum_k=obj.get("spectrum_k"), findings=[Finding(**f) for f in obj.get("findings", [])],
        )  # fmt: skip

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RankReport:
        """Read a rank report written with ``-o``."""
        return cls.from_json(load_json(path))


# -- the arithmetic ---------------------------------------------------------------------------------------------
