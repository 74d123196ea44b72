"""The fused per-chunk kernel of :mod:`subnetscope.series` (C, numba or numpy; numpy is the reference).

One call handles one chunk of one tensor across INIT (row 0), the checkpoints (rows 1..K) and the final
checkpoint (row ``fin``, one of them or an extra row): it adds the per-step counters (``out``, shape
``(K, NSTEP)``) and the split counters (``split``, shape ``(NSPLIT,)``). Only counts leave the chunk.

The compiled versions (C in :mod:`.native`, or numba) keep one ``uint16`` word of state per
element (bits: in the final subnetwork, bits differ in the final checkpoint, and the two running unions);
one branch-free, vectorised pass per
checkpoint updates it and returns that step's eight counts. The difference has the arithmetic of
:mod:`.compare` (bf16 decoded by a shift, fp16/fp8 by table, fp32/fp64 viewed; exact or reference
semantics), so "changed" means exactly what it means in ``compare``; the loop is specialised per decode kind
and semantics by inlining it at constant arguments. The numpy version decodes everything and serves as the
oracle, the fallback without a compiled backend, and the path for tensors whose dtype differs between
checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..dtypes import DType, decode, reference_threshold
from . import native
from .compare import decode_nb, decode_operands
from .jit import LazyJit
from .registry import pick_backend

#: per-step counters
CHG_INIT, IDENT_INIT, CHG_PREV, IDENT_PREV, OUT_FINAL, OUT_FINAL_STEP, EVER, EVER_BITS = range(8)
NSTEP = 8
#: split counters
NEVER, CANCELLED, FINAL, NEVER_BITS, CANCELLED_BITS, FINAL_BITS = range(6)
NSPLIT = 6

# ---------------------------------------------------------------------------------------------------------


def _loop_nb(  # pragma: no cover - jitted
    a: Any, p: Any, x: Any, av: Any, pv: Any, xv: Any, lut: Any, kind: int, ref: bool, thr: float, st: Any
) -> Any:
    """One checkpoint: ``a`` INIT, ``p`` the previous checkpoint, ``x`` this one (raw bits); updates the
    state and returns the eight per-step counts (int32 lanes: a chunk holds fewer than 2**31 elements)."""
    one = np.uint16(1)
    c0 = 0
    c1 = 0
    c2 = 0
    c3 = 0
    c4 = 0
    c5 = 0
    c6 = 0
    c7 = 0
    for i in range(a.shape[0]):
        ai = a[i]
        pi = p[i]
        xi = x[i]
        fa = _dec(ai, lut, av, i, kind)
        fp = _dec(pi, lut, pv, i, kind)
        fx = _dec(xi, lut, xv, i, kind)
        if ref:
            di = np.float64(abs(np.float32(fx) - np.float32(fa)))
            dp = np.float64(abs(np.float32(fx) - np.float32(fp)))
        else:
            di = abs(fx - fa)
            dp = abs(fx - fp)
        ii = np.uint16(ai == xi)
        ip = np.uint16(pi == xi)
        ci = np.uint16(not (di <= thr)) & (one - ii)
        cp = np.uint16(not (dp <= thr)) & (one - ip)
        s = st[i]
        nf = one - (s & one)
        s = s | (ci << 2) | ((one - ii) << 3)
        st[i] = s
        c0 += np.int32(ci)
        c1 += np.int32(ii)
        c2 += np.int32(cp)
        c3 += np.int32(ip)
        c4 += np.int32(ci & nf)
        c5 += np.int32(cp & nf)
        c6 += np.int32((s >> 2) & one)
        c7 += np.int32((s >> 3) & one)
    return c0, c1, c2, c3, c4, c5, c6, c7


def _step_nb(  # pragma: no cover - jitted
    a: Any, p: Any, x: Any, av: Any, pv: Any, xv: Any, lut: Any, kind: int, ref: bool, thr: float, st: Any
) -> Any:
    """:func:`_loop_nb` specialised (inlined at constant ``kind`` and ``ref``, so the loop is branch-free)."""
    if kind == 0:
        if ref:
            return _loop(a, p, x, av, pv, xv, lut, 0, True, thr, st)
        return _loop(a, p, x, av, pv, xv, lut, 0, False, thr, st)
    if kind == 1:
        if ref:
            return _loop(a, p, x, av, pv, xv, lut, 1, True, thr, st)
        return _loop(a, p, x, av, pv, xv, lut, 1, False, thr, st)
    if ref:
        return _loop(a, p, x, av, pv, xv, lut, 2, True, thr, st)
    return _loop(a, p, x, av, pv, xv, lut, 2, False, thr, st)


def _split_nb(st: Any) -> Any:  # pragma: no cover - jitted
    """Counts of: final, final bits, ever updated or final, ever touched or final bits."""
    f = 0
    fb = 0
    e = 0
    eb = 0
    for i in range(st.shape[0]):
        s = st[i]
        f += np.int32(s & 1)
        fb += np.int32((s >> 1) & 1)
        e += np.int32(((s >> 2) | s) & 1)
        eb += np.int32(((s >> 2) | s) >> 1 & 1)
    return f, fb, e, eb


#: the jitted helpers, bound by :data:`_jit` before the kernels that call them are compiled
_dec: Any = None
_loop: Any = None

#: the numba step and split kernels (compiled on first use)
_jit = LazyJit(
    globals(), kernels={"step": _step_nb, "split": _split_nb}, inline={"_dec": decode_nb, "_loop": _loop_nb}
)


def _thr(tol: float, semantics: str, dt: DType | None) -> float:
    """Threshold on ``|Δ|`` for one pair of rows (``dt`` None when the two dtypes differ)."""
    if semantics == "reference":
        return reference_threshold(tol, dt) if dt is not None else float(np.float32(tol))
    return float(tol)


def series_chunk_np(
    rows: Sequence[np.ndarray],
    dtypes: Sequence[DType],
    tol: float,
    semantics: str,
    nsteps: int,
    fin: int,
    out: np.ndarray,
    split: np.ndarray,
) -> None:
    """Add one chunk's counters to ``out`` (``(nsteps, NSTEP)``) and ``split`` (``(NSPLIT,)``), in numpy.

    ``rows[0]`` is INIT, ``rows[1..nsteps]`` the checkpoints, ``rows[fin]`` the final one (raw bits, each
    of its own dtype). Works for any mix of dtypes (values are decoded exactly); the reference the fused
    kernel is checked against.
    """
    vals = [decode(r, d) if d.is_float else None for r, d in zip(rows, dtypes)]

    def pair(r1: int, r2: int) -> tuple[np.ndarray, np.ndarray]:
        d1, d2 = dtypes[r1], dtypes[r2]
        v1, v2 = vals[r1], vals[r2]
        if d1 == d2:
            ident = rows[r1] == rows[r2]
        else:
            assert v1 is not None and v2 is not None
            ident = (v1 == v2) | (np.isnan(v1) & np.isnan(v2))
        if v1 is None or v2 is None:
            return ~ident, ident
        ref = semantics == "reference" and not (d1.code == d2.code == "F64")
        with np.errstate(invalid="ignore", over="ignore"):
            if ref:
                d = np.abs(v2.astype(np.float32) - v1.astype(np.float32)).astype(np.float64)
            else:
                d = np.abs(v2 - v1)
            d[ident] = 0.0
            close = d <= _thr(tol, semantics, d1 if d1 == d2 else None)
        return ~close, ident

    fchg, fident = pair(0, fin)
    fbit = ~fident
    ever = np.zeros(rows[0].shape[0], dtype=bool)
    everb = np.zeros(rows[0].shape[0], dtype=bool)
    for k in range(1, nsteps + 1):
        ci, ii = pair(0, k)
        cp, ip = pair(k - 1, k)
        ever |= ci
        everb |= ~ii
        out[k - 1, CHG_INIT] += np.count_nonzero(ci)
        out[k - 1, IDENT_INIT] += np.count_nonzero(ii)
        out[k - 1, CHG_PREV] += np.count_nonzero(cp)
        out[k - 1, IDENT_PREV] += np.count_nonzero(ip)
        out[k - 1, OUT_FINAL] += np.count_nonzero(ci & ~fchg)
        out[k - 1, OUT_FINAL_STEP] += np.count_nonzero(cp & ~fchg)
        out[k - 1, EVER] += np.count_nonzero(ever)
        out[k - 1, EVER_BITS] += np.count_nonzero(everb)
    ever |= fchg
    everb |= fbit
    split[NEVER] += np.count_nonzero(~ever)
    split[CANCELLED] += np.count_nonzero(ever & ~fchg)
    split[FINAL] += np.count_nonzero(fchg)
    split[NEVER_BITS] += np.count_nonzero(~everb)
    split[CANCELLED_BITS] += np.count_nonzero(everb & ~fbit)
    split[FINAL_BITS] += np.count_nonzero(fbit)


def scratch(n: int) -> np.ndarray:
    """A state array for :func:`series_chunk` on chunks of up to ``n`` elements."""
    return np.zeros(n, dtype=np.uint16)


def series_chunk(
    rows: Sequence[np.ndarray],
    dtype: DType,
    tol: float,
    semantics: str,
    nsteps: int,
    fin: int,
    out: np.ndarray,
    split: np.ndarray,
    state: np.ndarray | None = None,
    backend: str | None = None,
) -> None:
    """Like :func:`series_chunk_np` for rows (contiguous raw bits, same length) that all share one float
    ``dtype``, with the fastest kernel backend (:data:`~.registry.BACKENDS`) unless ``backend``
    is given; ``state`` is an optional :func:`scratch` array."""
    be = pick_backend(backend, dtype, "series")
    if be == "numpy":
        series_chunk_np(rows, [dtype] * len(rows), tol, semantics, nsteps, fin, out, split)
        return
    n = rows[0].shape[0]
    ref = semantics == "reference" and dtype.code != "F64"
    thr = _thr(tol, semantics, dtype)
    if be == "native":
        sp = np.zeros(4, dtype=np.int64)
        native.series_chunk(list(rows), dtype, ref, thr, nsteps, fin, out, sp)
        f, fb, e, eb = (int(v) for v in sp)
    else:
        if state is None or state.shape[0] < n:
            state = scratch(n)
        st = state[:n]
        st[:] = 0
        nb = _jit()
        step, count_split = nb.step, nb.split
        kind, lut, vals = decode_operands(dtype, list(rows))
        step(rows[0], rows[0], rows[fin], vals[0], vals[0], vals[fin], lut, kind, ref, thr, st)
        np.right_shift(st, 2, out=st)
        for k in range(1, nsteps + 1):
            out[k - 1] += step(
                rows[0], rows[k - 1], rows[k], vals[0], vals[k - 1], vals[k], lut, kind, ref, thr, st
            )
        f, fb, e, eb = count_split(st)
    split[NEVER] += n - e
    split[CANCELLED] += e - f
    split[FINAL] += f
    split[NEVER_BITS] += n - eb
    split[CANCELLED_BITS] += eb - fb
    split[FINAL_BITS] += fb
