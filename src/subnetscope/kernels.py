"""The fused per-chunk kernel: bit identity, every tolerance, non-finite counts and mask bits.

Given the raw bits of a base chunk ``a`` and a target chunk ``b`` of one float dtype, :func:`count_chunk`
adds to ``out``: per threshold ``k`` the number of elements with ``|b - a| <= thr[k]``, then the number of
bit-identical elements, of non-finite base values and of non-finite target values; with a non-empty
``mask_out`` it also writes the packed bits (little bit order) of ``|b - a| > thr[mask_k]``.

Why it is fast: a changed element can only be within a tolerance if the smaller of its two magnitudes is
tiny (one step of a float format grows with the magnitude). So a first, branch-free integer pass counts
identical and non-finite elements and the *candidates*: changed elements whose smaller magnitude code is
at most ``bound`` (:func:`candidate_bound`, chosen with a factor-2 margin). Only candidates, rare in real
checkpoints, are decoded to floats in a second pass; every other changed element is changed at every
tolerance. The loops are compiled with numba (``nogil``, so threads run in parallel); the same algorithm
runs in numpy when numba is missing or ``SUBNETSCOPE_NO_NUMBA=1``. Both are tested against a brute-force
oracle that decodes everything.

Semantics of the difference:
- exact: ``d = |float64(b) - float64(a)|``;
- reference: ``d = |float32(float32(b) - float32(a))|`` (torch's arithmetic for a delta in the stored
  dtype), compared with thresholds from :func:`subnetscope.dtypes.reference_threshold`.
"""

from __future__ import annotations

import math
import os

import numpy as np

from .dtypes import DType, decode_table

#: layout of ``out`` after the K per-threshold counts
IDENTICAL, NONFINITE_BASE, NONFINITE_TARGET = 0, 1, 2


def candidate_bound(dtype: DType, tmax: float) -> int:
    """Largest magnitude code ``c`` such that a changed pair whose smaller magnitude code exceeds ``c``
    is certainly farther apart than ``tmax`` (with a factor-2 margin)."""
    lim = 2.0 * tmax
    if dtype.itemsize <= 2:
        table = decode_table(dtype.code)
        half = 1 << (8 * dtype.itemsize - 1)
        pos = table[:half]
        c = 0
        for code in range(half - 1):
            v, nxt = pos[code], pos[code + 1]
            if not (math.isfinite(v) and math.isfinite(nxt)):
                break
            if v <= lim or (nxt - v) <= lim:
                c = code
        return c
    if lim <= 0:
        return 0
    mant = dtype.mantissa_bits
    bound = 2.0 ** (math.floor(math.log2(lim)) + mant + 1)
    if dtype.itemsize == 4:
        bound = min(bound, float(np.finfo(np.float32).max))
        return int(np.array([bound], dtype=np.float32).view(np.uint32)[0])
    return int(np.array([bound], dtype=np.float64).view(np.uint64)[0])


# ---------------------------------------------------------------------------------------------------------
# numba implementation


def _phase1_nb(a, b, nf_m, nf_v, mag, bound):  # pragma: no cover - jitted
    ident = 0
    nfa = 0
    nfb = 0
    cand = 0
    for i in range(a.shape[0]):
        x = a[i]
        y = b[i]
        eq = x == y
        ident += eq
        nfa += (x & nf_m) == nf_v
        nfb += (y & nf_m) == nf_v
        mx = x & mag
        my = y & mag
        mn = mx if mx < my else my
        cand += (not eq) & (mn <= bound)
    return ident, nfa, nfb, cand


def _pack_ne_nb(a, b, mask_out):  # pragma: no cover - jitted
    n = a.shape[0]
    full = n >> 3
    for j in range(full):
        i = j << 3
        byte = 0
        for t in range(8):
            byte |= np.uint8(a[i + t] != b[i + t]) << t
        mask_out[j] = byte
    if n & 7:
        byte = 0
        for t in range(n & 7):
            byte |= np.uint8(a[(full << 3) + t] != b[(full << 3) + t]) << t
        mask_out[full] = byte


def _phase2_nb(a, b, av, bv, lut, use_lut, thr, ref, mag, bound, out, mask_out, mask_k):  # pragma: no cover
    k = thr.shape[0]
    do_mask = mask_out.shape[0] > 0
    tm = thr[mask_k]
    for i in range(a.shape[0]):
        x = a[i]
        y = b[i]
        if x == y:
            continue
        mx = x & mag
        my = y & mag
        mn = mx if mx < my else my
        if mn > bound:
            continue
        if use_lut:
            if ref:
                d = np.float64(abs(np.float32(lut[y]) - np.float32(lut[x])))
            else:
                d = abs(lut[y] - lut[x])
        elif ref:
            d = np.float64(abs(np.float32(bv[i]) - np.float32(av[i])))
        else:
            d = abs(np.float64(bv[i]) - np.float64(av[i]))
        for j in range(k):
            if d <= thr[j]:
                out[j] += 1
        if do_mask and d <= tm:
            mask_out[i >> 3] &= ~np.uint8(1 << (i & 7))


_NB = None
if os.environ.get("SUBNETSCOPE_NO_NUMBA", "").strip() in ("", "0"):
    try:
        import numba

        _NB = (
            numba.njit(nogil=True, cache=True, boundscheck=False)(_phase1_nb),
            numba.njit(nogil=True, cache=True, boundscheck=False)(_pack_ne_nb),
            numba.njit(nogil=True, cache=True, boundscheck=False)(_phase2_nb),
        )
    except ImportError:  # pragma: no cover - numba is a dependency; this is the safety net
        _NB = None

USING_NUMBA = _NB is not None


# ---------------------------------------------------------------------------------------------------------
# numpy implementation (same algorithm)


def _phase1_np(a, b, nf_m, nf_v, mag, bound):
    ne = a != b
    mn = np.minimum(a & mag, b & mag)
    return (
        int(a.size - np.count_nonzero(ne)),
        int(np.count_nonzero((a & nf_m) == nf_v)),
        int(np.count_nonzero((b & nf_m) == nf_v)),
        int(np.count_nonzero(ne & (mn <= bound))),
    )


def _phase2_np(a, b, av, bv, lut, use_lut, thr, ref, mag, bound, out, mask_out, mask_k):
    idx = np.flatnonzero((a != b) & (np.minimum(a & mag, b & mag) <= bound))
    if use_lut:
        x, y = lut[a[idx]], lut[b[idx]]
    else:
        x, y = av[idx], bv[idx]
    if ref:
        d = np.abs(y.astype(np.float32) - x.astype(np.float32)).astype(np.float64)
    else:
        d = np.abs(y.astype(np.float64) - x.astype(np.float64))
    for j in range(thr.shape[0]):
        out[j] += int(np.count_nonzero(d <= thr[j]))
    if mask_out.shape[0]:
        keep = idx[d <= thr[mask_k]]
        np.bitwise_and.at(mask_out, keep >> 3, ~(np.uint8(1) << (keep & 7).astype(np.uint8)))


_EMPTY_F = np.zeros(0, dtype=np.float64)
_EMPTY_F32 = np.zeros(0, dtype=np.float32)


def count_chunk(
    a: np.ndarray,
    b: np.ndarray,
    dtype: DType,
    thr: np.ndarray,
    ref: bool,
    bound: int,
    out: np.ndarray,
    mask_out: np.ndarray,
    mask_k: int = 0,
    use_numba: bool | None = None,
) -> None:
    """Add one chunk's counters to ``out`` (see the module docstring); ``thr`` sorted ascending."""
    nb = USING_NUMBA if use_numba is None else (use_numba and USING_NUMBA)
    k = thr.shape[0]
    nf_m, nf_v = dtype.nonfinite or (0, 1)
    width = 8 * dtype.itemsize
    bt = a.dtype.type
    mag = bt((1 << (width - 1)) - 1)
    nf_m, nf_v, bnd = bt(nf_m), bt(nf_v), bt(bound)
    p1, pack, p2 = _NB if nb and _NB is not None else (_phase1_np, None, _phase2_np)
    ident, nfa, nfb, cand = p1(a, b, nf_m, nf_v, mag, bnd)
    if mask_out.shape[0]:
        if pack is not None:
            pack(a, b, mask_out)
        else:
            mask_out[:] = np.packbits(a != b, bitorder="little")
    if cand:
        use_lut = dtype.itemsize <= 2
        lut = decode_table(dtype.code) if use_lut else _EMPTY_F
        if use_lut:
            av = bv = _EMPTY_F32
        else:
            fv = np.float32 if dtype.itemsize == 4 else np.float64
            av, bv = a.view(fv), b.view(fv)
        p2(a, b, av, bv, lut, use_lut, thr, ref, mag, bnd, out, mask_out, mask_k)
    for j in range(k):
        out[j] += ident
    out[k + IDENTICAL] += ident
    out[k + NONFINITE_BASE] += nfa
    out[k + NONFINITE_TARGET] += nfb
