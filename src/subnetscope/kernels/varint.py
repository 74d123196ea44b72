"""LEB128 varints of non-negative integers, vectorised in numpy."""

from __future__ import annotations

import numpy as np

from ..errors import DeltaFormatError

#: at most this many bytes per varint (positions are below 2**35)
MAX_VARINT = 5


def varint_sizes(values: np.ndarray) -> np.ndarray:
    """Bytes of the LEB128 encoding of each (non-negative) value."""
    v = values.astype(np.uint64, copy=False)
    nb = np.ones(v.shape[0], dtype=np.int64)
    for j in range(1, MAX_VARINT):
        nb += v >= np.uint64(1 << (7 * j))
    return nb


def varint_encode(values: np.ndarray) -> bytes:
    """LEB128 encoding of non-negative integers below ``2**35``, vectorised."""
    v = values.astype(np.uint64, copy=False)
    if v.size == 0:
        return b""
    nb = varint_sizes(v)
    ends = np.cumsum(nb)
    starts = ends - nb
    out = np.empty(int(ends[-1]), dtype=np.uint8)
    for j in range(int(nb.max())):
        sel = np.flatnonzero(nb > j) if j else None
        vs = v if sel is None else v[sel]
        pos = starts + j if sel is None else starts[sel] + j
        more = (nb > j + 1) if sel is None else (nb[sel] > j + 1)
        byte = ((vs >> np.uint64(7 * j)) & np.uint64(0x7F)).astype(np.uint8)
        out[pos] = byte | (more.astype(np.uint8) << 7)
    return out.tobytes()


def varint_decode(buf: bytes, count: int, where: str) -> np.ndarray:
    """Inverse of :func:`varint_encode`; exactly ``count`` values must fill ``buf``."""
    if count == 0:
        if buf:
            raise DeltaFormatError(f"{where}: {len(buf)} stray position bytes", "re-export the delta")
        return np.zeros(0, dtype=np.int64)
    b = np.frombuffer(buf, dtype=np.uint8)
    last = (b & 0x80) == 0
    ends = np.flatnonzero(last)
    if ends.size != count or not last[-1]:
        raise DeltaFormatError(
            f"{where}: position gaps hold {ends.size} values, the manifest says {count} (damaged)",
            "re-export the delta",
        )
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    if int(lengths.max()) > MAX_VARINT:
        raise DeltaFormatError(
            f"{where}: a position gap is longer than {MAX_VARINT} bytes (damaged)", "re-export the delta"
        )
    which = np.repeat(np.arange(count), lengths)
    shift = (np.arange(b.size) - starts[which]) * 7
    contrib = (b & 0x7F).astype(np.int64) << shift
    out: np.ndarray = np.add.reduceat(contrib, starts)
    return out
