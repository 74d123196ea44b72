"""Per-chunk loops of the delta: gather the changed values on export, scatter them on apply.

numpy's boolean gather and scatter cost ~4 ns per element; these loops cost ~1 ns per element (a
branch-free compaction) or only touch the changed elements (a loop over the set bits of the bitmap when
changes are rare). They run in C (``csrc/delta.c``) when the extension is built, else in numba, else in
numpy (the backends of :data:`~.registry.BACKENDS`); the compiled ones release the GIL, so worker
threads run in parallel. All three are tested against each other and against a brute-force oracle. The
scatter loops validate their input (positions in range, value counts, varint lengths), so a damaged delta
is an error, never an out-of-bounds write.
"""

from __future__ import annotations

import numpy as np

from . import native
from .jit import LazyJit
from .registry import pick_backend
from .varint import MAX_VARINT, varint_decode, varint_encode

#: error codes of the scatter loops (negative; a non-negative result is the number of values used)
ERR_VALUES, ERR_POSITION, ERR_VARINT = -1, -2, -3


def _bit_tables() -> tuple[np.ndarray, np.ndarray]:
    """Per byte value: the positions of its set bits (padded) and how many there are."""
    pos = np.zeros((256, 8), dtype=np.int64)
    cnt = np.zeros(256, dtype=np.int64)
    for v in range(256):
        bits = [t for t in range(8) if v >> t & 1]
        cnt[v] = len(bits)
        pos[v, : len(bits)] = bits
    return pos, cnt


LUT_POS, LUT_CNT = _bit_tables()


def _compact_nb(b: np.ndarray, ne: np.ndarray, values: np.ndarray) -> int:  # pragma: no cover - jitted
    k = 0
    for i in range(b.shape[0]):
        values[k] = b[i]
        k += ne[i]
    return k


def _gather_lut_nb(
    b: np.ndarray, bitmap: np.ndarray, values: np.ndarray, lut_pos: np.ndarray, lut_cnt: np.ndarray
) -> int:  # pragma: no cover - jitted
    n = b.shape[0]
    k = 0
    for j in range(bitmap.shape[0]):
        byte = bitmap[j]
        if byte == 0:
            continue
        base = j << 3
        for t in range(lut_cnt[byte]):
            i = base + lut_pos[byte, t]
            if i < n:
                values[k] = b[i]
                k += 1
    return k


def _bitmap_varint_nb(
    bitmap: np.ndarray, n: int, out: np.ndarray, lut_pos: np.ndarray, lut_cnt: np.ndarray
) -> int:  # pragma: no cover - jitted
    prev = -1
    w = 0
    for j in range(bitmap.shape[0]):
        byte = bitmap[j]
        if byte == 0:
            continue
        base = j << 3
        for t in range(lut_cnt[byte]):
            i = base + lut_pos[byte, t]
            if i >= n:
                return w
            if w + MAX_VARINT > out.shape[0]:
                return -1
            g = i - prev - 1
            prev = i
            while g >= 0x80:
                out[w] = (g & 0x7F) | 0x80
                w += 1
                g >>= 7
            out[w] = g
            w += 1
    return w


def _scatter_bitmap_nb(
    out: np.ndarray, bitmap: np.ndarray, values: np.ndarray
) -> int:  # pragma: no cover - jitted
    n = out.shape[0]
    m = values.shape[0]
    if m == 0:
        return ERR_VALUES
    k = 0
    for i in range(n):
        bit = (np.int64(bitmap[i >> 3]) >> (i & 7)) & 1
        v = values[min(k, m - 1)]
        out[i] = v if bit else out[i]
        k += bit
    if k > m:
        return ERR_VALUES
    return k


def _scatter_varint_nb(
    out: np.ndarray, buf: np.ndarray, values: np.ndarray
) -> int:  # pragma: no cover - jitted
    n = out.shape[0]
    m = values.shape[0]
    prev = -1
    k = 0
    g = 0
    shift = 0
    for j in range(buf.shape[0]):
        byte = np.int64(buf[j])
        g |= (byte & 0x7F) << shift
        shift += 7
        if byte & 0x80:
            if shift >= 7 * MAX_VARINT:
                return ERR_VARINT
            continue
        p = prev + g + 1
        if p >= n:
            return ERR_POSITION
        if k >= m:
            return ERR_VALUES
        out[p] = values[k]
        k += 1
        prev = p
        g = 0
        shift = 0
    if shift:
        return ERR_VARINT
    return k


#: the numba loops (compiled on first use)
_jit = LazyJit(
    globals(),
    kernels={
        "compact": _compact_nb,
        "gather": _gather_lut_nb,
        "bitmap_varint": _bitmap_varint_nb,
        "scatter_bitmap": _scatter_bitmap_nb,
        "scatter_varint": _scatter_varint_nb,
    },
)


def _backend(backend: str | None) -> str:
    return pick_backend(backend, kernel="delta")


def diff_pack(
    a: np.ndarray, b: np.ndarray, bitmap: np.ndarray, values: np.ndarray, backend: str | None = None
) -> int:
    """Compare raw bits ``a`` and ``b``: fill ``bitmap`` (packed, little bit order, ``ceil(n/8)`` bytes)
    with where they differ and ``values[:k]`` with ``b`` there, in order; return ``k``.

    C: one pass for the bitmap, then a loop over the set bits when changes are rare, else a branch-free
    compaction. numba and numpy: the comparison and the bitmap in numpy, then the same gather (numba) or a
    boolean gather (numpy). ``backend``: one of :data:`~.registry.BACKENDS` (all agree).
    """
    be = _backend(backend)
    if be == "native":
        return native.diff_pack(a, b, bitmap, values)
    ne = a != b
    k = int(np.count_nonzero(ne))
    bitmap[:] = np.packbits(ne, bitorder="little")
    if be == "numpy":
        values[:k] = b[ne]
    elif 8 * k < b.shape[0]:
        _jit().gather(b, bitmap, values, LUT_POS, LUT_CNT)
    else:
        _jit().compact(b, ne.view(np.uint8), values)
    return k


def bitmap_varint(bitmap: np.ndarray, n: int, k: int, backend: str | None = None) -> bytes:
    """The LEB128 gaps (``pos[i] - pos[i-1] - 1``) of the ``k`` set bits of ``bitmap`` below ``n``."""
    be = _backend(backend)
    if be != "numpy":
        out = np.empty(k * MAX_VARINT, dtype=np.uint8)
        if be == "native":
            w = native.bitmap_varint(bitmap, n, out)
        else:
            w = int(_jit().bitmap_varint(bitmap, n, out, LUT_POS, LUT_CNT))
        if w < 0:
            raise ValueError("bitmap holds more than k set bits")
        return out[:w].tobytes()
    idx = np.flatnonzero(np.unpackbits(bitmap, count=n, bitorder="little"))
    return varint_encode(np.diff(idx, prepend=-1) - 1)


def scatter_bitmap(
    out: np.ndarray, bitmap: np.ndarray, values: np.ndarray, backend: str | None = None
) -> int:
    """``out[bit i set] = values`` in order; the number of set bits (or :data:`ERR_VALUES` if more than
    ``len(values)``). ``bitmap`` must hold at least ``ceil(len(out) / 8)`` bytes."""
    assert bitmap.shape[0] >= (out.shape[0] + 7) // 8
    be = _backend(backend)
    if be == "native":
        return native.scatter_bitmap(out, bitmap, values)
    if be == "numba":
        return int(_jit().scatter_bitmap(out, bitmap, values))
    mask = np.unpackbits(bitmap, count=out.shape[0], bitorder="little").view(bool)
    k = int(np.count_nonzero(mask))
    if k > values.shape[0] or values.shape[0] == 0:
        return ERR_VALUES
    out[mask] = values[:k]
    return k


def scatter_varint(out: np.ndarray, buf: np.ndarray, values: np.ndarray, backend: str | None = None) -> int:
    """Decode LEB128 gaps from ``buf`` and set ``out[pos] = values`` in order; the number of values used,
    or a negative error code (:data:`ERR_VALUES`, :data:`ERR_POSITION`, :data:`ERR_VARINT`)."""
    be = _backend(backend)
    if be == "native":
        return native.scatter_varint(out, buf, values)
    if be == "numba":
        return int(_jit().scatter_varint(out, buf, values))
    last = (buf & 0x80) == 0
    count = int(np.count_nonzero(last))
    if buf.size and not last[-1]:
        return ERR_VARINT
    if count > values.shape[0]:
        return ERR_VALUES
    if count == 0:
        return 0
    try:
        gaps = varint_decode(buf.tobytes(), count, "")
    except Exception:
        return ERR_VARINT
    idx = np.cumsum(gaps + 1) - 1
    if int(idx[-1]) >= out.shape[0]:
        return ERR_POSITION
    out[idx] = values[:count]
    return count
