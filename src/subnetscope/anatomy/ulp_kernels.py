"""The fused per-chunk kernel of the ULP / |Δ| histograms (numba, ``nogil``), for same-dtype float pairs.

One pass over a chunk of raw bits adds to: the ULP-distance bins, the |Δ| bins (binary search in the
edges), and, for 8/16-bit dtypes, histograms of the magnitude codes of identical elements (and of all
elements, when a step size is asked) from which :mod:`subnetscope.anatomy.ulp` derives the below-one-ULP
and lost-step counts. The numpy implementation in :mod:`subnetscope.anatomy.ulp` computes the same and is
used when numba is missing or ``SUBNETSCOPE_NO_NUMBA=1``; tests check that both agree.
"""

from __future__ import annotations

import math
import os
import threading
from typing import Any

import numpy as np


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


def _compile() -> Any:
    if os.environ.get("SUBNETSCOPE_NO_NUMBA", "").strip() not in ("", "0"):
        return None
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency; this is the safety net
        return None
    return numba.njit(nogil=True, cache=True, boundscheck=False)(_ulp_hist_nb)


_NB: Any = _compile()

USING_NUMBA = _NB is not None

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


def ulp_hist_chunk(
    a: np.ndarray,
    b: np.ndarray,
    width: int,
    nonfinite: tuple[int, int],
    lut: np.ndarray | None,
    index: tuple[np.ndarray, np.ndarray, int, int],
    ulp_out: np.ndarray,
    delta_out: np.ndarray,
    mag_all: np.ndarray | None,
    mag_changed: np.ndarray | None,
) -> None:
    """Add one chunk to the histograms (numba). ``lut``: float64 value of every code (8/16-bit dtypes);
    without it the bits are viewed as float32/float64. ``index``: from :func:`edge_index`; ``delta_out``
    has ``len(edges) + 3`` bins. ``mag_all`` / ``mag_changed``: histograms of the base
    magnitude codes of all / of the changed elements, or both None."""
    bt = a.dtype.type
    magmask = bt((1 << (width - 1)) - 1)
    signbit = bt(1 << (width - 1))
    nf_m, nf_v = bt(nonfinite[0]), bt(nonfinite[1])
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
    _NB(a, b, av, bv, table, lut is not None, magmask, signbit, nf_m, nf_v, edges, start, cmin, cmax, ulp_out, delta_out,
        mag_all if want else _EMPTY_I64, mag_changed if want else _EMPTY_I64, want, _idx_buffer(a.size))  # fmt: skip
