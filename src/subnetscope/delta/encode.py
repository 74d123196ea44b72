"""Encoding one chunk: which positions changed (bitmap or varint gaps) and the new values' raw bits.

Positions are stored as whichever is smaller: a bitmap (one bit per element, little bit order) or the
gaps between consecutive changed positions as LEB128 varints (``gap = pos[i] - pos[i-1] - 1``, the first
relative to the chunk start). A chunk whose sparse form would not be smaller than its raw bits is stored
whole (``all``). Values are the target's raw bits; before zstd their bytes are split into planes (all
first bytes, then all second bytes, ...), which puts the low-entropy sign/exponent bytes together.
Each blob is zstd-compressed only when that saves at least :data:`MIN_SAVING` of it.

Everything here is numpy (which, like zstd, releases the GIL), so chunks encode in parallel on threads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import zstandard

from ..errors import DeltaFormatError
from ..kernels import delta as dk
from ..kernels.varint import MAX_VARINT, varint_decode, varint_encode, varint_sizes

__all__ = ["MAX_VARINT", "varint_decode", "varint_encode", "varint_sizes"]

#: keep a zstd blob only when it is at most this fraction of the raw one
MIN_SAVING = 0.97

_local = threading.local()


#: at levels up to this one, matches shorter than :data:`FAST_MIN_MATCH` bytes are not searched for
FAST_LEVEL = 1
FAST_MIN_MATCH = 7
FAST_HASH_LOG = 7


def compression_params(level: int) -> zstandard.ZstdCompressionParameters:
    """zstd's parameters for ``level``; at the fast levels (``<= FAST_LEVEL``) tuned for weight bytes.

    Weight bytes hold few long repeats: what zstd saves on them is the entropy coding of the
    sign/exponent plane. Not hunting for short matches (min_match 7, a 128-entry hash table) compresses
    that plane 2-2.5x faster than plain level 1 and about 1 % smaller (measured on bf16 and fp32 planes);
    long repeats (a constant tensor) are still found. Higher levels keep zstd's own parameters.
    """
    if level > FAST_LEVEL:
        return zstandard.ZstdCompressionParameters.from_level(level, write_content_size=True)
    return zstandard.ZstdCompressionParameters.from_level(
        level,
        write_content_size=True,
        min_match=FAST_MIN_MATCH,
        hash_log=FAST_HASH_LOG,
        strategy=zstandard.STRATEGY_FAST,
    )


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] | None = getattr(_local, "c", None)
    if cache is None:
        cache = _local.c = {}
    c = cache.get(level)
    if c is None:
        c = cache[level] = zstandard.ZstdCompressor(compression_params=compression_params(level))
    return c


def _scratch(key: str, dtype: np.dtype, n: int) -> np.ndarray:
    """A per-thread buffer of at least ``n`` elements of ``dtype`` (first ``n`` returned)."""
    bufs: dict[str, np.ndarray] | None = getattr(_local, "bufs", None)
    if bufs is None:
        bufs = _local.bufs = {}
    k = f"{key}:{dtype.str}"
    buf = bufs.get(k)
    if buf is None or buf.shape[0] < n:
        buf = bufs[k] = np.empty(n, dtype=dtype)
    return buf[:n]


def _decompressor() -> zstandard.ZstdDecompressor:
    d: zstandard.ZstdDecompressor | None = getattr(_local, "d", None)
    if d is None:
        d = _local.d = zstandard.ZstdDecompressor()
    return d


# -- values: byte planes -------------------------------------------------------------------------------------


def to_planes(values: np.ndarray) -> bytes:
    """Raw bits split into byte planes: byte 0 of every value, then byte 1, ..."""
    return _planes(values).tobytes()


def _planes(values: np.ndarray) -> np.ndarray:
    """:func:`to_planes` as a uint8 array: one shift per plane (a byte transpose does not vectorise)."""
    size, k = values.dtype.itemsize, values.shape[0]
    if size == 1:
        return values.view(np.uint8)
    out = np.empty(size * k, dtype=np.uint8)
    for p in range(size):
        np.right_shift(values, 8 * p, out=out[p * k : (p + 1) * k], casting="unsafe")
    return out


def from_planes(raw: bytes, bits_dtype: np.dtype, count: int) -> np.ndarray:
    """Inverse of :func:`to_planes` (shifts and ors, which vectorise; a byte transpose does not)."""
    size = bits_dtype.itemsize
    arr = np.frombuffer(raw, dtype=np.uint8)
    if size == 1:
        return arr.view(bits_dtype)
    out = arr[:count].astype(bits_dtype)
    for p in range(1, size):
        out |= arr[p * count : (p + 1) * count].astype(bits_dtype) << bits_dtype.type(8 * p)
    return out


# -- one chunk ----------------------------------------------------------------------------------------------


@dataclass
class EncodedChunk:
    """The blobs of one chunk, ready to be written."""

    changed: int
    positions: str  #: ``bitmap`` | ``gaps`` | ``all``
    pos_codec: str
    pos_blob: bytes
    val_codec: str
    val_blob: bytes


def _pack(raw: bytes | memoryview, level: int) -> tuple[str, bytes]:
    """zstd of ``raw`` when that saves enough, else a copy of ``raw`` (which may be a reused buffer)."""
    if len(raw) >= 64:
        c = _compressor(level).compress(raw)
        if len(c) <= MIN_SAVING * len(raw):
            return "zstd", c
    return "raw", bytes(raw)


def _pack_values(values: np.ndarray, level: int) -> tuple[str, bytes]:
    if values.nbytes >= 64:  # the raw bytes are only copied out when zstd does not pay
        c = _compressor(level).compress(_planes(values).data)
        if len(c) <= MIN_SAVING * values.nbytes:
            return "zstd", c
    return "raw", values.tobytes()


def encode_whole(target: np.ndarray, level: int) -> EncodedChunk:
    """A chunk stored whole: every value, no positions."""
    codec, blob = _pack_values(target, level)
    return EncodedChunk(int(target.shape[0]), "all", "raw", b"", codec, blob)


def encode_chunk(
    base: np.ndarray, target: np.ndarray, level: int, backend: str | None = None
) -> EncodedChunk | None:
    """Encode the bit differences of one chunk (raw bits, same dtype); None when nothing changed."""
    count = int(target.shape[0])
    size = target.dtype.itemsize
    bitmap = _scratch("bitmap", np.dtype(np.uint8), (count + 7) // 8)
    values = _scratch("values", target.dtype, count)
    k = dk.diff_pack(base, target, bitmap, values, backend)
    if k == 0:
        return None
    gaps = b""
    gap_bytes = bitmap.shape[0] + 1
    if k < bitmap.shape[0]:  # every varint is at least one byte: gaps can only win below one change per byte
        gaps = dk.bitmap_varint(bitmap, count, k, backend)
        gap_bytes = len(gaps)
    pos_bytes = min(bitmap.shape[0], gap_bytes)
    if pos_bytes + k * size >= count * size:
        return encode_whole(target, level)
    pos_raw: bytes | memoryview
    if gap_bytes < bitmap.shape[0]:
        kind, pos_raw = "gaps", gaps
    else:
        kind, pos_raw = "bitmap", bitmap.data
    pcodec, pblob = _pack(pos_raw, level)
    vcodec, vblob = _pack_values(values[:k], level)
    return EncodedChunk(k, kind, pcodec, pblob, vcodec, vblob)


def _unpack(codec: str, blob: bytes, limit: int, exact: bool, where: str) -> bytes:
    """The raw bytes of a blob: at most ``limit`` of them, exactly ``limit`` when ``exact``."""
    if codec == "raw":
        raw = blob
    else:
        try:
            size = zstandard.frame_content_size(blob)
        except zstandard.ZstdError:
            size = -2
        if size < 0 or size > limit:
            raise DeltaFormatError(
                f"{where}: zstd frame is damaged (no valid content size)", "re-export the delta"
            )
        try:
            raw = _decompressor().decompress(blob, max_output_size=limit)
        except zstandard.ZstdError as e:
            raise DeltaFormatError(f"{where}: zstd data is damaged ({e})", "re-export the delta") from None
    if len(raw) > limit or (exact and len(raw) != limit):
        raise DeltaFormatError(
            f"{where}: holds {len(raw)} bytes, expected {limit if exact else f'at most {limit}'} (damaged)",
            "re-export the delta",
        )
    return raw


def decode_values(codec: str, blob: bytes, bits_dtype: np.dtype, count: int, where: str) -> np.ndarray:
    """The ``count`` raw-bit values of a values blob."""
    raw = _unpack(codec, blob, count * bits_dtype.itemsize, True, where)
    if codec == "raw":
        return np.frombuffer(raw, dtype=bits_dtype)
    return from_planes(raw, bits_dtype, count)


def decode_positions(
    kind: str, codec: str, blob: bytes, count: int, changed: int, where: str
) -> np.ndarray | None:
    """Where the values go in the chunk: a boolean mask of ``count`` (bitmap) or ascending int64 positions
    (gaps); either indexes a numpy array or a torch tensor. None for a chunk stored whole."""
    if kind == "all":
        return None
    if kind == "bitmap":
        raw = _unpack(codec, blob, (count + 7) // 8, True, where)
        bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")
        mask = bits[:count].view(bool)
        if int(np.count_nonzero(bits[count:])) or int(np.count_nonzero(mask)) != changed:
            raise DeltaFormatError(
                f"{where}: the position bitmap does not hold {changed} positions in {count} (damaged)",
                "re-export the delta",
            )
        return mask
    raw = _unpack(codec, blob, changed * MAX_VARINT, False, where)
    gaps = varint_decode(raw, changed, where)
    idx: np.ndarray = np.cumsum(gaps + 1) - 1
    if int(idx[-1]) >= count:
        raise DeltaFormatError(
            f"{where}: a position lies beyond the chunk's {count} elements (damaged)", "re-export the delta"
        )
    return idx


_KERNEL_ERRORS = {
    dk.ERR_VALUES: "holds more positions than values",
    dk.ERR_POSITION: "has a position beyond the chunk",
    dk.ERR_VARINT: "has a malformed position gap",
}


def patch_chunk(
    piece: np.ndarray,
    kind: str,
    codec: str,
    blob: bytes,
    values: np.ndarray,
    where: str,
    backend: str | None = None,
) -> None:
    """Write ``values`` into ``piece`` (the base's bits of one chunk, writable) at the positions of a
    ``bitmap`` or ``gaps`` blob, in one pass; every value must be used exactly once."""
    changed = int(values.shape[0])
    count = int(piece.shape[0])
    if kind == "bitmap":
        raw = _unpack(codec, blob, (count + 7) // 8, True, where)
        got = dk.scatter_bitmap(piece, np.frombuffer(raw, dtype=np.uint8), values, backend)
    else:
        raw = _unpack(codec, blob, changed * MAX_VARINT, False, where)
        got = dk.scatter_varint(piece, np.frombuffer(raw, dtype=np.uint8), values, backend)
    if got != changed:
        what = _KERNEL_ERRORS.get(got, f"holds {got} positions, the manifest says {changed}")
        raise DeltaFormatError(f"{where}: the {kind} position blob {what} (damaged)", "re-export the delta")
