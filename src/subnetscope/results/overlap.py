"""The results of an overlap measure: mergeable counts per tensor and group, and the report.

See :mod:`subnetscope.overlap` for the quantities. Every type here merges by addition, so the engine can
fold chunk partials in any order.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import __version__
from .. import magnitude_bins as mb
from ..naming import KINDS
from .schema import SCHEMA_VERSION, Finding

REPORT_KIND = "subnetscope.overlap"


@dataclass
class DeltaSums:
    """Sums over the two updates ``d1 = T1 - B``, ``d2 = T2 - B`` (float64; non-finite elements skipped)."""

    shared: int = 0  #: coordinates updated by both runs (finite deltas)
    sign_agree: int = 0  #: of those, how many move in the same direction
    dot: float = 0.0  #: Σ d1·d2 over the shared coordinates
    sq1: float = 0.0  #: Σ d1² over the shared coordinates
    sq2: float = 0.0
    sq1_full: float = 0.0  #: Σ d1² over every coordinate
    sq2_full: float = 0.0
    dot_full: float = 0.0  #: Σ d1·d2 over every coordinate
    nonfinite: int = 0  #: elements skipped because a delta is NaN/Inf

    def add(self, o: DeltaSums) -> None:
        """Add ``o`` into ``self``."""
        for f in (
            "shared",
            "sign_agree",
            "dot",
            "sq1",
            "sq2",
            "sq1_full",
            "sq2_full",
            "dot_full",
            "nonfinite",
        ):
            setattr(self, f, getattr(self, f) + getattr(o, f))

    def to_json(self) -> dict[str, Any]:
        """Derived quantities: sign agreement and cosines (null when undefined)."""
        return {
            "shared": self.shared,
            "sign_agreement": self.sign_agree / self.shared if self.shared else None,
            "cosine": _cos(self.dot, self.sq1, self.sq2),
            "cosine_full": _cos(self.dot_full, self.sq1_full, self.sq2_full),
            "nonfinite_skipped": self.nonfinite,
        }


def _cos(dot: float, a: float, b: float) -> float | None:
    return dot / math.sqrt(a * b) if a > 0 and b > 0 else None


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def hypergeometric(n: int, c1: int, c2: int) -> tuple[float, float]:
    """Mean and variance of ``|I1 ∩ I2|`` for random subsets of sizes ``c1``, ``c2`` of ``n`` elements."""
    if n <= 0:
        return 0.0, 0.0
    mean = c1 * c2 / n
    var = c1 * c2 * (n - c1) * (n - c2) / (n * n * (n - 1)) if n > 1 else 0.0
    return mean, var


def _z(observed: int, mean: float, var: float) -> float | None:
    return (observed - mean) / math.sqrt(var) if var > 0 else None


@dataclass
class OverlapCounts:
    """Mergeable counts of one tensor or group: sizes, intersection, optional bins and delta sums."""

    numel: int = 0
    changed1: int = 0
    changed2: int = 0
    intersection: int = 0
    bins: np.ndarray | None = None  #: global magnitude histogram (see :mod:`subnetscope.magnitude_bins`)
    deltas: DeltaSums | None = None

    def add(self, o: OverlapCounts) -> None:
        """Add ``o`` into ``self``."""
        self.numel += o.numel
        self.changed1 += o.changed1
        self.changed2 += o.changed2
        self.intersection += o.intersection
        if o.bins is not None:
            if self.bins is None:
                self.bins = mb.empty_hist()
            self.bins += o.bins
        if o.deltas is not None:
            if self.deltas is None:
                self.deltas = DeltaSums()
            self.deltas.add(o.deltas)

    def to_state(self) -> dict[str, Any]:
        """The raw counts as JSON (for a resume journal; :meth:`from_state` reads them back exactly)."""
        d: dict[str, Any] = {"numel": self.numel, "changed": [self.changed1, self.changed2],
                             "intersection": self.intersection}  # fmt: skip
        if self.bins is not None:
            d["bins"] = self.bins.tolist()
        if self.deltas is not None:
            d["deltas"] = dataclasses.asdict(self.deltas)
        return d

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> OverlapCounts:
        """Inverse of :meth:`to_state`."""
        bins = np.asarray(d["bins"], dtype=np.int64) if "bins" in d else None
        deltas = DeltaSums(**d["deltas"]) if "deltas" in d else None
        return cls(
            int(d["numel"]), int(d["changed"][0]), int(d["changed"][1]), int(d["intersection"]), bins, deltas
        )

    @property
    def union(self) -> int:
        """``|I1 ∪ I2|``."""
        return self.changed1 + self.changed2 - self.intersection

    def to_json(self, with_bins: bool = False) -> dict[str, Any]:
        """JSON form: counts, o1/o2, baselines, Jaccard, z-scores (null where undefined)."""
        n, c1, c2, i = self.numel, self.changed1, self.changed2, self.intersection
        mean, var = hypergeometric(n, c1, c2)
        d: dict[str, Any] = {
            "numel": n,
            "changed": [c1, c2],
            "density": [_ratio(c1, n), _ratio(c2, n)],
            "sparsity": [1 - c1 / n if n else None, 1 - c2 / n if n else None],
            "intersection": i,
            "union": self.union,
            "o1": _ratio(i, c1),
            "o2": _ratio(i, c2),
            "o1_random": _ratio(c2, n),
            "o2_random": _ratio(c1, n),
            "jaccard": _ratio(i, self.union),
            "expected_intersection": mean,
            "jaccard_random": _ratio(mean, c1 + c2 - mean),
            "z": _z(i, mean, var),
        }
        if self.bins is not None:
            m_mean, m_var = mb.expected_intersection(self.bins)
            d["magnitude"] = {
                "expected_intersection": m_mean,
                "o1_random": _ratio(m_mean, c1),
                "o2_random": _ratio(m_mean, c2),
                "jaccard_random": _ratio(m_mean, c1 + c2 - m_mean),
                "z": _z(i, m_mean, m_var),
                "lift": _ratio(i, m_mean),
            }
            if with_bins:
                h = self.bins
                d["magnitude"]["bins"] = [
                    {"bin": mb.bin_label(int(j)), "exponent": mb.bin_exponent(int(j)), "numel": int(h[mb.N, j]),
                     "changed": [int(h[mb.C1, j]), int(h[mb.C2, j])], "intersection": int(h[mb.BOTH, j])}
                    for j in np.flatnonzero(h[mb.N])
                ]  # fmt: skip
        if self.deltas is not None:
            d["deltas"] = self.deltas.to_json()
        return d


@dataclass
class TensorOverlap:
    """The overlap of one tensor."""

    name: str
    shape: list[int]
    layer: int | None
    kind: str
    counts: OverlapCounts

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {"name": self.name, "shape": self.shape, "layer": self.layer, "kind": self.kind,
                **self.counts.to_json()}  # fmt: skip


@dataclass
class OverlapReport:
    """Result of :func:`overlap` / :func:`overlap_deltas`."""

    mode: str  #: ``masks`` or ``deltas``
    inputs: list[dict[str, Any]]  #: one entry per run: ``ref``, ``tolerance``, ``semantics``
    base: dict[str, Any] | None  #: the base checkpoint when given (magnitude baseline, deltas)
    tensors: list[TensorOverlap]
    findings: list[Finding] = field(default_factory=list)
    tool_version: str = __version__

    @property
    def overall(self) -> OverlapCounts:
        """Counts over every tensor."""
        c = OverlapCounts()
        for t in self.tensors:
            c.add(t.counts)
        return c

    def by_kind(self) -> dict[str, OverlapCounts]:
        """Counts per matrix type, in :data:`~subnetscope.naming.KINDS` order."""
        out: dict[str, OverlapCounts] = {}
        for t in self.tensors:
            out.setdefault(t.kind, OverlapCounts()).add(t.counts)
        return {k: out[k] for k in KINDS if k in out}

    def by_layer(self) -> dict[int, OverlapCounts]:
        """Counts per layer (tensors outside layers are not included)."""
        out: dict[int, OverlapCounts] = {}
        for t in self.tensors:
            if t.layer is not None:
                out.setdefault(t.layer, OverlapCounts()).add(t.counts)
        return dict(sorted(out.items()))

    def to_json(self) -> dict[str, Any]:
        """The versioned JSON document; the whole-model keys are also at the top level."""
        overall = self.overall.to_json(with_bins=True)
        return {
            "schema_version": SCHEMA_VERSION,
            "report": REPORT_KIND,
            "tool": {"name": "subnetscope", "version": self.tool_version},
            "mode": self.mode,
            "inputs": self.inputs,
            "base": self.base,
            **overall,
            "overall": overall,
            "by_kind": {k: c.to_json() for k, c in self.by_kind().items()},
            "by_layer": {str(k): c.to_json() for k, c in self.by_layer().items()},
            "findings": [f.to_json() for f in self.findings],
            "tensors": [t.to_json() for t in self.tensors],
        }
