"""The fused per-chunk kernel of the ULP / |Δ| histograms, for same-dtype float pairs (numba or numpy).

One pass over a chunk of raw bits adds to: the ULP-distance bins (:data:`ULP_BIN_LABELS`), the |Δ| bins
(binary search in the edges), and, for 8/16-bit dtypes, histograms of the base magnitude codes of all and of
the changed elements, from which :mod:`subnetscope.anatomy.ulp` derives the below-one-ULP and lost-step
counts. The numba kernel (``nogil``) visits only the changed elements in its second pass; the numpy version
(:func:`ulp_hist_np`) computes the same and is the reference. There is no C version: with the extension
built, the registry picks numba (tests check that both agree).
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

from ..dtypes import DType, decode
from .jit import LazyJit
from .registry import pick_backend

#: labels of the ULP-distance bins
ULP_BIN_LABELS: tuple[str, ...] = ("0", "1", "2", "3-4", "5-16", "17-256", ">256", "nonfinite")
#: upper (inclusive) ULP distance of each finite bin but the last
_ULP_UPPER = np.array([0, 1, 2, 4, 16, 256], dtype=np.uint64)


def _sign_mag(bits: np.ndarray, dtype: DType) -> tuple[np.ndarray, np.ndarray]:
    width = 8 * dtype.itemsize
    u = bits.astype(np.uint64, copy=False)
    sign = (u >> np.uint64(width - 1)).astype(bool)
    mag = u & np.uint64((1 << (width - 1)) - 1)
    return sign, mag


def nonfinite_mask(bits: np.ndarray, dtype: DType) -> np.ndarray:
    """True where the raw ``bits`` of float ``dtype`` encode NaN or Inf."""
    if dtype.nonfinite is None:
        return np.zeros(bits.shape, dtype=bool)
    m, v = dtype.nonfinite
    out: np.ndarray = (bits & bits.dtype.type(m)) == bits.dtype.type(v)
    return out


def ulp_distance(a_bits: np.ndarray, b_bits: np.ndarray, dtype: DType) -> np.ndarray:
    """Number of representable values of ``dtype`` stepped from ``a`` to ``b`` (uint64).

    Same sign: ``|code(a) - code(b)|``; opposite signs: ``mag(a) + mag(b)`` (``±0`` count as one value, so
    ``-0`` to ``+0`` is 0 and ``-tiny`` to ``+tiny`` is 2). Meaningless where either side is NaN/Inf: mask
    those with :func:`nonfinite_mask`.
    """
    sa, ma = _sign_mag(a_bits, dtype)
    sb, mb = _sign_mag(b_bits, dtype)
    same = sa == sb
    out: np.ndarray = np.where(same, np.maximum(ma, mb) - np.minimum(ma, mb), ma + mb)
    return out


def ulp_bin(dist: np.ndarray) -> np.ndarray:
    """Index into :data:`ULP_BIN_LABELS` (0..6) of finite ULP distances."""
    out: np.ndarray = np.searchsorted(_ULP_UPPER, dist, side="left")
    return out


def _ulp_hist_nb(a: Any, b: Any, av: Any, bv: Any, lut: Any, use_lut: Any, magmask: Any, signbit: Any,
                 nf_m: Any, nf_v: Any, edges: Any, start: Any, cmin: Any, cmax: Any, ulp_out: Any,
                 delta_out: Any, mag_all: Any, mag_changed: Any, want_mag: Any, idx: Any) -> None:  # fmt: skip  # pragma: no cover - jitted
    n = a.shape[0]
    # pass 1, branch-free: histogram of every base magnitude code, positions of the changed elements
    j = 0
    if want_mag:
        for i in range(n):
            x = a[i]
            mag_all[np.intp(x & magmask)] += 1
            idx[j] = i
            j += x != b[i]
    else:
        for i in range(n):
            idx[j] = i
            j += a[i] != b[i]
    # pass 2, changed elements only
    u0 = n - j  # identical
    u1 = 0
    u2 = 0
    u3 = 0
    u4 = 0
    u5 = 0
    u6 = 0
    unf = 0
    dzero = n - j
    ne = edges.shape[0]
    for t in range(j):
        i = idx[t]
        x = a[i]
        y = b[i]
        if want_mag:
            mag_changed[np.intp(x & magmask)] += 1
        if (x & nf_m) == nf_v or (y & nf_m) == nf_v:
            unf += 1
            continue
        mx = np.uint64(x & magmask)
        my = np.uint64(y & magmask)
        same_sign = (x & signbit) == (y & signbit)
        dist = (mx - my if mx > my else my - mx) if same_sign else mx + my
        u0 += dist == 0
        u1 += dist == 1
        u2 += dist == 2
        u3 += (dist > 2) & (dist <= 4)
        u4 += (dist > 4) & (dist <= 16)
        u5 += (dist > 16) & (dist <= 256)
        u6 += dist > 256
        if use_lut:
            d = abs(lut[y] - lut[x])
        else:
            d = abs(np.float64(bv[i]) - np.float64(av[i]))
        if d == 0.0:
            dzero += 1
            continue
        # first k with edges[k] >= d: start from the edges at or below the power of two under d
        bits = np.float64(d).view(np.uint64)
        c = np.int64(bits >> np.uint64(52)) - 1023 + np.int64((bits & np.uint64(0xFFFFFFFFFFFFF)) != 0)
        c = min(max(c, cmin), cmax)
        lo = start[c - cmin]
        while lo < ne and edges[lo] < d:
            lo += 1
        delta_out[1 + lo] += 1
    ulp_out[0] += u0
    ulp_out[1] += u1
    ulp_out[2] += u2
    ulp_out[3] += u3
    ulp_out[4] += u4
    ulp_out[5] += u5
    ulp_out[6] += u6
    ulp_out[7] += unf
    delta_out[0] += dzero
    delta_out[delta_out.shape[0] - 1] += unf


#: the numba kernel (compiled on first use)
_jit = LazyJit(globals(), kernels={"hist": _ulp_hist_nb})

_EMPTY_I64 = np.zeros(0, dtype=np.int64)
_EMPTY_F64 = np.zeros(0, dtype=np.float64)
_local = threading.local()


def _idx_buffer(n: int) -> np.ndarray:
    buf: np.ndarray | None = getattr(_local, "idx", None)
    if buf is None or buf.size < n:
        buf = np.empty(max(n, 1 << 20), dtype=np.int64)
        _local.idx = buf
    return buf


def _ceil_log2(x: float) -> int:
    m, e = math.frexp(x)  # x = m · 2^e, 0.5 <= m < 1
    return e - 1 if m == 0.5 else e


def edge_index(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    """``(edges, start, cmin, cmax)`` for the kernel's bin search: for ``c = ceil(log2 d)`` clamped to
    ``[cmin, cmax]``, ``start[c - cmin]`` is the number of edges ``<= 2^(c-1)`` (all of them below d)."""
    e = np.ascontiguousarray(edges, dtype=np.float64)
    if e.size == 0:
        return e, np.zeros(1, dtype=np.int64), 0, 0
    cmin, cmax = _ceil_log2(float(e[0])) - 1, _ceil_log2(float(e[-1])) + 1
    start = np.array([np.count_nonzero(e <= 2.0 ** (c - 1)) for c in range(cmin, cmax + 1)], dtype=np.int64)
    start[0] = 0  # d below every edge's octave: scan from the first edge
    return e, start, cmin, cmax


def add_delta_bins(d: np.ndarray, edges: np.ndarray, zero_extra: int, delta_out: np.ndarray) -> None:
    """Add the differences ``d`` (float64) to the |Δ| bins ``delta_out`` (``len(edges) + 3``: zero, one bin
    per edge ``(e_prev, e]``, above the last edge, non-finite), and ``zero_extra`` more zeros."""
    ne = edges.size
    finite = np.isfinite(d)
    delta_out[-1] += int(d.size - np.count_nonzero(finite))
    df = d[finite]
    pos = df[df > 0]
    delta_out[0] += zero_extra + (df.size - pos.size)
    if pos.size:
        delta_out[1 : ne + 2] += np.bincount(np.searchsorted(edges, pos, side="left"), minlength=ne + 1)


def ulp_hist_np(
    a: np.ndarray,
    b: np.ndarray,
    dtype: DType,
    edges: np.ndarray,
    ulp_out: np.ndarray,
    delta_out: np.ndarray,
    mag_all: np.ndarray | None,
    mag_changed: np.ndarray | None,
) -> None:
    """Numpy version of :func:`ulp_hist_chunk` (same arguments, ``edges`` the sorted |Δ| bin edges)."""
    idx = np.flatnonzero(a != b)
    n_same = a.size - idx.size
    ac, bc = a[idx], b[idx]
    nf = nonfinite_mask(ac, dtype) | nonfinite_mask(bc, dtype)
    fin = ~nf
    ulp_out[:7] += np.bincount(ulp_bin(ulp_distance(ac[fin], bc[fin], dtype)), minlength=7)
    ulp_out[0] += n_same
    ulp_out[7] += int(np.count_nonzero(nf))
    with np.errstate(invalid="ignore"):
        d = np.abs(decode(bc, dtype) - decode(ac, dtype))
    add_delta_bins(d, edges, n_same, delta_out)
    if mag_all is not None and mag_changed is not None:
        m = a.dtype.type(mag_all.size - 1)
        mag_all += np.bincount(a & m, minlength=mag_all.size)
        mag_changed += np.bincount(ac & m, minlength=mag_changed.size)


def ulp_hist_chunk(
    a: np.ndarray,
    b: np.ndarray,
    dtype: DType,
    lut: np.ndarray | None,
    index: tuple[np.ndarray, np.ndarray, int, int],
    ulp_out: np.ndarray,
    delta_out: np.ndarray,
    mag_all: np.ndarray | None,
    mag_changed: np.ndarray | None,
    backend: str | None = None,
) -> None:
    """Add one chunk of a same-dtype float pair to the histograms.

    ``lut``: float64 value of every code (8/16-bit dtypes); without it the bits are viewed as
    float32/float64. ``index``: from :func:`edge_index`; ``delta_out`` has ``len(edges) + 3`` bins.
    ``mag_all`` / ``mag_changed``: histograms (``2**(bits - 1)`` bins) of the base magnitude codes of all /
    of the changed elements, or both None. ``backend``: ``numba`` or ``numpy`` (default the fastest).
    """
    be = pick_backend(backend, dtype, "ulp")
    if be == "numpy":
        ulp_hist_np(a, b, dtype, index[0], ulp_out, delta_out, mag_all, mag_changed)
        return
    assert dtype.nonfinite is not None
    width = 8 * dtype.itemsize
    bt = a.dtype.type
    magmask = bt((1 << (width - 1)) - 1)
    signbit = bt(1 << (width - 1))
    nf_m, nf_v = bt(dtype.nonfinite[0]), bt(dtype.nonfinite[1])
    av: np.ndarray
    bv: np.ndarray
    if lut is None:
        fv = np.float32 if width == 32 else np.float64
        av, bv, table = a.view(fv), b.view(fv), _EMPTY_F64
    else:
        av = bv = _EMPTY_F64
        table = lut
    want = mag_all is not None and mag_changed is not None
    edges, start, cmin, cmax = index
    _jit().hist(a, b, av, bv, table, lut is not None, magmask, signbit, nf_m, nf_v, edges, start, cmin, cmax,
                ulp_out, delta_out, mag_all if want else _EMPTY_I64, mag_changed if want else _EMPTY_I64, want,
                _idx_buffer(a.size))  # fmt: skip
