"""The counting loop of the magnitude bins (:mod:`subnetscope.magnitude_bins`), numba or numpy.

Per element of a chunk of raw float bits: its local bin from the exponent field ``e`` and mantissa ``m``
(0 for zero, 1 for a subnormal, ``e + 1`` otherwise), and whether each of two runs updated it (bit ``i`` of
the packed, little-order masks ``p1``, ``p2``); :func:`count_bins` adds, per local bin, the elements, those
updated by run 1, by run 2 and by both (rows 0-3 of ``hist``). No C version: the registry picks numba.
"""

from __future__ import annotations

import numpy as np

from .jit import LazyJit
from .registry import pick_backend


def local_bin_of(e: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Local bins of exponent fields ``e`` and mantissas ``m`` (int64)."""
    out: np.ndarray = np.where(e == 0, (m != 0).astype(np.int64), e.astype(np.int64) + 1)
    return out


def count_bins_np(
    bits: np.ndarray, p1: np.ndarray, p2: np.ndarray, mant: int, ebits: int, hist: np.ndarray
) -> None:
    """Numpy version of :func:`count_bins` (the reference)."""
    n = bits.shape[0]
    size = hist.shape[1]
    b = bits.astype(np.uint64)
    e = (b >> np.uint64(mant)) & np.uint64((1 << ebits) - 1)
    m = b & np.uint64((1 << mant) - 1)
    loc = local_bin_of(e, m)
    m1 = np.unpackbits(p1, count=n, bitorder="little").view(bool)
    m2 = np.unpackbits(p2, count=n, bitorder="little").view(bool)
    hist[0] += np.bincount(loc, minlength=size)
    hist[1] += np.bincount(loc[m1], minlength=size)
    hist[2] += np.bincount(loc[m2], minlength=size)
    hist[3] += np.bincount(loc[m1 & m2], minlength=size)


def _count_nb(  # pragma: no cover - jitted
    bits: np.ndarray, p1: np.ndarray, p2: np.ndarray, mant: int, ebits: int, hist: np.ndarray
) -> None:
    emask = (1 << ebits) - 1
    mmask = (1 << mant) - 1
    for i in range(bits.shape[0]):
        x = np.int64(bits[i])
        e = (x >> mant) & emask
        if e == 0:
            j = 1 if (x & mmask) != 0 else 0
        else:
            j = e + 1
        sh = i & 7
        b1 = (np.int64(p1[i >> 3]) >> sh) & 1
        b2 = (np.int64(p2[i >> 3]) >> sh) & 1
        hist[0, j] += 1
        hist[1, j] += b1
        hist[2, j] += b2
        hist[3, j] += b1 & b2


#: the numba counter (compiled on first use, i.e. with an overlap's --base)
_jit = LazyJit(globals(), kernels={"count": _count_nb})


def count_bins(
    bits: np.ndarray, p1: np.ndarray, p2: np.ndarray, mant: int, ebits: int, hist: np.ndarray,
    backend: str | None = None,
) -> None:  # fmt: skip
    """Add the local bins of ``bits`` (``mant`` mantissa and ``ebits`` exponent bits) and of their updated
    elements to ``hist`` (``(4, >= 2 + 2**ebits)`` int64); ``backend`` as :func:`.registry.pick_backend`."""
    if bits.shape[0] == 0:
        return
    if pick_backend(backend, kernel="magnitude") == "numba":
        _jit().count(bits, p1, p2, mant, ebits, hist)
    else:
        count_bins_np(bits, p1, p2, mant, ebits, hist)
