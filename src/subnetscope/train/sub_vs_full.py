"""Conjecture 1 (paper §4): does finetuning only the subnetwork reproduce full finetuning?

Given the base B, the fully finetuned F, and S, finetuned from B on the same data with the same
hyperparameters but with gradients masked to F's subnetwork (the elements F changed from B), report:

- the share of all weights of S equal to F within each tolerance (|S - F| <= tol), overall and per matrix
  type (the paper: 94.0 % for DPO and 90.5 % for PRIME at 1e-5, 100 % at 1e-4);
- the share of F's subnetwork that S reproduces: of the elements F changed (|F - B| > tol at the
  subnetwork tolerance), those where |S - F| <= tol.

Two streaming passes of the compare engine: B vs F (writing F's subnetwork as a temporary mask file), then
F vs S with a per-chunk consumer that counts, inside that mask, the elements the engine's own kernel finds
unchanged at each tolerance, so every count uses exactly the semantics of ``compare``.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import validate
from ..comparison import CheckpointLike, check_tolerances, compare
from ..maskfile import MaskFile
from ..measures.compare import Thresholds, count_pair_chunk
from ..naming import KINDS
from ..plan import Pair
from ..results.conjecture import PAPER, REPORT_KIND, SCHEMA_VERSION, ConjectureResult, Group

__all__ = [
    "DEFAULT_TOLERANCES",
    "PAPER",
    "REPORT_KIND",
    "SCHEMA_VERSION",
    "ConjectureResult",
    "Group",
    "conjecture",
]

DEFAULT_TOLERANCES = (1e-5, 1e-4)

#: what the paper reports (§4), for the human output


class _Reproduced:
    """Per chunk of F vs S: elements of F's subnetwork, and those unchanged from F at each tolerance."""

    key = "conjecture"

    def __init__(self, mask: MaskFile, tolerances: Sequence[float], semantics: str) -> None:
        self.mask = mask
        self.ths = [Thresholds([t], semantics, t) for t in tolerances]
        self._packed: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def _bits(self, name: str) -> np.ndarray | None:
        with self._lock:
            arr = self._packed.get(name)
            if arr is None and name in self.mask.shapes:
                arr = self.mask.packed(name)
                self._packed[name] = arr
            return arr

    def chunk(self, pair: Pair, start: int, base_bits: np.ndarray, target_bits: np.ndarray) -> Any:
        packed = self._bits(pair.name)
        n = int(base_bits.shape[0])
        out = np.zeros(1 + len(self.ths), dtype=np.int64)
        if packed is None or n == 0:
            return out
        sub = np.unpackbits(packed[start // 8 : (start + n + 7) // 8], count=n, bitorder="little").view(bool)
        out[0] = int(np.count_nonzero(sub))
        for k, th in enumerate(self.ths):
            _, diff = count_pair_chunk(pair, base_bits, target_bits, th, True)
            assert diff is not None
            changed = np.unpackbits(diff, count=n, bitorder="little").view(bool)
            out[1 + k] = int(np.count_nonzero(sub & ~changed))
        return out

    def merge(self, pair: Pair, state: Any, partial: Any) -> Any:
        return partial if state is None else state + partial

    def finish(self, pair: Pair, state: Any) -> Any:
        with self._lock:
            self._packed.pop(pair.name, None)
        if state is None:
            state = np.zeros(1 + len(self.ths), dtype=np.int64)
        return {"subnetwork": int(state[0]), "reproduced": [int(x) for x in state[1:]]}


def conjecture(
    base: CheckpointLike,
    full: CheckpointLike,
    sub: CheckpointLike,
    tolerances: Sequence[float] = DEFAULT_TOLERANCES,
    *,
    subnetwork_tolerance: float = 1e-5,
    semantics: str = "exact",
    jobs: int | None = None,
    progress: bool = False,
) -> ConjectureResult:
    """Compare full finetuning ``full`` with subnetwork finetuning ``sub`` (both from ``base``).

    Args:
        base, full, sub: checkpoints (paths, hub ids or opened checkpoints), as for :func:`subnetscope.compare`.
        tolerances: |S - F| <= tol counts as identical (default 1e-5 and 1e-4, as in the paper).
        subnetwork_tolerance: F's subnetwork is |F - B| > this (default 1e-5).
        semantics: ``"exact"`` or ``"reference"``, as for ``compare``.
    """
    tols = check_tolerances(tolerances)
    subnetwork_tolerance = validate.tolerance(subnetwork_tolerance, "subnetwork_tolerance")
    validate.semantics(semantics)
    validate.jobs(jobs)
    with tempfile.TemporaryDirectory(prefix="subnetscope-conj-") as tmp:
        mask_path = Path(tmp) / "full.mask"
        bf = compare(base, full, sorted({*tols, subnetwork_tolerance}), semantics, jobs=jobs,
                     mask_out=mask_path, mask_tolerance=subnetwork_tolerance, progress=progress)  # fmt: skip
        consumer = _Reproduced(MaskFile(mask_path), tols, semantics)
        fs = compare(full, sub, tols, semantics, jobs=jobs, consumers=[consumer], progress=progress)
    overall = Group()
    groups: dict[str, Group] = {}
    for t in fs.tensors:
        extra = t.extra.get(_Reproduced.key, {"subnetwork": 0, "reproduced": [0] * len(tols)})
        args = (
            t.counts.numel,
            t.counts.unchanged,
            t.counts.identical,
            extra["subnetwork"],
            extra["reproduced"],
        )
        overall.add(*args)
        groups.setdefault(t.kind, Group()).add(*args)
    by_kind = {k: groups[k] for k in KINDS if k in groups}
    return ConjectureResult(tols, subnetwork_tolerance, semantics, overall, by_kind, bf, fs)
