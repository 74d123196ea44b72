"""``series`` results: :class:`SeriesReport` (one run's checkpoints), its tensors and steps, and its JSON."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import __version__
from ..kernels.series import (
    CHG_INIT,
    CHG_PREV,
    EVER,
    EVER_BITS,
    IDENT_INIT,
    IDENT_PREV,
    NSPLIT,
    NSTEP,
    OUT_FINAL,
    OUT_FINAL_STEP,
)
from ..naming import KINDS
from .schema import SCHEMA_VERSION, Finding

REPORT_KIND = "subnetscope.series"


@dataclass
class StepInfo:
    """One checkpoint of the series."""

    index: int  #: 1-based position in the series
    name: str  #: folder or file name
    ref: str  #: as given
    step: int | None  #: training step (from ``checkpoint-<step>``), None if unknown


@dataclass
class TensorSeries:
    """The counters of one tensor."""

    name: str
    shape: list[int]
    layer: int | None
    kind: str
    numel: int
    steps: np.ndarray  #: ``(K, NSTEP)`` int64
    split: np.ndarray  #: ``(NSPLIT,)`` int64


def _share(a: int, b: int) -> float | None:
    return a / b if b else None


def _split_json(s: np.ndarray | list[int], numel: int, bits: bool = False) -> dict[str, Any]:
    o = 3 if bits else 0
    keys = ("never_updated", "cancelled", "final_subnetwork")
    counts = {k: int(s[o + j]) for j, k in enumerate(keys)}
    return {**counts, "numel": numel, "shares": {k: _share(v, numel) for k, v in counts.items()}}


def _group_json(steps: np.ndarray, split: np.ndarray, numel: int) -> dict[str, Any]:
    def sp(col: int) -> list[float | None]:
        return [1 - int(x) / numel if numel else None for x in steps[:, col]]

    return {
        "numel": numel,
        "sparsity_vs_init": sp(CHG_INIT),
        "sparsity_vs_prev": sp(CHG_PREV),
        "outside_final_share": [_share(int(r[OUT_FINAL]), int(r[CHG_INIT])) for r in steps],
        "ever_updated_share": [_share(int(r[EVER]), numel) for r in steps],
        "split": _split_json(split, numel),
    }


def _tensors_json(tensors: Sequence[TensorSeries]) -> list[dict[str, Any]]:
    if not tensors:
        return []
    steps = np.stack([t.steps for t in tensors])  # one conversion to Python ints for all tensors
    ci, cp = steps[:, :, CHG_INIT].tolist(), steps[:, :, CHG_PREV].tolist()
    splits = np.stack([t.split for t in tensors]).tolist()
    return [
        {
            "name": t.name,
            "shape": t.shape,
            "layer": t.layer,
            "kind": t.kind,
            "numel": t.numel,
            "changed_vs_init": ci[i],
            "changed_vs_prev": cp[i],
            "split": _split_json(splits[i], t.numel),
        }
        for i, t in enumerate(tensors)
    ]


@dataclass
class SeriesReport:
    """Result of :func:`series`."""

    init: dict[str, Any]
    steps: list[StepInfo]
    final: dict[str, Any]  #: ``ref`` and ``index`` (1-based position among the steps, or None)
    tolerance: float
    semantics: str
    tensors: list[TensorSeries]
    findings: list[Finding] = field(default_factory=list)
    tool_version: str = __version__

    def _sum(self, tensors: Sequence[TensorSeries]) -> tuple[np.ndarray, np.ndarray, int]:
        st = np.zeros((len(self.steps), NSTEP), dtype=np.int64)
        sp = np.zeros(NSPLIT, dtype=np.int64)
        n = 0
        for t in tensors:
            st += t.steps
            sp += t.split
            n += t.numel
        return st, sp, n

    @property
    def numel(self) -> int:
        """Parameters covered."""
        return sum(t.numel for t in self.tensors)

    def totals(self) -> tuple[np.ndarray, np.ndarray, int]:
        """``(steps (K, NSTEP), split (NSPLIT,), numel)`` over every tensor."""
        return self._sum(self.tensors)

    def groups(self, by: str) -> dict[Any, tuple[np.ndarray, np.ndarray, int]]:
        """Totals per ``"kind"`` (in :data:`~subnetscope.naming.KINDS` order) or per ``"layer"``."""
        buckets: dict[Any, list[TensorSeries]] = {}
        for t in self.tensors:
            key = t.kind if by == "kind" else t.layer
            if key is not None:
                buckets.setdefault(key, []).append(t)
        keys = [k for k in KINDS if k in buckets] if by == "kind" else sorted(buckets)
        return {k: self._sum(buckets[k]) for k in keys}

    def step_rows(self) -> list[dict[str, Any]]:
        """One JSON object per checkpoint (whole model)."""
        st, _, n = self.totals()
        rows = []
        for info, r in zip(self.steps, st):
            c = [int(x) for x in r]
            rows.append({
                "index": info.index, "name": info.name, "ref": info.ref, "step": info.step, "numel": n,
                "changed_vs_init": c[CHG_INIT], "sparsity_vs_init": 1 - c[CHG_INIT] / n if n else None,
                "identical_vs_init": c[IDENT_INIT], "bit_identical_vs_init": _share(c[IDENT_INIT], n),
                "changed_vs_prev": c[CHG_PREV], "sparsity_vs_prev": 1 - c[CHG_PREV] / n if n else None,
                "identical_vs_prev": c[IDENT_PREV], "bit_identical_vs_prev": _share(c[IDENT_PREV], n),
                "outside_final": c[OUT_FINAL], "outside_final_share": _share(c[OUT_FINAL], c[CHG_INIT]),
                "outside_final_step": c[OUT_FINAL_STEP],
                "outside_final_step_share": _share(c[OUT_FINAL_STEP], c[CHG_PREV]),
                "ever_updated": c[EVER], "ever_updated_share": _share(c[EVER], n),
                "ever_touched_bits": c[EVER_BITS],
            })  # fmt: skip
        return rows

    def to_json(self) -> dict[str, Any]:
        """The versioned JSON document."""
        _, sp, n = self.totals()
        return {
            "schema_version": SCHEMA_VERSION,
            "report": REPORT_KIND,
            "tool": {"name": "subnetscope", "version": self.tool_version},
            "semantics": self.semantics,
            "tolerance": self.tolerance,
            "init": self.init,
            "final": self.final,
            "numel": n,
            "steps": self.step_rows(),
            "split": _split_json(sp, n),
            "split_bitwise": _split_json(sp, n, bits=True),
            "by_kind": {k: _group_json(*v) for k, v in self.groups("kind").items()},
            "by_layer": {str(k): _group_json(*v) for k, v in self.groups("layer").items()},
            "findings": [f.to_json() for f in self.findings],
            "tensors": _tensors_json(self.tensors),
        }
