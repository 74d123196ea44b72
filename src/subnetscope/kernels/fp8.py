"""FP8 weights with block scales compared by dequantized value: the per-chunk counting kernel.

One chunk holds the FP8 codes of elements ``[start, start + n)`` of a ``[rows, cols]`` weight whose scales
form a grid of ``block``-sized blocks; :func:`count_dequant` adds the counters ``[unchanged_k...,
identical, nonfinite_base, nonfinite_target]`` of the dequantized values (the arithmetic is described in
:mod:`subnetscope.fp8`). C (:func:`.native.fp8_dequant`), numba (:func:`_dq_nb`: walk the chunk's rows and
column blocks, one scale each) and numpy (:func:`count_dequant_np`, the reference) agree exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..dtypes import decode_table, decode_table32
from . import native
from .jit import LazyJit
from .registry import pick_backend
from .thresholds import count_by_fours


def _bf16_round(f: np.ndarray) -> np.ndarray:
    """float32 → bf16 bits (round to nearest even; NaN stays NaN), as uint32."""
    u = f.view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint32)
    nan = np.isnan(f)
    r[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint32)
    return r


def count_dequant_np(
    a: np.ndarray, b: np.ndarray, code: str, sa: np.ndarray, sb: np.ndarray, start: int,
    cols: int, block: tuple[int, int], thr: np.ndarray, ref: bool, out: np.ndarray,
) -> None:  # fmt: skip
    """Numpy version of the dequantized comparison (same arithmetic as the numba kernel)."""
    n = a.shape[0]
    k = thr.shape[0]
    nbc = -(-cols // block[1])
    idx = np.arange(start, start + n, dtype=np.int64)
    r = idx // cols
    blk = (r // block[0]) * nbc + (idx - r * cols) // block[1]
    lut = decode_table(code)
    with np.errstate(invalid="ignore", over="ignore"):
        if ref:
            ha = _bf16_round(lut[a].astype(np.float32) * sa.astype(np.float32)[blk])
            hb = _bf16_round(lut[b].astype(np.float32) * sb.astype(np.float32)[blk])
            fa = (ha << 16).view(np.float32)
            fb = (hb << 16).view(np.float32)
            same = ha == hb
            d = np.abs(fb - fa).astype(np.float64)
            nfa = (ha & 0x7F80) == 0x7F80
            nfb = (hb & 0x7F80) == 0x7F80
        else:
            va = lut[a] * sa[blk]
            vb = lut[b] * sb[blk]
            same = (va == vb) | (np.isnan(va) & np.isnan(vb))
            d = np.abs(vb - va)
            nfa, nfb = ~np.isfinite(va), ~np.isfinite(vb)
    for j in range(k):
        out[j] += int(np.count_nonzero(same | (d <= thr[j])))
    out[k] += int(np.count_nonzero(same))
    out[k + 1] += int(np.count_nonzero(nfa))
    out[k + 2] += int(np.count_nonzero(nfb))


def _seg_exact_nb(a, b, lut, i0, i1, s_a, s_b, t0, t1, t2, t3):  # type: ignore[no-untyped-def]  # pragma: no cover
    c0 = c1 = c2 = c3 = ident = nfa = nfb = 0
    for i in range(i0, i1):
        va = lut[a[i]] * s_a
        vb = lut[b[i]] * s_b
        same = (va == vb) | ((va != va) & (vb != vb))
        d = abs(vb - va)
        d = 0.0 if same else d
        ident += same
        nfa += (va - va) != 0.0  # NaN or Inf
        nfb += (vb - vb) != 0.0
        c0 += d <= t0
        c1 += d <= t1
        c2 += d <= t2
        c3 += d <= t3
    return c0, c1, c2, c3, ident, nfa, nfb


def _bf16_nb(u):  # type: ignore[no-untyped-def]  # pragma: no cover - jitted
    rne = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    nan = (u >> np.uint32(16)) | np.uint32(0x40)
    return nan if (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000) else rne


def _seg_ref_nb(a, b, lut32, i0, i1, f_a, f_b, t0, t1, t2, t3):  # type: ignore[no-untyped-def]  # pragma: no cover
    c0 = c1 = c2 = c3 = ident = nfa = nfb = 0
    for i in range(i0, i1):
        ha = _bf16_j(np.float32(lut32[a[i]] * f_a).view(np.uint32))
        hb = _bf16_j(np.float32(lut32[b[i]] * f_b).view(np.uint32))
        same = ha == hb
        fa = np.uint32(ha << np.uint32(16)).view(np.float32)
        fb = np.uint32(hb << np.uint32(16)).view(np.float32)
        d = np.float64(abs(fb - fa))
        d = 0.0 if same else d
        ident += same
        nfa += (ha & np.uint32(0x7F80)) == np.uint32(0x7F80)
        nfb += (hb & np.uint32(0x7F80)) == np.uint32(0x7F80)
        c0 += d <= t0
        c1 += d <= t1
        c2 += d <= t2
        c3 += d <= t3
    return c0, c1, c2, c3, ident, nfa, nfb


def _dq_nb(a, b, lut, lut32, sa, sb, start, cols, b0, b1, ref, t0, t1, t2, t3):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Counters of one chunk for four thresholds: walk its rows and column blocks (one scale each)."""
    n = a.shape[0]
    nbc = (cols + b1 - 1) // b1
    i = 0
    r = start // cols
    c = start - r * cols
    c0 = c1 = c2 = c3 = ident = nfa = nfb = 0
    while i < n:
        end_c = min(cols, c + (n - i))
        rb = (r // b0) * nbc
        while c < end_c:
            cb = c // b1
            seg = min(end_c, (cb + 1) * b1)
            j = i + seg - c
            if ref:
                res = _seg_ref_j(
                    a, b, lut32, i, j, np.float32(sa[rb + cb]), np.float32(sb[rb + cb]), t0, t1, t2, t3
                )
            else:
                res = _seg_exact_j(a, b, lut, i, j, sa[rb + cb], sb[rb + cb], t0, t1, t2, t3)
            c0 += res[0]
            c1 += res[1]
            c2 += res[2]
            c3 += res[3]
            ident += res[4]
            nfa += res[5]
            nfb += res[6]
            i = j
            c = seg
        r += 1
        c = 0
    return c0, c1, c2, c3, ident, nfa, nfb


#: the jitted helpers, bound by :data:`_jit` before the kernel that calls them is compiled
_bf16_j: Any = None
_seg_exact_j: Any = None
_seg_ref_j: Any = None

#: the numba kernel (compiled on first use)
_jit = LazyJit(
    globals(),
    kernels={"dq": _dq_nb},
    inline={"_bf16_j": _bf16_nb},
    helpers={"_seg_exact_j": _seg_exact_nb, "_seg_ref_j": _seg_ref_nb},
)


def count_dequant(
    a: np.ndarray, b: np.ndarray, code: str, sa: np.ndarray, sb: np.ndarray, start: int,
    cols: int, block: tuple[int, int], thr: np.ndarray, ref: bool, out: np.ndarray,
    backend: str | None = None,
) -> None:  # fmt: skip
    """Add one chunk's dequantized counters to ``out`` (``len(thr) + 3`` int64).

    ``a``, ``b``: FP8 codes of elements ``[start, start + len(a))`` of a ``[rows, cols]`` weight;
    ``sa``, ``sb``: the flattened scale grids (float64); ``thr``: thresholds in the caller's order (already
    converted with :func:`~subnetscope.dtypes.reference_threshold` for reference semantics); ``backend``:
    one of :data:`~.registry.BACKENDS` (default the fastest; all agree).
    """
    be = pick_backend(backend, kernel="fp8")
    if be == "numpy":
        count_dequant_np(a, b, code, sa, sb, start, cols, block, thr, ref, out)
        return
    if be == "native":

        def count4(t4: np.ndarray) -> np.ndarray:
            res = np.zeros(7, dtype=np.int64)
            native.fp8_dequant(a, b, code, sa, sb, start, cols, block, ref, t4, res)
            return res

        count_by_fours(thr, out, count4)
        return
    dq = _jit().dq
    lut, lut32 = decode_table(code), decode_table32(code)
    count_by_fours(
        thr, out, lambda t4: dq(a, b, lut, lut32, sa, sb, start, cols, block[0], block[1], ref, *t4.tolist())
    )
