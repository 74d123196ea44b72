"""The optional C kernels, loaded with ctypes: compare's count and mask (``csrc/compare.c``), the series
chunk (``csrc/series.c``), FP8 dequantized counts (``csrc/fp8.c``) and the delta loops (``csrc/delta.c``);
the one boundary between Python and C.

They compute what the numba kernels of :mod:`.compare`, :mod:`.series`, :mod:`.fp8` and :mod:`.delta`
compute, bit for bit (tests check every backend against the brute-force oracle). The wrappers check sizes,
widths, contiguity and writability before handing pointers to C, so a wrong call raises instead of reading
or writing out of bounds. What they add is start-up: this library loads in milliseconds where numba costs
about 0.5 s per process (its import plus loading a cached kernel), which is as long as reading a
1B-parameter pair. They are also a little faster: differences are taken in float32 where that decides the
comparison exactly, and in float64 otherwise (see the comment in ``csrc/decode.h``).

``AVAILABLE`` is false when the extension ``subnetscope.kernels._native`` was not built (no C compiler at
install time), was built from other sources (:data:`ABI_VERSION`) or when ``SUBNETSCOPE_NO_NATIVE=1``;
:mod:`.registry` then picks numba. On a CPU with AVX-512 the series kernel for bf16 and the delta gather run
hand-vectorised variants (``csrc/avx512.c``); ``SUBNETSCOPE_NO_AVX512=1`` or :func:`set_avx512` turns them
off (tests run both).
"""

from __future__ import annotations

import ctypes
import functools
import importlib
from typing import Any

import numpy as np

from ..dtypes import DType, decode_table, decode_table32
from . import env

_P, _I64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
_F32, _F64, _U64 = ctypes.c_float, ctypes.c_double, ctypes.c_uint64

#: must equal ``ss_abi_version()`` of the compiled library (``SS_ABI_VERSION`` in ``csrc/native.h``)
ABI_VERSION = 8

#: decode code of a dtype in the C kernels (see ``csrc/module.c``)
_CODES = {"BF16": 0, "F16": 1, "F8_E4M3": 5, "F8_E5M2": 6, "F32": 3, "F64": 4}
_TABLE_CODES = ("F16", "F8_E4M3", "F8_E5M2")


def _load() -> Any:
    if env.NO_NATIVE:
        return None
    try:
        path = importlib.import_module(f"{__package__}._native").__file__
    except ImportError:
        return None
    try:
        lib = ctypes.CDLL(path)
    except OSError:  # pragma: no cover - the module imported, so its file loads
        return None
    if not hasattr(lib, "ss_abi_version") or lib.ss_abi_version() != ABI_VERSION:
        # built from other sources (an editable install whose C file changed since): rebuild with
        # `pip install -e .` (or `make setup`); until then the numba kernels run
        return None
    lib.ss_count4.argtypes = [_P, _P, _I64, _INT, _INT, _INT, _P, _P, _P, _P, _P, _U64, _U64, _P]
    lib.ss_mask.argtypes = [_P, _P, _I64, _INT, _INT, _INT, _P, _P, _F32, _F32, _F64, _P]
    for name, args in (
        ("ss_diff_pack", [_P, _P, _I64, _INT, _P, _P]),
        ("ss_scatter_bitmap", [_P, _I64, _INT, _P, _P, _I64]),
        ("ss_scatter_varint", [_P, _I64, _INT, _P, _I64, _P, _I64]),
        ("ss_bitmap_varint", [_P, _I64, _I64, _P, _I64]),
    ):
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, _I64
    lib.ss_fp8_dequant.argtypes = [_P, _P, _I64, _INT, _P, _P, _P, _I64, _I64, _I64, _I64, _INT, _P, _P]
    lib.ss_series_chunk.argtypes = [_P, _INT, _INT, _I64, _INT, _INT, _INT, _P, _P, _F32, _F32, _F64, _P, _P]
    lib.ss_set_avx512.argtypes, lib.ss_set_avx512.restype = [_INT], _INT
    lib.ss_set_avx512(int(not env.NO_AVX512))
    return lib


_LIB = _load()
AVAILABLE = _LIB is not None

_DUMMY_F32 = np.zeros(1, dtype=np.float32)
_DUMMY_F64 = np.zeros(1, dtype=np.float64)


def set_avx512(on: bool) -> int:
    """Use (``True``, the default) or not the AVX-512 kernels this CPU can run; returns what is now in use:
    0 none (no AVX-512, no extension, or ``on`` false), 1 the bf16 series kernel, 2 that and the delta
    gather (which needs AVX-512 VBMI2)."""
    return int(_LIB.ss_set_avx512(int(on))) if _LIB is not None else 0


def avx512_level() -> int:
    """What :func:`set_avx512` (or ``SUBNETSCOPE_NO_AVX512=1`` at import) left in use: 0, 1 or 2."""
    return int(ctypes.c_int.in_dll(_LIB, "ss_simd_level").value) if _LIB is not None else 0


def supports(dtype: DType) -> bool:
    """Whether the C kernels handle this dtype (every float dtype of :mod:`subnetscope.dtypes`)."""
    return dtype.code in _CODES


def float32_bounds(thr: np.ndarray, ref: bool) -> tuple[np.ndarray, np.ndarray]:
    """The float32 thresholds of the fast kernels for float64 thresholds ``thr``: ``(le, amb)``.

    Exact semantics: with ``R = float32(t)`` (round to nearest), ``le`` is the largest float32 below ``R``
    and ``amb`` is ``R`` (a float32 difference equal to ``R`` is recounted in float64). Reference
    semantics: the difference is a float32 by definition, so ``le`` is ``t`` rounded down and ``amb`` NaN.
    """
    t = np.asarray(thr, dtype=np.float64)
    r = t.astype(np.float32)
    if ref:
        le = np.where(r.astype(np.float64) > t, np.nextafter(r, np.float32(-np.inf)), r).astype(np.float32)
        return le, np.full(t.shape, np.nan, dtype=np.float32)
    return np.nextafter(r, np.float32(-np.inf)).astype(np.float32), r


@functools.lru_cache(maxsize=64)
def bf16_ties_possible(r: float) -> bool:
    """Whether two finite bf16 values ``x``, ``a`` exist with ``|fl32(x - a)| == r``: when not, no float32
    difference of bf16 inputs can equal the threshold ``r`` and the kernels need not look for ties.

    Exhaustive and exact: for each of the 65536 bit patterns of ``a`` and each sign, the bf16 values ``x``
    with ``fl32(x - a) = ±r`` form a contiguous run (rounding is monotone), so it is empty unless it holds
    one of the bf16 neighbours of ``a ± r``; five candidates around it are computed in float32 as the
    kernels do. 0.65 M subtractions, about 8 ms, once per threshold.
    """
    r32 = np.float32(r)
    if not (np.isfinite(r32) and r32 > 0):
        return bool(r32 == 0)  # 0 is the difference of equal values; NaN never ties
    bits = np.arange(1 << 16, dtype=np.uint32)
    a = (bits << 16).view(np.float32)
    a = a[np.isfinite(a)]

    # order-preserving integer key of a bf16 value (so that +-1 steps to the neighbouring value)
    def key(v: np.ndarray) -> np.ndarray:
        b16 = (v.view(np.uint32) >> 16).astype(np.int64)
        return np.where(b16 & 0x8000, -(b16 & 0x7FFF), b16)

    def value(k: np.ndarray) -> np.ndarray:
        b16 = np.where(k < 0, (-k) | 0x8000, k).astype(np.uint32)
        return (b16 << 16).view(np.float32)

    with np.errstate(over="ignore", invalid="ignore"):
        for sign in (1.0, -1.0):
            t = a.astype(np.float64) + sign * float(r32)
            near = key((t.astype(np.float32).view(np.uint32) & 0xFFFF0000).view(np.float32))
            for step in range(-2, 3):
                k = np.clip(near + step, -0x7FFF, 0x7FFF)
                d = np.abs(value(k) - a)  # float32 arithmetic, like the kernels
                if np.any(d == r32):
                    return True
    return False


def _ptr(a: np.ndarray) -> int:
    if not a.flags.c_contiguous:
        raise ValueError("the C kernels need contiguous arrays")
    return int(a.ctypes.data)


def _bits(dtype: DType, n: int, *arrays: np.ndarray) -> None:
    if any(a.dtype.itemsize != dtype.itemsize or a.shape[0] != n for a in arrays):
        raise ValueError(f"the C kernels need {n} raw {dtype.code} values in every row")


def _writable(*arrays: np.ndarray) -> None:
    # C writes through the pointer whatever numpy's flag says: a read-only map would fault, not raise
    if not all(a.flags.writeable for a in arrays):
        raise ValueError("the C kernels write into a read-only array")


def _tables(dtype: DType) -> tuple[int, int]:
    """Pointers to the float32 and float64 decode tables of a table-decoded dtype (fp16; fp8 for the
    float64 fallback loops), else to placeholders the loops never read."""
    if dtype.code in _TABLE_CODES:
        return _ptr(decode_table32(dtype.code)), _ptr(decode_table(dtype.code))
    return _ptr(_DUMMY_F32), _ptr(_DUMMY_F64)


def count4(
    a: np.ndarray,
    b: np.ndarray,
    dtype: DType,
    ref: bool,
    thr4: np.ndarray,
    nonfinite: tuple[int, int],
    out7: np.ndarray,
) -> None:
    """Add to ``out7`` (int64): ``#(d <= thr4[k])`` for the four thresholds, identical, non-finite base and
    target."""
    lib = _LIB
    assert lib is not None
    _bits(dtype, a.shape[0], a, b)
    code = _CODES[dtype.code]
    fast = code != 4
    le, amb = float32_bounds(thr4, ref) if fast else (_DUMMY_F32, _DUMMY_F32)
    t = np.ascontiguousarray(thr4, dtype=np.float64)
    p32, p64 = _tables(dtype)
    rc = lib.ss_count4(_ptr(a), _ptr(b), a.shape[0], code, int(ref), int(fast), p32, p64,
                       _ptr(le), _ptr(amb), _ptr(t), nonfinite[0], nonfinite[1], _ptr(out7))  # fmt: skip
    if rc:  # pragma: no cover - _CODES and the C switch agree
        raise ValueError(f"no C kernel for {dtype.code}")


def mask(
    a: np.ndarray,
    b: np.ndarray,
    dtype: DType,
    ref: bool,
    thr: float,
    out: np.ndarray,
) -> None:
    """Write into ``out`` (uint8, ``ceil(n / 8)``) the packed bits (little bit order) of ``d > thr``."""
    lib = _LIB
    assert lib is not None
    _bits(dtype, a.shape[0], a, b)
    if out.shape[0] < (a.shape[0] + 7) // 8 or out.dtype.itemsize != 1:
        raise ValueError("the mask buffer is too short")
    _writable(out)
    code = _CODES[dtype.code]
    le, amb = float32_bounds(np.array([thr]), ref)
    p32, p64 = _tables(dtype)
    rc = lib.ss_mask(_ptr(a), _ptr(b), a.shape[0], code, int(ref), int(code != 4), p32, p64,
                     float(le[0]), float(amb[0]), float(thr), _ptr(out))  # fmt: skip
    if rc:  # pragma: no cover
        raise ValueError(f"no C kernel for {dtype.code}")


def series_chunk(
    rows: list[np.ndarray],
    dtype: DType,
    ref: bool,
    thr: float,
    nsteps: int,
    fin: int,
    out: np.ndarray,
    split4: np.ndarray,
) -> None:
    """A whole chunk of a series (``rows[0]`` INIT, ``rows[1..nsteps]`` the checkpoints, ``rows[fin]`` the
    final one) block by block: adds the per-step counts to ``out`` (``(nsteps, 8)`` int64, C order) and
    final, final bits, ever changed or final, ever touched or final bits to ``split4`` (int64)."""
    lib = _LIB
    assert lib is not None
    if not (out.flags.c_contiguous and out.dtype == np.int64 and out.shape == (nsteps, 8)):
        raise ValueError("out must be a C-ordered (nsteps, 8) int64 array")
    if not (len(rows) > max(nsteps, fin) and fin >= 1 and split4.shape == (4,) and split4.dtype == np.int64):
        raise ValueError("series_chunk: rows, fin or split4 do not match nsteps")
    _bits(dtype, rows[0].shape[0], *rows)
    code = _CODES[dtype.code]
    le, amb = float32_bounds(np.array([thr]), ref)
    if code == 0 and not ref and not bf16_ties_possible(float(amb[0])):
        amb[0] = np.nan  # never equal: the kernels skip the tie test (1e-5, for one, is never a bf16 gap)
    p32, p64 = _tables(dtype)
    ptrs = (ctypes.c_void_p * len(rows))(*[_ptr(r) for r in rows])
    rc = lib.ss_series_chunk(ptrs, nsteps, fin, rows[0].shape[0], code, int(ref), int(code != 4), p32, p64,
                             float(le[0]), float(amb[0]), float(thr), _ptr(out), _ptr(split4))  # fmt: skip
    if rc:  # pragma: no cover
        raise ValueError(f"no C kernel for {dtype.code}")


def fp8_dequant(
    a: np.ndarray, b: np.ndarray, code: str, sa: np.ndarray, sb: np.ndarray, start: int, cols: int,
    block: tuple[int, int], ref: bool, thr4: np.ndarray, out7: np.ndarray,
) -> None:  # fmt: skip
    """FP8 codes ``a``/``b`` (elements ``[start, start + n)`` of a ``[rows, cols]`` weight) compared by
    dequantized value with the flattened float64 scale grids ``sa``/``sb`` of ``block``-sized blocks (the
    C version of :func:`subnetscope.kernels.fp8.count_dequant`): adds the four threshold counts, identical,
    non-finite base and target."""
    lib = _LIB
    assert lib is not None
    lut32 = decode_table32(code)
    t = np.ascontiguousarray(thr4, dtype=np.float64)
    n = a.shape[0]
    if b.shape[0] != n or a.dtype.itemsize != 1 or b.dtype.itemsize != 1:
        raise ValueError("fp8_dequant: a and b must hold the same number of 1-byte codes")
    if cols <= 0 or min(block) <= 0:
        raise ValueError(f"bad FP8 layout: cols {cols}, block {block}")
    need = (((start + max(n, 1) - 1) // cols) // block[0] + 1) * -(-cols // block[1])
    for arr in (sa, sb):
        if arr.dtype != np.float64 or arr.shape[0] < need:
            raise ValueError(f"scale grids must be float64 with at least {need} entries")
    rc = lib.ss_fp8_dequant(_ptr(a), _ptr(b), a.shape[0], _CODES[code], _ptr(lut32), _ptr(sa), _ptr(sb),
                            start, cols, block[0], block[1], int(ref), _ptr(t), _ptr(out7))  # fmt: skip
    if rc:
        raise ValueError(f"bad FP8 layout: cols {cols}, block {block}, start {start}")


# ---------------------------------------------------------------------------------------------------------
# the delta loops (``csrc/delta.c``; see :mod:`.delta`)


def diff_pack(a: np.ndarray, b: np.ndarray, bitmap: np.ndarray, values: np.ndarray) -> int:
    """``bitmap`` (packed, little bit order) of where the raw bits differ, ``values[:k]`` = ``b`` there;
    returns ``k``. ``values`` must hold ``len(b)`` elements."""
    lib = _LIB
    assert lib is not None
    n = b.shape[0]
    if a.shape[0] != n or values.shape[0] < n or bitmap.shape[0] < (n + 7) // 8:
        raise ValueError("diff_pack: arrays of the wrong sizes")
    _writable(bitmap, values)
    return int(lib.ss_diff_pack(_ptr(a), _ptr(b), n, b.dtype.itemsize, _ptr(bitmap), _ptr(values)))


def bitmap_varint(bitmap: np.ndarray, n: int, out: np.ndarray) -> int:
    """LEB128 gaps of the set bits of ``bitmap`` below ``n`` into ``out``: bytes written, -1 if too many."""
    lib = _LIB
    assert lib is not None
    _writable(out)
    return int(lib.ss_bitmap_varint(_ptr(bitmap), bitmap.shape[0], n, _ptr(out), out.shape[0]))


def scatter_bitmap(out: np.ndarray, bitmap: np.ndarray, values: np.ndarray) -> int:
    """``out[bit i set] = values`` in order: the number of set bits, or a negative error code."""
    lib = _LIB
    assert lib is not None
    if bitmap.shape[0] < (out.shape[0] + 7) // 8 or values.dtype.itemsize != out.dtype.itemsize:
        raise ValueError("scatter_bitmap: bitmap too short or values of another width")
    _writable(out)
    return int(lib.ss_scatter_bitmap(_ptr(out), out.shape[0], out.dtype.itemsize, _ptr(bitmap),
                                     _ptr(values), values.shape[0]))  # fmt: skip


def scatter_varint(out: np.ndarray, buf: np.ndarray, values: np.ndarray) -> int:
    """Decode LEB128 gaps from ``buf``, ``out[pos] = values`` in order: values used, or a negative error."""
    lib = _LIB
    assert lib is not None
    if values.dtype.itemsize != out.dtype.itemsize:
        raise ValueError("scatter_varint: values of another width")
    _writable(out)
    return int(lib.ss_scatter_varint(_ptr(out), out.shape[0], out.dtype.itemsize, _ptr(buf), buf.shape[0],
                                     _ptr(values), values.shape[0]))  # fmt: skip
