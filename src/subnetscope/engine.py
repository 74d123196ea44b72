"""The streaming pass: every tensor pair, in chunks, on a pool of threads, into mergeable statistics.

Each worker thread owns two reusable read buffers; a chunk is read with ``preadv`` from both sides, handed
to the fused kernel (:mod:`subnetscope.kernels`, which releases the GIL), to the optional mask sink, and to
any extra :class:`ChunkConsumer` (ULP histograms, ...). Results are merged on the calling thread as they
complete, so the report does not depend on the number of threads or the order of completion. Peak memory
is ``jobs × 2 × chunk`` bytes plus the in-flight results, whatever the model size.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .dtypes import DType, decode, reference_threshold
from .io.reader import DEFAULT_CHUNK_ELEMENTS, ChunkReader, FileHandles
from .kernels.compare import count_chunk
from .plan import Pair, Plan
from .progress import progress_bar
from .stats import Counts, TensorStats

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
    jobs: int | None = None  #: threads; None = number of CPUs (at most 8)
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS
    mask_tolerance: float | None = None  #: tolerance whose change bits go to the mask sink
    progress: bool = False
    consumers: list[ChunkConsumer] = field(default_factory=list)
    #: called with each finished tensor's stats (e.g. to checkpoint a resumable run)
    on_tensor_done: Callable[[TensorStats], None] | None = None


def default_jobs() -> int:
    """Worker threads used when none is given."""
    return max(1, min(os.cpu_count() or 1, 8))


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


def _tasks(pairs: Iterable[Pair], chunk: int) -> Iterator[tuple[Pair, int, int]]:
    for p in pairs:
        n = p.compare_numel
        if n == 0:
            yield p, 0, 0
        for s in range(0, n, chunk):
            yield p, s, min(chunk, n - s)


def run_pass(
    plan: Plan, opts: PassOptions, mask_sink: MaskSink | None = None, pairs: list[Pair] | None = None
) -> list[TensorStats]:
    """Compare every pair of ``plan`` (or the given subset); return per-tensor stats in plan order."""
    th = Thresholds(opts.tolerances, opts.semantics, opts.mask_tolerance)
    chunk = max(8, opts.chunk_elements - opts.chunk_elements % 8)
    jobs = opts.jobs or default_jobs()
    todo = plan.pairs if pairs is None else pairs
    k = len(th.sorted)
    acc: dict[int, np.ndarray] = {p.index: np.zeros(k + 3, dtype=np.int64) for p in todo}
    states: dict[int, list[Any]] = {p.index: [None] * len(opts.consumers) for p in todo}
    remaining: dict[int, int] = {p.index: max(1, -(-p.compare_numel // chunk)) for p in todo}
    results: dict[int, TensorStats] = {}
    want_mask = mask_sink is not None
    local = threading.local()

    with FileHandles() as handles:

        def readers() -> tuple[ChunkReader, ChunkReader]:
            r = getattr(local, "r", None)
            if r is None:
                r = (ChunkReader(handles, chunk * 8), ChunkReader(handles, chunk * 8))
                local.r = r
            return r

        def work(pair: Pair, start: int, count: int) -> tuple[Pair, int, np.ndarray, list[Any]]:
            ra, rb = readers()
            a = ra.read(pair.base, start, count)
            b = rb.read(pair.target, start, count)
            out, mask = count_pair_chunk(pair, a, b, th, want_mask)
            if mask is not None and mask_sink is not None:
                extra = pair.numel - pair.compare_numel
                if extra > 0 and start + count == pair.compare_numel:
                    # rows only the target has are changed: append their bits to the last shared chunk
                    bits = np.unpackbits(mask, count=count, bitorder="little").astype(bool)
                    mask = np.packbits(np.concatenate([bits, np.ones(extra, dtype=bool)]), bitorder="little")
                if mask.size:
                    mask_sink.write(pair, start, mask)
            partials = [c.chunk(pair, start, a, b) for c in opts.consumers]
            return pair, count, out, partials

        def finish(pair: Pair) -> None:
            out = acc.pop(pair.index)
            counts = Counts(
                numel=pair.numel,
                identical=int(out[k]),
                unchanged=th.unsort(out[:k]),
                nonfinite_base=int(out[k + 1]),
                nonfinite_target=int(out[k + 2]),
            )
            st = TensorStats(
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
            for c, s in zip(opts.consumers, states.pop(pair.index)):
                st.extra[c.key] = c.finish(pair, s)
            results[pair.index] = st
            if opts.on_tensor_done is not None:
                opts.on_tensor_done(st)

        total_bytes = sum(p.compare_numel * (p.base.dtype.itemsize + p.target.dtype.itemsize) for p in todo)
        with progress_bar(total_bytes, "compare", enabled=opts.progress, unit="B") as bar:
            if jobs == 1:
                for pair, s, n in _tasks(todo, chunk):
                    _merge(work(pair, s, n), acc, states, remaining, opts, finish, bar)
            else:
                with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="subnetscope") as ex:
                    inflight: set[Future[Any]] = set()
                    try:
                        for pair, s, n in _tasks(todo, chunk):
                            inflight.add(ex.submit(work, pair, s, n))
                            if len(inflight) >= jobs * 4:
                                done, inflight = wait(inflight, return_when=FIRST_COMPLETED)
                                for f in done:
                                    _merge(f.result(), acc, states, remaining, opts, finish, bar)
                        for f in inflight:
                            _merge(f.result(), acc, states, remaining, opts, finish, bar)
                    except BaseException:
                        for f in inflight:
                            f.cancel()
                        raise
    return [results[p.index] for p in todo]


def _merge(
    res: tuple[Pair, int, np.ndarray, list[Any]],
    acc: dict[int, np.ndarray],
    states: dict[int, list[Any]],
    remaining: dict[int, int],
    opts: PassOptions,
    finish: Callable[[Pair], None],
    bar: Any,
) -> None:
    pair, count, out, partials = res
    acc[pair.index] += out
    st = states[pair.index]
    for i, (c, part) in enumerate(zip(opts.consumers, partials)):
        st[i] = c.merge(pair, st[i], part)
    bar.update(count * (pair.base.dtype.itemsize + pair.target.dtype.itemsize))
    remaining[pair.index] -= 1
    if remaining[pair.index] == 0:
        del remaining[pair.index]
        finish(pair)
