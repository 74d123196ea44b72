"""Storage dtypes: safetensors codes, their bit widths, exact decoding to float64, ULP arithmetic.

Numpy has no bf16 or fp8, so every tensor is read as unsigned integers of its width (its *bits*) and
decoded here. For 8- and 16-bit formats decoding is a lookup table of all 2**bits values in float64, which
is exact; 32-bit floats are viewed as numpy float32, 64-bit as float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from .errors import UnsupportedDtypeError


@dataclass(frozen=True)
class DType:
    """A safetensors storage dtype."""

    code: str  #: safetensors code, e.g. ``"BF16"``
    itemsize: int  #: bytes per element
    is_float: bool
    #: (mask, value) such that ``bits & mask == value`` exactly for NaN and Inf codes; None for integers
    nonfinite: tuple[int, int] | None = None
    mantissa_bits: int = 0  #: explicit mantissa bits (floats only)

    @property
    def bits_dtype(self) -> np.dtype:
        """The unsigned integer numpy dtype of the same width."""
        return np.dtype(f"<u{self.itemsize}")

    @property
    def torch_name(self) -> str:
        """Name of the matching ``torch`` dtype attribute."""
        return _TORCH_NAMES[self.code]


DTYPES: dict[str, DType] = {
    d.code: d
    for d in (
        DType("BF16", 2, True, (0x7F80, 0x7F80), 7),
        DType("F16", 2, True, (0x7C00, 0x7C00), 10),
        DType("F32", 4, True, (0x7F800000, 0x7F800000), 23),
        DType("F64", 8, True, (0x7FF0000000000000, 0x7FF0000000000000), 52),
        DType("F8_E4M3", 1, True, (0x7F, 0x7F), 3),
        DType("F8_E5M2", 1, True, (0x7C, 0x7C), 2),
        DType("I8", 1, False),
        DType("U8", 1, False),
        DType("I16", 2, False),
        DType("U16", 2, False),
        DType("I32", 4, False),
        DType("U32", 4, False),
        DType("I64", 8, False),
        DType("U64", 8, False),
        DType("BOOL", 1, False),
    )
}

_TORCH_NAMES = {
    "BF16": "bfloat16",
    "F16": "float16",
    "F32": "float32",
    "F64": "float64",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "I8": "int8",
    "U8": "uint8",
    "I16": "int16",
    "U16": "uint16",
    "I32": "int32",
    "U32": "uint32",
    "I64": "int64",
    "U64": "uint64",
    "BOOL": "bool",
}

TORCH_TO_CODE = {v: k for k, v in _TORCH_NAMES.items()}


def get_dtype(code: str, where: str = "") -> DType:
    """Look up a safetensors dtype code, raising a clear error for unknown ones."""
    try:
        return DTYPES[code]
    except KeyError:
        place = f" in {where}" if where else ""
        raise UnsupportedDtypeError(
            f"unknown dtype {code!r}{place}",
            f"supported dtypes are {', '.join(sorted(DTYPES))}",
        ) from None


def _decode_fp8(bits: np.ndarray, exp_bits: int, man_bits: int, e4m3fn: bool) -> np.ndarray:
    b = bits.astype(np.int64)
    sign = np.where(b >> 7 & 1, -1.0, 1.0)
    e = (b >> man_bits) & ((1 << exp_bits) - 1)
    m = (b & ((1 << man_bits) - 1)).astype(np.float64)
    bias = (1 << (exp_bits - 1)) - 1
    normal = (1.0 + m / (1 << man_bits)) * np.exp2(e - bias)
    sub = (m / (1 << man_bits)) * np.exp2(1 - bias)
    val = np.where(e == 0, sub, normal)
    if e4m3fn:
        val = np.where((b & 0x7F) == 0x7F, np.nan, val)
    else:
        emax = (1 << exp_bits) - 1
        val = np.where((e == emax) & (m == 0), np.inf, val)
        val = np.where((e == emax) & (m != 0), np.nan, val)
    out: np.ndarray = sign * val
    return out


@cache
def decode_table(code: str) -> np.ndarray:
    """float64 value of every bit pattern of an 8- or 16-bit float dtype (read-only array)."""
    if code == "BF16":
        bits = np.arange(1 << 16, dtype=np.uint32) << 16
        with np.errstate(invalid="ignore"):
            table = bits.view(np.float32).astype(np.float64)
    elif code == "F16":
        table = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float64)
    elif code == "F8_E4M3":
        table = _decode_fp8(np.arange(256), 4, 3, True)
    elif code == "F8_E5M2":
        table = _decode_fp8(np.arange(256), 5, 2, False)
    else:
        raise ValueError(f"no decode table for {code}")
    table.setflags(write=False)
    return table


@cache
def decode_table32(code: str) -> np.ndarray:
    """:func:`decode_table` in float32 (exact: every 8- and 16-bit float is a float32; read-only)."""
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf entries stay NaN/Inf
        table = decode_table(code).astype(np.float32)
    table.setflags(write=False)
    return table


def decode(bits: np.ndarray, dtype: DType) -> np.ndarray:
    """Exact float64 values of an array of raw bits of ``dtype``."""
    if dtype.code in ("BF16", "F16", "F8_E4M3", "F8_E5M2"):
        out: np.ndarray = decode_table(dtype.code)[bits]
        return out
    if dtype.code == "F32":
        return bits.view(np.float32).astype(np.float64)
    if dtype.code == "F64":
        return bits.view(np.float64).astype(np.float64)
    if dtype.code == "BOOL":
        return bits.astype(np.float64)
    signed = dtype.code.startswith("I")
    return bits.view(f"<{'i' if signed else 'u'}{dtype.itemsize}").astype(np.float64)


def round_to_dtype(values: np.ndarray, dtype: DType) -> np.ndarray:
    """Round float64 values to the nearest value of ``dtype`` (ties to even), returned as float64."""
    if dtype.code == "F64":
        return values.astype(np.float64)
    if dtype.code == "F32":
        return values.astype(np.float32).astype(np.float64)
    if dtype.code == "F16":
        return values.astype(np.float16).astype(np.float64)
    table = decode_table(dtype.code)
    finite = np.isfinite(table)
    order = np.argsort(table[finite], kind="stable")
    vals = table[finite][order]
    vals, first = np.unique(vals, return_index=True)
    codes = np.flatnonzero(finite)[order][first]
    idx = np.clip(np.searchsorted(vals, values), 1, len(vals) - 1)
    lo, hi = vals[idx - 1], vals[idx]
    pick_hi = (hi - values) < (values - lo)
    tie = (hi - values) == (values - lo)
    # ties to even: the code with an even mantissa (lowest bit clear)
    hi_even = (codes[idx] & 1) == 0
    pick_hi = pick_hi | (tie & hi_even)
    out: np.ndarray = np.where(pick_hi, hi, lo)
    return out


def ulp_of(values: np.ndarray, dtype: DType) -> np.ndarray:
    """Spacing of ``dtype`` at each value: distance from |v| to the next larger representable magnitude."""
    mant = dtype.mantissa_bits
    a = np.abs(values.astype(np.float64))
    # smallest normal exponent of the format
    emin = {"BF16": -126, "F16": -14, "F32": -126, "F64": -1022, "F8_E4M3": -6, "F8_E5M2": -14}[dtype.code]
    with np.errstate(divide="ignore"):
        e = np.floor(np.log2(np.where(a > 0, a, 1.0)))
    e = np.maximum(e, emin)
    out: np.ndarray = np.exp2(e - mant)
    return out


def reference_threshold(tol: float, dtype: DType) -> float:
    """The largest float32 ``d`` with ``round_dtype(d) <= round_dtype(tol)``, for reference semantics.

    The authors' script computes ``delta = target - base`` in the stored dtype (torch upcasts to float32 and
    rounds the result back) and tests ``torch.isclose(delta, 0, atol=tol)``, which for bf16 is
    ``|bf16(delta)| <= bf16(tol)``. That is equivalent to comparing the float32 difference with the midpoint
    between ``bf16(tol)`` and the next bf16 value (inclusive when ties round down to ``bf16(tol)``).
    """
    if dtype.code == "F64":
        return float(tol)
    t = float(round_to_dtype(np.array([tol]), dtype)[0])
    if dtype.code == "F32":
        return t
    # next representable magnitude above t in dtype
    step = float(ulp_of(np.array([t]), dtype)[0]) if t > 0 else float(_smallest_subnormal(dtype))
    mid = np.float32(t + step / 2)  # exactly representable: a midpoint of two narrow floats
    up = float(round_to_dtype(np.array([float(mid)]), dtype)[0])
    if up <= t:  # the tie rounds down to t: the midpoint itself still counts as unchanged
        return float(mid)
    return float(np.nextafter(mid, np.float32(0)))


def _smallest_subnormal(dtype: DType) -> float:
    table = decode_table(dtype.code)
    pos = table[(table > 0) & np.isfinite(table)]
    return float(pos.min())
