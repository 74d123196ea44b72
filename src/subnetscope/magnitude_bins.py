"""Magnitude bins of base weights, for the magnitude-matched overlap baseline.

Whether a low-precision weight can change at all depends on its magnitude (one bf16 step is |w|/128 to
|w|/256), so two runs overlap above the uniform baseline for that reason alone. The magnitude-matched
baseline draws each run's updated set at random *within* bins of |w|, keeping each bin's count; this module
counts, per bin, the elements ``n_b``, those updated by run 1 and run 2, and those updated by both.

A weight's bin is the exponent of its storage float (its exponent bits, unbiased so that bf16, f16 and f32
bins mean the same magnitudes). Zeros, subnormals, non-finite values, non-float tensors and elements the
base does not have (rows added by the target) each get a bin of their own.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from .dtypes import DType
from .kernels.magnitude import count_bins, local_bin_of

#: special bins, then one bin per unbiased exponent in [EXP_MIN, EXP_MAX]
ZERO, SUBNORMAL, NONFINITE, NONFLOAT, NEW = 0, 1, 2, 3, 4
SPECIAL_LABELS = ("zero", "subnormal", "nonfinite", "nonfloat", "new")
EXP_MIN, EXP_MAX = -1022, 1023
FIRST_EXP = len(SPECIAL_LABELS)
NBINS = FIRST_EXP + EXP_MAX - EXP_MIN + 1

#: rows of a histogram: elements, updated by run 1, updated by run 2, updated by both
N, C1, C2, BOTH = 0, 1, 2, 3

_EXPONENT_BITS = {"BF16": 8, "F16": 5, "F32": 8, "F64": 11, "F8_E4M3": 4, "F8_E5M2": 5}


def bin_label(index: int) -> str:
    """Readable name of a global bin: ``"zero"``, ..., or ``"2^-7"`` for an exponent bin."""
    if index < FIRST_EXP:
        return SPECIAL_LABELS[index]
    return f"2^{index - FIRST_EXP + EXP_MIN}"


def bin_exponent(index: int) -> int | None:
    """Unbiased exponent of a global bin (None for the special bins)."""
    return None if index < FIRST_EXP else index - FIRST_EXP + EXP_MIN


def empty_hist() -> np.ndarray:
    """A zeroed global histogram, shape ``(4, NBINS)`` (rows :data:`N`, :data:`C1`, :data:`C2`, :data:`BOTH`)."""
    return np.zeros((4, NBINS), dtype=np.int64)


@cache
def layout(code: str) -> tuple[int, int, np.ndarray]:
    """``(mantissa_bits, exponent_bits, local_to_global)`` of a float dtype.

    Local bin of a bit pattern with exponent field ``e`` and mantissa ``m``: 0 for ``e == m == 0`` (zero),
    1 for ``e == 0, m != 0`` (subnormal), ``e + 1`` otherwise. ``local_to_global`` maps it to the global bin.
    """
    from .dtypes import DTYPES

    dt = DTYPES[code]
    ebits = _EXPONENT_BITS[code]
    mant = dt.mantissa_bits
    emask = (1 << ebits) - 1
    bias = (1 << (ebits - 1)) - 1
    has_inf_exponent = code != "F8_E4M3"  # e4m3fn uses its top exponent for normal numbers
    to_global = np.empty(emask + 2, dtype=np.int64)
    to_global[0] = ZERO
    to_global[1] = SUBNORMAL
    for e in range(1, emask + 1):
        if has_inf_exponent and e == emask:
            to_global[e + 1] = NONFINITE
        else:
            to_global[e + 1] = FIRST_EXP + (e - bias) - EXP_MIN
    to_global.setflags(write=False)
    return mant, ebits, to_global


def local_bins(bits: np.ndarray, dtype: DType) -> np.ndarray:
    """Local bin of every element of ``bits`` (see :func:`layout`), as int64 (numpy; for checks)."""
    mant, ebits, _ = layout(dtype.code)
    b = bits.astype(np.uint64)
    e = (b >> np.uint64(mant)) & np.uint64((1 << ebits) - 1)
    m = b & np.uint64((1 << mant) - 1)
    out: np.ndarray = local_bin_of(e, m)
    return out


def count_local(
    bits: np.ndarray,
    dtype: DType,
    p1: np.ndarray,
    p2: np.ndarray,
    hist: np.ndarray,
    backend: str | None = None,
) -> None:
    """Add the bins of ``bits`` (raw bits of a float dtype) to the *local* histogram ``hist``.

    ``p1`` / ``p2`` are the packed (little bit order) updated bits of the same elements, bit ``i`` for
    element ``i``; ``hist`` has shape ``(4, len(layout(code)[2]))``. ``backend``: ``numba`` or ``numpy``
    (default the fastest; see :func:`subnetscope.kernels.magnitude.count_bins`).
    """
    mant, ebits, _ = layout(dtype.code)
    count_bins(bits, p1, p2, mant, ebits, hist, backend)


def local_hist(dtype: DType) -> np.ndarray:
    """A zeroed local histogram for ``dtype``."""
    return np.zeros((4, len(layout(dtype.code)[2])), dtype=np.int64)


def add_local(global_hist: np.ndarray, local: np.ndarray, dtype: DType) -> None:
    """Fold a local histogram of ``dtype`` into a global one (in place)."""
    _, _, to_global = layout(dtype.code)
    global_hist[:, to_global] += local  # to_global is one-to-one


def add_special(global_hist: np.ndarray, bin_index: int, p1: np.ndarray, p2: np.ndarray, n: int) -> None:
    """Count ``n`` elements (packed updated bits ``p1``/``p2``) into one special bin."""
    m1 = np.unpackbits(p1, count=n, bitorder="little").view(bool)
    m2 = np.unpackbits(p2, count=n, bitorder="little").view(bool)
    global_hist[N, bin_index] += n
    global_hist[C1, bin_index] += int(np.count_nonzero(m1))
    global_hist[C2, bin_index] += int(np.count_nonzero(m2))
    global_hist[BOTH, bin_index] += int(np.count_nonzero(m1 & m2))


def expected_intersection(hist: np.ndarray) -> tuple[float, float]:
    """Mean and variance of ``|I1 ∩ I2|`` if each run's updated set were drawn uniformly within each bin.

    Per bin the intersection is hypergeometric (population ``n_b``, ``c1_b`` marked, ``c2_b`` drawn):
    mean ``c1_b c2_b / n_b``; bins are independent, so means and variances add.
    """
    n = hist[N].astype(np.float64)
    c1 = hist[C1].astype(np.float64)
    c2 = hist[C2].astype(np.float64)
    ok = n > 0
    n, c1, c2 = n[ok], c1[ok], c2[ok]
    mean = float(np.sum(c1 * c2 / n))
    multi = n > 1
    var = float(
        np.sum(
            c1[multi]
            * c2[multi]
            * (n[multi] - c1[multi])
            * (n[multi] - c2[multi])
            / (n[multi] ** 2 * (n[multi] - 1))
        )
    )
    return mean, var
