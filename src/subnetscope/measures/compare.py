"""The compare pass on the engine: every tensor pair, in chunks, into mergeable counts (and mask bits).

A plan's pairs become the job's rows (base and target); one :class:`PairCounter` runs the fused kernel
(:mod:`subnetscope.kernels.compare`, which releases the GIL) on each chunk, producing the per-tolerance counters
and, when a mask is written, the packed change bits, which reach the :class:`MaskSink` on the driver as
chunks are merged. Extra per-pair computations (:class:`ChunkConsumer`: ULP histograms, FP8 dequantized
counts, ...) ride the same pass, so ``compare --ulp --mask-out`` reads the bytes once. Any executor runs it
(:mod:`subnetscope.engine.executors`) with the same result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..dtypes import DType, decode, reference_threshold
from ..engine.executors.base import default_jobs
from ..engine.job import Job, Row
from ..io.reader import DEFAULT_CHUNK_ELEMENTS
from ..kernels.compare import count_chunk
from ..plan import Pair, Plan
from ..stats import Counts, TensorStats

if TYPE_CHECKING:
    from ..engine.executors.base import Executor

SEMANTICS = ("exact", "reference")


class ChunkConsumer(Protocol):
    """Something else computed in the same pass, per tensor (e.g. a ULP histogram)."""

    key: str  #: the key its result gets in each tensor's JSON

    def chunk(self, pair: Pair, start: int, base_bits: np.ndarray, target_bits: np.ndarray) -> Any:
        """Called on a worker thread for each chunk; returns a small partial result."""

    def merge(self, pair: Pair, state: Any, partial: Any) -> Any:
        """Called on the main thread: fold ``partial`` into ``state`` (``state`` is None at first)."""

    def finish(self, pair: Pair, state: Any) -> Any:
        """JSON-able result for the tensor."""


class MaskSink(Protocol):
    """Receives packed change bits (``|Δ| > tol``, bit order little) per chunk, from worker threads."""

    def write(self, pair: Pair, start: int, packed: np.ndarray) -> None:
        """Store the packed bits of elements ``[start, start + 8 * len(packed))`` of ``pair``."""


@dataclass
class PassOptions:
    """How the pass runs."""

    tolerances: list[float]
    semantics: str = "exact"
    jobs: int | None = None  #: workers; None = number of CPUs (at most 8)
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS
    mask_tolerance: float | None = None  #: tolerance whose change bits go to the mask sink
    progress: bool = False
    consumers: list[ChunkConsumer] = field(default_factory=list)
    #: called with each finished tensor's stats (e.g. to checkpoint a resumable run)
    on_tensor_done: Callable[[TensorStats], None] | None = None


class Thresholds:
    """Sorted thresholds per dtype for the chosen semantics, and the map back to the user's order."""

    def __init__(self, tolerances: list[float], semantics: str, mask_tolerance: float | None) -> None:
        if semantics not in SEMANTICS:
            raise ValueError(f"semantics must be one of {SEMANTICS}")
        self.semantics = semantics
        self.order = sorted(range(len(tolerances)), key=lambda i: tolerances[i])
        self.sorted = [tolerances[i] for i in self.order]
        self.mask_k = 0
        if mask_tolerance is not None:
            self.mask_k = min(range(len(self.sorted)), key=lambda i: abs(self.sorted[i] - mask_tolerance))
        self._cache: dict[str, np.ndarray] = {}

    def for_dtype(self, dtype: DType) -> np.ndarray:
        """Thresholds on ``|Δ|`` for ``dtype``, ascending (reference semantics rounds them per dtype)."""
        arr = self._cache.get(dtype.code)
        if arr is None:
            if self.semantics == "reference":
                arr = np.array([reference_threshold(t, dtype) for t in self.sorted], dtype=np.float64)
            else:
                arr = np.array(self.sorted, dtype=np.float64)
            self._cache[dtype.code] = arr
        return arr

    def unsort(self, sorted_counts: np.ndarray) -> list[int]:
        """Per-threshold counts back in the user's tolerance order."""
        out = [0] * len(self.order)
        for j, i in enumerate(self.order):
            out[i] = int(sorted_counts[j])
        return out


_EMPTY_MASK = np.zeros(0, dtype=np.uint8)


def count_pair_chunk(
    pair: Pair, a: np.ndarray, b: np.ndarray, th: Thresholds, want_mask: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Counters ``[unchanged_k..., identical, nonfinite_base, nonfinite_target]`` of one chunk."""
    k = len(th.sorted)
    out = np.zeros(k + 3, dtype=np.int64)
    n = a.shape[0]
    mask = np.empty((n + 7) // 8, dtype=np.uint8) if want_mask else _EMPTY_MASK
    bd, td = pair.base.dtype, pair.target.dtype
    ref = th.semantics == "reference"
    if pair.same_dtype and bd.is_float:
        thr = th.for_dtype(bd)
        count_chunk(a, b, bd, thr, ref, out, mask, th.mask_k)
    elif pair.same_dtype:
        same = a == b
        ident = int(np.count_nonzero(same))
        out[:k] = ident
        out[k] = ident
        if want_mask:
            mask[:] = np.packbits(~same, bitorder="little")
    else:
        av, bv = decode(a, bd), decode(b, td)
        if ref:
            d = np.abs(bv.astype(np.float32) - av.astype(np.float32)).astype(np.float64)
            thr = np.array([float(np.float32(t)) for t in th.sorted])
        else:
            d = np.abs(bv - av)
            thr = np.array(th.sorted)
        same = (av == bv) | (np.isnan(av) & np.isnan(bv))
        for j in range(k):
            out[j] = int(np.count_nonzero((d <= thr[j]) | same))
        out[k] = int(np.count_nonzero(same))
        out[k + 1] = int(np.count_nonzero(~np.isfinite(av)))
        out[k + 2] = int(np.count_nonzero(~np.isfinite(bv)))
        if want_mask:
            mask[:] = np.packbits(~((d <= thr[th.mask_k]) | same), bitorder="little")
    return out, (mask if want_mask else None)


#: elements per read in worker processes when the caller kept the default (larger maps cost less per byte)
PROCESS_CHUNK_ELEMENTS = 1 << 22


class PairCounter:
    """The compare kernel as an engine consumer: per chunk ``(counters, mask pieces)``.

    Mask pieces (``[(start, packed bits)]``) are written to the sink when merged on the driver, so a
    thread pass holds no mask bits beyond the chunks in flight; worker processes collect a task's pieces
    (:meth:`fold`) and send them with their counters.
    """

    def __init__(self, th: Thresholds, sink: MaskSink | None) -> None:
        self.th = th
        self.sink = sink
        self.want_mask = sink is not None

    def __getstate__(self) -> dict[str, Any]:
        return {"th": self.th, "sink": None, "want_mask": self.want_mask}  # the sink stays on the driver

    def warm(self, rows: Sequence[Row]) -> None:
        """Load the compiled kernel for every float dtype of the pass (forked workers inherit it)."""
        seen = set()
        for row in rows:
            pair: Pair = row.payload
            dt = pair.base.dtype
            if pair.same_dtype and dt.is_float and dt.code not in seen:
                seen.add(dt.code)
                z = np.zeros(8, dtype=dt.bits_dtype)
                count_pair_chunk(pair, z, z, self.th, self.want_mask)

    def chunk(
        self, row: Row, start: int, count: int, arrays: Sequence[np.ndarray]
    ) -> tuple[np.ndarray, list[Any]]:
        """Counters and mask bits of one chunk."""
        pair: Pair = row.payload
        a, b = arrays
        out, mask = count_pair_chunk(pair, a, b, self.th, self.want_mask)
        pieces: list[Any] = []
        if mask is not None:
            extra = pair.numel - pair.compare_numel
            if extra > 0 and start + count == pair.compare_numel:
                # rows only the target has are changed: append their bits to the last shared chunk
                bits = np.unpackbits(mask, count=count, bitorder="little").astype(bool)
                mask = np.packbits(np.concatenate([bits, np.ones(extra, dtype=bool)]), bitorder="little")
            if mask.size:
                pieces.append((start, mask))
        return out, pieces

    def fold(self, row: Row, state: Any, partial: Any) -> Any:
        """Worker side: add counters, collect mask pieces."""
        if state is None:
            return partial[0].copy(), list(partial[1])
        return state[0] + partial[0], state[1] + partial[1]

    def merge(self, row: Row, state: Any, partial: Any) -> Any:
        """Driver side: add counters, write mask pieces to the sink."""
        counts, pieces = partial
        if self.sink is not None:
            for start, packed in pieces:
                self.sink.write(row.payload, start, packed)
        return counts.copy() if state is None else state + counts

    def finish(self, row: Row, state: Any) -> np.ndarray:
        """The row's counters."""
        return state


class PairConsumer:
    """A :class:`ChunkConsumer` (which speaks pairs) as an engine consumer (which speaks rows)."""

    def __init__(self, inner: ChunkConsumer) -> None:
        self.inner = inner

    def chunk(self, row: Row, start: int, count: int, arrays: Sequence[np.ndarray]) -> Any:
        """The inner consumer's partial."""
        return self.inner.chunk(row.payload, start, arrays[0], arrays[1])

    def merge(self, row: Row, state: Any, partial: Any) -> Any:
        """The inner consumer's merge."""
        return self.inner.merge(row.payload, state, partial)

    def finish(self, row: Row, state: Any) -> Any:
        """The inner consumer's finish."""
        return self.inner.finish(row.payload, state)


def pair_rows(pairs: Sequence[Pair]) -> list[Row]:
    """The rows of a compare pass: base and target of each pair, over the compared elements."""
    return [Row(p.index, p.name, (p.base, p.target), p.compare_numel, p) for p in pairs]


def tensor_stats(pair: Pair, th: Thresholds, out: np.ndarray) -> TensorStats:
    """A pair's :class:`TensorStats` from its merged counters."""
    k = len(th.sorted)
    counts = Counts(
        numel=pair.numel,
        identical=int(out[k]),
        unchanged=th.unsort(out[:k]),
        nonfinite_base=int(out[k + 1]),
        nonfinite_target=int(out[k + 2]),
    )
    return TensorStats(
        name=pair.name,
        shape=list(pair.target.shape),
        dtype=pair.target.dtype.code,
        layer=pair.layer,
        kind=pair.kind,
        counts=counts,
        base_shape=list(pair.base.shape) if pair.base.shape != pair.target.shape else None,
        base_dtype=pair.base.dtype.code if not pair.same_dtype else None,
        compared=pair.compare_numel,
    )


def run_pass(
    plan: Plan,
    opts: PassOptions,
    mask_sink: MaskSink | None = None,
    pairs: list[Pair] | None = None,
    executor: Executor | None = None,
) -> list[TensorStats]:
    """Compare every pair of ``plan`` (or the given subset) on ``executor`` (default: ``opts.jobs``
    threads); return per-tensor stats in the order of the pairs."""
    from ..engine.executors.local import ThreadExecutor

    th = Thresholds(opts.tolerances, opts.semantics, opts.mask_tolerance)
    todo = plan.pairs if pairs is None else pairs
    consumers: list[Any] = [PairCounter(th, mask_sink), *(PairConsumer(c) for c in opts.consumers)]
    done: dict[int, TensorStats] = {}

    def row_done(row: Row, results: list[Any]) -> None:
        st = tensor_stats(row.payload, th, results[0])
        for c, r in zip(opts.consumers, results[1:]):
            st.extra[c.key] = r
        done[row.index] = st
        if opts.on_tensor_done is not None:
            opts.on_tensor_done(st)

    job = Job(pair_rows(todo), consumers, opts.chunk_elements, "compare", opts.progress, row_done,
              PROCESS_CHUNK_ELEMENTS if opts.chunk_elements == DEFAULT_CHUNK_ELEMENTS else None)  # fmt: skip
    (executor or ThreadExecutor(opts.jobs or default_jobs())).run(job)
    return [done[p.index] for p in todo]
