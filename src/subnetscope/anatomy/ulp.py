"""Change size against the resolution of the stored dtype, computed in the same streaming pass as compare.

Per tensor (:class:`ULPHistograms`, a :class:`~subnetscope.measures.compare.ChunkConsumer`):

- ``hist``: the ULP distance between base and target, binned ``0, 1, 2, 3-4, 5-16, 17-256, >256`` plus
  ``nonfinite`` (a changed pair with NaN or Inf on a side). The ULP distance is the number of
  representable values stepped from the base value to the target value (:func:`ulp_distance`): for two
  finite values of the same sign it is the difference of their integer bit codes, across zero the two
  magnitudes' codes add (``+0`` and ``-0`` are one value: distance 0), subnormals are ordinary codes.
  Inside one binade it equals ``|Δ| / ulp(base)``.
- ``delta_hist``: the exact ``|Δ|`` (float64, as ``compare --semantics exact``) in fixed log bins: powers of
  two from 2^-40 to 2^8 plus the pass's tolerances (:func:`delta_edges`). Layout ``[zero, (0, e0],
  (e0, e1], ..., (e_last, inf), nonfinite]``. :func:`unchanged_at` answers "how many unchanged at tol?"
  from it afterwards, exactly when ``tol`` is an edge, as a (low, high) bracket otherwise.
- ``below_ulp``: per tolerance, the bit-identical weights whose nearest representable neighbour (up or
  down) is farther than the tolerance: "unchanged" means "identical" for them, they could not have moved
  by less than the tolerance.
- ``step_lost`` (only with a step size ``s``): weights ``w`` for which ``w + s`` and ``w - s`` both round
  back to ``w`` in the stored dtype (round to nearest, ties to even), i.e. an update of size ``s`` vanishes.

Same-dtype float pairs get everything; a pair whose dtype changed gets ``delta_hist`` only (values decoded
on both sides); integer tensors get nothing (their "unchanged" is "identical" at every tolerance).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from ..dtypes import DType, decode, decode_table
from ..kernels.ulp import (
    ULP_BIN_LABELS,
    add_delta_bins,
    edge_index,
    nonfinite_mask,
    ulp_bin,
    ulp_distance,
    ulp_hist_chunk,
)
from ..plan import Pair
from .ulp_report import (
    REPORT_KEY,
    MissingAnatomyError,
    sparsity_at,
    summarize,
    unchanged_at,
    unchanged_bounds,
)

__all__ = [
    "DEFAULT_DELTA_EDGES",
    "ULP_BIN_LABELS",
    "MissingAnatomyError",
    "ULPHistograms",
    "attach",
    "compare_ulp",
    "delta_edges",
    "nonfinite_mask",
    "spacings",
    "sparsity_at",
    "step_lost",
    "summarize",
    "ulp_bin",
    "ulp_distance",
    "unchanged_at",
    "unchanged_bounds",
]

#: fixed edges of the |Δ| histogram: powers of two from 2^-40 to 2^8
DEFAULT_DELTA_EDGES: tuple[float, ...] = tuple(2.0**e for e in range(-40, 9))


def delta_edges(tolerances: Sequence[float] = ()) -> list[float]:
    """Edges of the |Δ| histogram: :data:`DEFAULT_DELTA_EDGES` plus every positive finite tolerance."""
    extra = [float(t) for t in tolerances if t > 0 and math.isfinite(t)]
    return sorted(set(DEFAULT_DELTA_EDGES) | set(extra))


@cache
def _spacing_tables(code: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every magnitude code of an 8/16-bit float: (up spacing, down spacing, value); NaN if not finite."""
    table = decode_table(code)
    half = table.size // 2
    vals = table[:half].astype(np.float64)
    finite = np.isfinite(vals)
    up = np.full(half, np.nan)
    down = np.full(half, np.nan)
    nxt_ok = finite[:-1] & finite[1:]
    up[:-1][nxt_ok] = vals[1:][nxt_ok] - vals[:-1][nxt_ok]
    down[1:][nxt_ok] = vals[1:][nxt_ok] - vals[:-1][nxt_ok]
    down[0] = up[0]  # stepping away from zero either way reaches the smallest subnormal
    top = np.flatnonzero(finite)[-1]  # largest finite magnitude: no finite value above
    up[top] = down[top]
    for arr in (up, down, vals):
        arr.setflags(write=False)
    return up, down, vals


def spacings(bits: np.ndarray, dtype: DType) -> tuple[np.ndarray, np.ndarray]:
    """Distance from each value's magnitude to the next larger and the next smaller representable
    magnitude (float64; at zero both are the smallest subnormal; NaN for NaN/Inf)."""
    if dtype.itemsize <= 2:
        up_t, down_t, _ = _spacing_tables(dtype.code)
        idx = (bits & bits.dtype.type((1 << (8 * dtype.itemsize - 1)) - 1)).astype(np.intp)
        return up_t[idx], down_t[idx]
    ftype = np.float32 if dtype.itemsize == 4 else np.float64
    v = np.abs(bits.view(ftype))
    with np.errstate(invalid="ignore", over="ignore"):
        hi = np.nextafter(v, ftype(np.inf))
        lo = np.nextafter(v, ftype(0))
        up = hi.astype(np.float64) - v.astype(np.float64)
        down = v.astype(np.float64) - lo.astype(np.float64)
    zero = v == 0
    down[zero] = up[zero]
    top = np.isinf(hi) & np.isfinite(v)
    up[top] = down[top]
    bad = ~np.isfinite(v)
    up[bad] = np.nan
    down[bad] = np.nan
    return up, down


def _lost(up: np.ndarray, down: np.ndarray, even: np.ndarray, step: float) -> np.ndarray:
    """A step of ``step`` rounds back to the value both upwards and downwards (ties go to the even code)."""
    with np.errstate(invalid="ignore"):
        lost_up = (step < up / 2) | ((step == up / 2) & even)
        lost_down = (step < down / 2) | ((step == down / 2) & even)
    out: np.ndarray = lost_up & lost_down
    return out


def step_lost(bits: np.ndarray, dtype: DType, step: float) -> np.ndarray:
    """True where ``w + step`` and ``w - step`` both round back to ``w`` (round to nearest even)."""
    up, down = spacings(bits, dtype)
    even = (bits & bits.dtype.type(1)) == 0
    return _lost(up, down, even, float(step))


def _min_spacing(up: np.ndarray, down: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.fmin(up, down)
    return out


@dataclass
class _Partial:
    """Mergeable per-chunk (and per-tensor) state."""

    ulp: np.ndarray | None  #: 8 counts
    delta: np.ndarray  #: E + 3 counts
    mag_same: np.ndarray | None = None  #: 8/16-bit: histogram of magnitude codes of identical elements
    mag_all: np.ndarray | None = None  #: 8/16-bit with a step size: histogram of all base magnitude codes
    below: np.ndarray | None = None  #: wider dtypes: counts per tolerance
    lost: int = 0  #: wider dtypes: step_lost count

    def add(self, o: _Partial) -> None:
        if self.ulp is not None and o.ulp is not None:
            self.ulp += o.ulp
        self.delta += o.delta
        for name in ("mag_same", "mag_all", "below"):
            mine, theirs = getattr(self, name), getattr(o, name)
            if mine is not None and theirs is not None:
                mine += theirs
        self.lost += o.lost


class ULPHistograms:
    """The :class:`~subnetscope.measures.compare.ChunkConsumer` that computes the ULP and |Δ| histograms.

    Pass it to :func:`subnetscope.compare` (``consumers=[h]``), then :func:`attach` it to the report so the
    report carries the bin edges; or use :func:`compare_ulp`, which does both.
    """

    key = REPORT_KEY

    def __init__(
        self, tolerances: Sequence[float], step_size: float | None = None, backend: str | None = None
    ) -> None:
        from .. import validate

        #: the kernel backend (None: the fastest, see :func:`subnetscope.kernels.registry.pick_backend`)
        self.backend = backend
        self.tolerances = validate.tolerances(tolerances)
        self.step_size = None if step_size is None else validate.positive_real(step_size, "step_size")
        self.edges = np.array(delta_edges(self.tolerances), dtype=np.float64)
        self._tol = np.array(self.tolerances, dtype=np.float64)
        self._edge_index: tuple[np.ndarray, np.ndarray, int, int] | None = None

    # -- per chunk (worker threads) -----------------------------------------------------------------------
    def chunk(
        self, pair: Pair, start: int, base_bits: np.ndarray, target_bits: np.ndarray
    ) -> _Partial | None:
        """Histograms of one chunk (a small partial result)."""
        bd, td = pair.base.dtype, pair.target.dtype
        if not (bd.is_float and td.is_float):
            return None
        if not pair.same_dtype:
            av, bv = decode(base_bits, bd), decode(target_bits, td)
            with np.errstate(invalid="ignore"):
                same = (av == bv) | (np.isnan(av) & np.isnan(bv))
                d = np.abs(bv[~same] - av[~same])
            delta = np.zeros(self.edges.size + 3, dtype=np.int64)
            add_delta_bins(d, self.edges, int(np.count_nonzero(same)), delta)
            return _Partial(None, delta)
        return self._same_dtype_chunk(bd, base_bits, target_bits)

    def _same_dtype_chunk(self, bd: DType, a: np.ndarray, b: np.ndarray) -> _Partial:
        if self._edge_index is None:
            self._edge_index = edge_index(self.edges)
        small = bd.itemsize <= 2
        nmag = 1 << (8 * bd.itemsize - 1)
        ulp_out = np.zeros(len(ULP_BIN_LABELS), dtype=np.int64)
        part = _Partial(ulp_out, np.zeros(self.edges.size + 3, dtype=np.int64))
        mag_all = np.zeros(nmag, dtype=np.int64) if small else None
        mag_changed = np.zeros(nmag, dtype=np.int64) if small else None
        ulp_hist_chunk(a, b, bd, decode_table(bd.code) if small else None, self._edge_index, ulp_out,
                       part.delta, mag_all, mag_changed, self.backend)  # fmt: skip
        if mag_all is not None and mag_changed is not None:
            part.mag_same = mag_all - mag_changed
            if self.step_size is not None:
                part.mag_all = mag_all
        else:
            same_bits = a[a == b]
            up, down = spacings(same_bits, bd)
            ms = _min_spacing(up, down)
            with np.errstate(invalid="ignore"):
                part.below = np.array([np.count_nonzero(ms > t) for t in self._tol], dtype=np.int64)
            if self.step_size is not None:
                part.lost = int(np.count_nonzero(step_lost(a, bd, self.step_size)))
        return part

    # -- main thread ----------------------------------------------------------------------------------------
    def merge(self, pair: Pair, state: _Partial | None, partial: _Partial | None) -> _Partial | None:
        """Fold one chunk's partial into the tensor's state."""
        if partial is None:
            return state
        if state is None:
            return partial
        state.add(partial)
        return state

    def finish(self, pair: Pair, state: _Partial | None) -> dict[str, Any] | None:
        """The tensor's JSON entry (``None`` for integer tensors)."""
        if state is None:
            if pair.base.dtype.is_float and pair.target.dtype.is_float:
                # an empty tensor: every count zero
                state = _Partial(
                    np.zeros(len(ULP_BIN_LABELS), dtype=np.int64) if pair.same_dtype else None,
                    np.zeros(self.edges.size + 3, dtype=np.int64),
                )
            else:
                return None
        out: dict[str, Any] = {
            "hist": None if state.ulp is None else [int(x) for x in state.ulp],
            "delta_hist": [int(x) for x in state.delta],
            "below_ulp": None,
        }
        bd = pair.base.dtype
        if state.ulp is None:
            return out
        if bd.itemsize <= 2:
            up_t, down_t, _ = _spacing_tables(bd.code)
            ms = _min_spacing(up_t, down_t)
            h = state.mag_same if state.mag_same is not None else np.zeros(ms.size, dtype=np.int64)
            with np.errstate(invalid="ignore"):
                out["below_ulp"] = [int(h[ms > t].sum()) for t in self._tol]
            if self.step_size is not None:
                codes = np.arange(ms.size, dtype=np.uint64)
                lost = _lost(up_t, down_t, (codes & np.uint64(1)) == 0, self.step_size)
                h_all = state.mag_all if state.mag_all is not None else np.zeros(ms.size, dtype=np.int64)
                out["step_lost"] = int(h_all[lost].sum())
        else:
            below = state.below if state.below is not None else np.zeros(self._tol.size, dtype=np.int64)
            out["below_ulp"] = [int(x) for x in below]
            if self.step_size is not None:
                out["step_lost"] = state.lost
        return out

    def describe(self) -> dict[str, Any]:
        """The report-level block: bin labels, |Δ| edges, tolerances, step size."""
        return {
            "ulp_bins": list(ULP_BIN_LABELS),
            "delta_edges": [float(e) for e in self.edges],
            "delta_layout": "[zero, (0, e0], (e0, e1], ..., (e_last, inf), nonfinite]",
            "tolerances": list(self.tolerances),
            "step_size": self.step_size,
        }


def attach(report: Any, consumer: ULPHistograms) -> None:
    """Record the consumer's bins and edges in ``report.extra`` (so the JSON can be read on its own)."""
    report.extra[REPORT_KEY] = consumer.describe()


def compare_ulp(
    base: Any,
    target: Any,
    tolerances: Sequence[float] | None = None,
    step_size: float | None = None,
    **kw: Any,
) -> Any:
    """:func:`subnetscope.compare` with :class:`ULPHistograms` in the same pass; returns the Report."""
    from ..comparison import DEFAULT_TOLERANCES, check_tolerances, compare

    tols = check_tolerances(DEFAULT_TOLERANCES if tolerances is None else tolerances)
    h = ULPHistograms(tols, step_size)
    report = compare(base, target, tols, consumers=[*kw.pop("consumers", ()), h], **kw)
    attach(report, h)
    return report
