"""The fused per-chunk kernel: bit identity, every tolerance, non-finite counts and mask bits.

Given the raw bits of a base chunk ``a`` and a target chunk ``b`` of one float dtype, :func:`count_chunk`
adds to ``out``: per threshold ``k`` the number of elements with ``|b - a| <= thr[k]`` (bit-identical
elements always count, NaN ones included), then the number of bit-identical elements, of non-finite base
values and of non-finite target values. With a non-empty ``mask_out`` it also writes the packed bits (little
bit order) of "changed at ``thr[mask_k]``".

Three backends compute the same counts (:data:`~.registry.BACKENDS`, fastest first): the C kernels of
:mod:`.native` when the extension was built, numba otherwise, numpy as the last resort
(``SUBNETSCOPE_NO_NATIVE=1`` / ``SUBNETSCOPE_NO_NUMBA=1`` turn the first two off). The numba loop is
branch-free so that LLVM vectorises it: bf16 is decoded by a shift into float32 bits, fp32/fp64 are viewed
directly, fp16 and fp8 go through a 2**bits lookup table; four thresholds are counted per pass (more are
done four at a time). The compiled kernels release the GIL, so threads run in parallel. All three are
tested against a brute-force oracle.

Semantics of the difference:
- exact: ``d = |float64(b) - float64(a)|``. For 8/16-bit floats and fp32 this is the exact difference,
  or (when the two exponents differ by more than about 45) its correct rounding, which cannot change the
  comparison with a float64 tolerance unless that tolerance equals a value of the format to 45 bits;
- reference: ``d = |float32(float32(b) - float32(a))|`` (torch's arithmetic for a delta in the stored
  dtype; fp64 stays fp64), compared with thresholds from :func:`subnetscope.dtypes.reference_threshold`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..dtypes import DType, decode, decode_table
from . import native
from .jit import LazyJit
from .registry import pick_backend
from .thresholds import count_by_fours

#: layout of ``out`` after the K per-threshold counts
IDENTICAL, NONFINITE_BASE, NONFINITE_TARGET = 0, 1, 2

#: how a dtype's bits become floats inside the jitted loops (shared with :mod:`.series`)
DECODE_SHIFT16, DECODE_LUT, DECODE_VIEW = 0, 1, 2

_EMPTY_F32 = np.zeros(0, dtype=np.float32)
_EMPTY_F64 = np.zeros(0, dtype=np.float64)


def decode_kind(dtype: DType) -> int:
    """bf16 by a shift into float32 bits, other 8/16-bit floats by table, 32/64-bit floats by a view."""
    if dtype.code == "BF16":
        return DECODE_SHIFT16
    if dtype.itemsize <= 2:
        return DECODE_LUT
    return DECODE_VIEW


def decode_operands(dtype: DType, rows: list[np.ndarray]) -> tuple[int, np.ndarray, list[np.ndarray]]:
    """What the jitted loops need to decode ``rows`` of ``dtype``: the kind, the lookup table (empty unless
    used) and a float view of each row (empty unless used)."""
    kind = decode_kind(dtype)
    lut = decode_table(dtype.code) if kind == DECODE_LUT else _EMPTY_F64
    if kind == DECODE_VIEW:
        fv = np.float32 if dtype.itemsize == 4 else np.float64
        return kind, lut, [r.view(fv) for r in rows]
    return kind, lut, [_EMPTY_F32] * len(rows)


# ---------------------------------------------------------------------------------------------------------
# numba implementation


def decode_nb(x, lut, vals, i, kind):  # pragma: no cover - jitted
    """float64 value of the bits ``x`` (element ``i``; ``vals`` is the float view of its row); the decoder
    of :mod:`.series` (jitted there)."""
    if kind == 0:
        return np.float64(np.uint32(np.uint32(x) << 16).view(np.float32))
    if kind == 1:
        return lut[x]
    return np.float64(vals[i])


def _diff_nb(x, y, i, av, bv, lut, kind, ref):  # pragma: no cover - jitted
    # decodes like decode_nb, but keeps 8/16-bit values in float32 until the subtraction: typed that way
    # the loop vectorises (through decode_nb's float64 branches it ran 4x slower, 2.4 vs 0.6 ns/element)
    if kind == 0:
        fx = np.uint32(np.uint32(x) << 16).view(np.float32)
        fy = np.uint32(np.uint32(y) << 16).view(np.float32)
    elif kind == 1:
        fx = np.float32(lut[x])
        fy = np.float32(lut[y])
    else:
        fx = av[i]
        fy = bv[i]
    if ref:
        return np.float64(abs(np.float32(fy) - np.float32(fx)))
    return abs(np.float64(fy) - np.float64(fx))


def _dense4_nb(a, b, av, bv, lut, kind, ref, t0, t1, t2, t3, nf_m, nf_v):  # pragma: no cover
    c0 = 0
    c1 = 0
    c2 = 0
    c3 = 0
    ident = 0
    nfa = 0
    nfb = 0
    for i in range(a.shape[0]):
        x = a[i]
        y = b[i]
        eq = x == y
        d = _diff_j(x, y, i, av, bv, lut, kind, ref)
        d = 0.0 if eq else d
        ident += eq
        nfa += (x & nf_m) == nf_v
        nfb += (y & nf_m) == nf_v
        c0 += d <= t0
        c1 += d <= t1
        c2 += d <= t2
        c3 += d <= t3
    return c0, c1, c2, c3, ident, nfa, nfb


def _mask_nb(a, b, av, bv, lut, kind, ref, tm, out):  # pragma: no cover - jitted
    n = a.shape[0]
    full = n >> 3
    for j in range(full):
        byte = np.uint8(0)
        for t in range(8):
            i = (j << 3) + t
            x = a[i]
            y = b[i]
            d = _diff_j(x, y, i, av, bv, lut, kind, ref)
            d = 0.0 if x == y else d
            byte |= np.uint8(not (d <= tm)) << t
        out[j] = byte
    if n & 7:
        byte = np.uint8(0)
        for t in range(n & 7):
            i = (full << 3) + t
            x = a[i]
            y = b[i]
            d = _diff_j(x, y, i, av, bv, lut, kind, ref)
            d = 0.0 if x == y else d
            byte |= np.uint8(not (d <= tm)) << t
        out[full] = byte


#: the jitted helper, bound by :data:`_jit` before the kernels that call it are compiled
_diff_j: Any = None

#: the numba kernels (compiled on first use)
_jit = LazyJit(globals(), kernels={"dense4": _dense4_nb, "mask": _mask_nb}, inline={"_diff_j": _diff_nb})


# ---------------------------------------------------------------------------------------------------------
# numpy implementation (same arithmetic)


def _diff_np(a: np.ndarray, b: np.ndarray, dtype: DType, ref: bool) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        if dtype.code == "F64":
            d = np.abs(b.view(np.float64) - a.view(np.float64))
        elif ref:
            d = np.abs(decode(b, dtype).astype(np.float32) - decode(a, dtype).astype(np.float32)).astype(
                np.float64
            )
        else:
            d = np.abs(decode(b, dtype) - decode(a, dtype))
    d[a == b] = 0.0
    return d


def count_chunk(
    a: np.ndarray,
    b: np.ndarray,
    dtype: DType,
    thr: np.ndarray,
    ref: bool,
    out: np.ndarray,
    mask_out: np.ndarray,
    mask_k: int = 0,
    backend: str | None = None,
) -> None:
    """Add one chunk's counters to ``out`` (``len(thr) + 3`` int64) and fill ``mask_out`` if non-empty.

    ``backend`` is one of :data:`~.registry.BACKENDS` (default: the fastest); all give the same result.
    """
    be = pick_backend(backend, dtype)
    k = thr.shape[0]
    bt = a.dtype.type
    nf_m, nf_v = (bt(v) for v in (dtype.nonfinite or (0, 1)))
    ref = ref and dtype.code != "F64"  # torch computes an fp64 delta in fp64
    if be == "numpy":
        d = _diff_np(a, b, dtype, ref)
        for j in range(k):
            out[j] += int(np.count_nonzero(d <= thr[j]))
        out[k + IDENTICAL] += int(np.count_nonzero(a == b))
        out[k + NONFINITE_BASE] += int(np.count_nonzero((a & nf_m) == nf_v))
        out[k + NONFINITE_TARGET] += int(np.count_nonzero((b & nf_m) == nf_v))
        if mask_out.shape[0]:
            mask_out[:] = np.packbits(~(d <= thr[mask_k]), bitorder="little")
        return
    if be == "native":
        nonfinite = (int(nf_m), int(nf_v))

        def count4(t4: np.ndarray) -> np.ndarray:
            res = np.zeros(7, dtype=np.int64)
            native.count4(a, b, dtype, ref, t4, nonfinite, res)
            return res

        count_by_fours(thr, out, count4)
        if mask_out.shape[0]:
            native.mask(a, b, dtype, ref, float(thr[mask_k]), mask_out)
        return
    nb = _jit()
    kind, lut, (av, bv) = decode_operands(dtype, [a, b])
    count_by_fours(
        thr, out, lambda t4: nb.dense4(a, b, av, bv, lut, kind, ref, t4[0], t4[1], t4[2], t4[3], nf_m, nf_v)
    )
    if mask_out.shape[0]:
        nb.mask(a, b, av, bv, lut, kind, ref, float(thr[mask_k]), mask_out)
