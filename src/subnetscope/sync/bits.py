"""Raw bits of tensors and the value code: order-preserving keys, ULP steps, zigzag.

A changed value is sent as its step from the receiver's old value, counted in units in the last place:
both values' bit patterns are mapped to unsigned keys that sort like the floats (negative floats have
their bits inverted, non-negative ones their sign bit set), and the step is ``key_new - key_old`` modulo
``2**bits``. The mapping is a bijection on bit patterns, so every pattern round-trips exactly: −0 and +0
(adjacent keys), NaN payloads, infinities and subnormals. Integer and bool tensors use their bits as keys.

Steps are zigzag-coded (``1, -1, 2, -2 ...`` → ``2, 1, 4, 3 ...``, never 0 for a changed element). Each
changed element costs one code byte, ``zigzag - 1`` when that is below :data:`ESCAPE`, else :data:`ESCAPE`
with the rest (``zigzag - 256``) as a LEB128 varint in a second stream; 8-byte dtypes send every changed
value as its raw bits (steps of 64-bit patterns do not fit the varints).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import DeltaFormatError
from ..kernels.varint import varint_decode as _varint_decode
from ..kernels.varint import varint_encode
from .errors import SyncFormatError

#: torch dtype → (name on the wire, whether its bits are a sign-magnitude float)
DTYPES: dict[torch.dtype, tuple[str, bool]] = {
    torch.bfloat16: ("bfloat16", True),
    torch.float16: ("float16", True),
    torch.float32: ("float32", True),
    torch.float64: ("float64", True),
    torch.float8_e4m3fn: ("float8_e4m3fn", True),
    torch.float8_e5m2: ("float8_e5m2", True),
    torch.int8: ("int8", False),
    torch.uint8: ("uint8", False),
    torch.int16: ("int16", False),
    torch.int32: ("int32", False),
    torch.int64: ("int64", False),
    torch.bool: ("bool", False),
}
BY_NAME: dict[str, torch.dtype] = {name: dt for dt, (name, _) in DTYPES.items()}

#: the integer dtype whose view holds a tensor's bits, by element size
INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_NP_UNSIGNED = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}

#: the code byte that says "step too large, see the escape stream"
ESCAPE = 255


def varint_decode(buf: bytes, count: int, where: str) -> np.ndarray:
    """The delta format's varint decoder, raising :class:`SyncFormatError`."""
    try:
        return _varint_decode(buf, count, where)
    except DeltaFormatError as e:
        raise SyncFormatError(e.message) from None


def wire_name(dtype: torch.dtype) -> str:
    """The dtype's name in patches (raises ``KeyError`` for dtypes sync does not handle)."""
    return DTYPES[dtype][0]


def is_float(name: str) -> bool:
    """Whether the dtype of this wire name is a sign-magnitude float."""
    return DTYPES[BY_NAME[name]][1]


def bits_view(t: torch.Tensor) -> torch.Tensor:
    """The same memory as an integer tensor of the same element size (works on non-contiguous tensors)."""
    if t.dtype == torch.bool:
        return t.view(torch.uint8)
    return t.view(INT_VIEW[t.element_size()])


def to_unsigned(bits: np.ndarray) -> np.ndarray:
    """Raw bits (any integer dtype) as uint64."""
    u = bits.view(_NP_UNSIGNED[bits.dtype.itemsize])
    return u.astype(np.uint64)


def from_unsigned(u: np.ndarray, itemsize: int) -> np.ndarray:
    """uint64 bit patterns back to an unsigned array of ``itemsize`` bytes."""
    return u.astype(_NP_UNSIGNED[itemsize])


def _masks(itemsize: int) -> tuple[np.uint64, np.uint64]:
    bits = 8 * itemsize
    full = np.uint64((1 << bits) - 1)
    return full, np.uint64(1 << (bits - 1))


def keys(u: np.ndarray, itemsize: int, floating: bool) -> np.ndarray:
    """Order-preserving keys of bit patterns ``u`` (uint64); identity for integers."""
    if not floating:
        return u
    full, sign = _masks(itemsize)
    neg = (u & sign) != 0
    return np.where(neg, u ^ full, u | sign)


def unkeys(k: np.ndarray, itemsize: int, floating: bool) -> np.ndarray:
    """Inverse of :func:`keys`."""
    if not floating:
        return k
    full, sign = _masks(itemsize)
    top = (k & sign) != 0
    return np.where(top, k ^ sign, k ^ full)


def encode_values(
    old: np.ndarray, new: np.ndarray, itemsize: int, floating: bool
) -> tuple[np.ndarray, bytes]:
    """Code bytes and escape stream of changed values (``old``/``new``: uint64 bit patterns, all differ)."""
    if itemsize == 8:
        return np.full(new.shape[0], ESCAPE, dtype=np.uint8), new.astype(np.uint64).tobytes()
    full, _ = _masks(itemsize)
    bits = 8 * itemsize
    step = (keys(new, itemsize, floating) - keys(old, itemsize, floating)) & full
    s = step.astype(np.int64)
    s = np.where(s >= (1 << (bits - 1)), s - (1 << bits), s)
    zz = ((s << 1) ^ (s >> 63)).astype(np.uint64)
    big = zz > np.uint64(ESCAPE)
    codes = np.where(big, np.uint64(ESCAPE), zz - np.uint64(1)).astype(np.uint8)
    esc = varint_encode(zz[big] - np.uint64(ESCAPE + 1)) if big.any() else b""
    return codes, esc


def decode_values(
    old: np.ndarray, codes: np.ndarray, esc: bytes, itemsize: int, floating: bool, where: str
) -> np.ndarray:
    """New bit patterns (uint64) from old ones, code bytes and the escape stream; validates both."""
    big = codes == ESCAPE
    nbig = int(np.count_nonzero(big))
    if itemsize == 8:
        if len(esc) != 8 * nbig or nbig != codes.shape[0]:
            raise SyncFormatError(f"{where}: the raw value stream holds {len(esc)} bytes (damaged)")
        return np.frombuffer(esc, dtype=np.uint64).copy()
    bits = 8 * itemsize
    zz = codes.astype(np.uint64) + np.uint64(1)
    if nbig:
        rest = varint_decode(esc, nbig, where).astype(np.uint64)
        zz[big] = rest + np.uint64(ESCAPE + 1)
    elif esc:
        raise SyncFormatError(f"{where}: {len(esc)} stray bytes in the escape stream (damaged)")
    if int(zz.max(initial=0)) >= (1 << bits) or (nbig and int(zz[big].min()) <= ESCAPE):
        raise SyncFormatError(f"{where}: a value step is out of range for {bits}-bit values (damaged)")
    z = zz.astype(np.int64)
    s = (z >> 1) ^ -(z & 1)
    full, _ = _masks(itemsize)
    k = (keys(old, itemsize, floating) + s.astype(np.uint64)) & full
    return unkeys(k, itemsize, floating)


def encode_positions(idx: np.ndarray) -> tuple[np.ndarray, bytes]:
    """Ascending flat positions as gap bytes (``gap = pos[i] - pos[i-1] - 1``, below 255) and a varint
    stream for the rest of the gaps of 255 or more (byte 255 then ``gap - 255``)."""
    gaps = np.diff(idx, prepend=-1) - 1
    big = gaps >= ESCAPE
    small = np.minimum(gaps, ESCAPE).astype(np.uint8)
    return small, (varint_encode(gaps[big] - ESCAPE) if big.any() else b"")


def decode_positions(small: np.ndarray, extra: bytes, numel: int, where: str) -> np.ndarray:
    """Inverse of :func:`encode_positions`; every position must lie below ``numel``."""
    gaps = small.astype(np.int64)
    big = small == ESCAPE
    nbig = int(np.count_nonzero(big))
    if nbig:
        gaps[big] = varint_decode(extra, nbig, where) + ESCAPE
    elif extra:
        raise SyncFormatError(f"{where}: {len(extra)} stray bytes in the position stream (damaged)")
    idx: np.ndarray = np.cumsum(gaps + 1) - 1
    if idx.shape[0] and int(idx[-1]) >= numel:
        raise SyncFormatError(f"{where}: a position lies beyond the tensor's {numel} elements (damaged)")
    return idx
