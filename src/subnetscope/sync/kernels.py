"""The O(changed elements) loops of sync, fused: encode (positions, value codes, hash change) on the sender,
decode (positions; values and hash change) on the receiver.

numba runs them when available (``SUBNETSCOPE_NO_NUMBA=1`` turns it off); the numpy functions of
:mod:`subnetscope.sync.bits` and :mod:`subnetscope.sync.hashing` compute the same bytes and are the
reference the tests hold the jitted loops to. The O(n) comparison itself is the delta format's C kernel
(:func:`subnetscope.delta.kernels.diff_pack`), or torch on a GPU.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..kernels import numba_enabled
from . import bits as B
from .errors import SyncFormatError
from .hashing import _C1, _C2, GOLDEN, add, delta

ERR_POSITION, ERR_VARINT, ERR_STRAY, ERR_RANGE = -2, -3, -4, -5


def _mix_j(u, i):  # pragma: no cover - jitted
    z = u + np.uint64(i) * np.uint64(GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_C1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_C2)
    return z ^ (z >> np.uint64(31))


def _encode_nb(idx, old, new, width, floating, pos8, posx, codes, esc):  # pragma: no cover - jitted
    full = np.uint64((1 << width) - 1)
    sign = np.uint64(1 << (width - 1))
    prev = -1
    nx = 0
    ne = 0
    hd = np.uint64(0)
    for j in range(idx.shape[0]):
        i = idx[j]
        g = i - prev - 1
        prev = i
        if g < 255:
            pos8[j] = g
        else:
            pos8[j] = 255
            r = g - 255
            while r >= 0x80:
                posx[nx] = (r & 0x7F) | 0x80
                nx += 1
                r >>= 7
            posx[nx] = r
            nx += 1
        o = np.uint64(old[j])
        n = np.uint64(new[j])
        hd += mix_j(n, i) - mix_j(o, i)
        if floating:
            ko = (o ^ full) if (o & sign) else (o | sign)
            kn = (n ^ full) if (n & sign) else (n | sign)
        else:
            ko = o
            kn = n
        st = (kn - ko) & full
        s = np.int64(st)
        if st >= sign:
            s = s - np.int64(full) - 1
        zz = np.uint64((s << 1) ^ (s >> 63))
        if zz <= 255:
            codes[j] = zz - np.uint64(1)
        else:
            codes[j] = 255
            r2 = zz - np.uint64(256)
            while r2 >= np.uint64(0x80):
                esc[ne] = (r2 & np.uint64(0x7F)) | np.uint64(0x80)
                ne += 1
                r2 >>= np.uint64(7)
            esc[ne] = r2
            ne += 1
    return nx, ne, hd


def _positions_nb(small, extra, numel, idx):  # pragma: no cover - jitted
    prev = -1
    x = 0
    for j in range(small.shape[0]):
        g = np.int64(small[j])
        if g == 255:
            v = np.int64(0)
            shift = 0
            while True:
                if x >= extra.shape[0] or shift >= 35:
                    return ERR_VARINT
                b = np.int64(extra[x])
                x += 1
                v |= (b & 0x7F) << shift
                shift += 7
                if b < 0x80:
                    break
            g = 255 + v
        p = prev + g + 1
        if p >= numel:
            return ERR_POSITION
        idx[j] = p
        prev = p
    if x != extra.shape[0]:
        return ERR_STRAY
    return 0


def _values_nb(idx, old, codes, esc, width, floating, new):  # pragma: no cover - jitted
    full = np.uint64((1 << width) - 1)
    sign = np.uint64(1 << (width - 1))
    x = 0
    hd = np.uint64(0)
    for j in range(codes.shape[0]):
        c = codes[j]
        if c < 255:
            zz = np.uint64(c) + np.uint64(1)
        else:
            v = np.uint64(0)
            shift = 0
            while True:
                if x >= esc.shape[0] or shift >= 35:
                    return ERR_VARINT, hd
                b = np.uint64(esc[x])
                x += 1
                v |= (b & np.uint64(0x7F)) << np.uint64(shift)
                shift += 7
                if b < np.uint64(0x80):
                    break
            zz = v + np.uint64(256)
            if zz > full:
                return ERR_RANGE, hd
        z = np.int64(zz)
        s = (z >> 1) ^ -(z & 1)
        o = np.uint64(old[j])
        ko = ((o ^ full) if (o & sign) else (o | sign)) if floating else o
        kn = (ko + np.uint64(s)) & full
        n = ((kn ^ sign) if (kn & sign) else (kn ^ full)) if floating else kn
        new[j] = n
        hd += mix_j(n, idx[j]) - mix_j(o, idx[j])
    if x != esc.shape[0]:
        return ERR_STRAY, hd
    return 0, hd


def _take_nb(words, a, values, idx, old):  # pragma: no cover - jitted
    k = 0
    one = np.uint64(1)
    for j in range(words.shape[0]):
        w = words[j]
        while w:
            low = w & (~w + one)
            x = low
            t = 0
            if x >= np.uint64(1 << 32):
                t += 32
                x >>= np.uint64(32)
            if x >= np.uint64(1 << 16):
                t += 16
                x >>= np.uint64(16)
            if x >= np.uint64(1 << 8):
                t += 8
                x >>= np.uint64(8)
            if x >= np.uint64(1 << 4):
                t += 4
                x >>= np.uint64(4)
            if x >= np.uint64(1 << 2):
                t += 2
                x >>= np.uint64(2)
            if x >= np.uint64(2):
                t += 1
            i = (j << 6) + t
            idx[k] = i
            old[k] = a[i]
            a[i] = values[k]
            k += 1
            w ^= low
    return k


mix_j: Any = None


@functools.cache
def _jit() -> tuple[Any, Any, Any, Any]:
    import numba

    global mix_j
    mix_j = numba.njit(inline="always")(_mix_j)
    k = numba.njit(nogil=True, cache=True, boundscheck=False)
    return k(_encode_nb), k(_positions_nb), k(_values_nb), k(_take_nb)


def take(bitmap: np.ndarray, a: np.ndarray, values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """After :func:`~subnetscope.delta.kernels.diff_pack`: the ``k`` positions of the set bits of
    ``bitmap`` and the old values of ``a`` there, and ``a`` set to ``values[:k]`` there (the snapshot
    update), in one loop over the set bits, 64 bits at a time. ``bitmap`` must hold a multiple of 8 bytes
    (zero past the ``len(a)`` bits)."""
    if numba_enabled():
        idx = np.empty(k, dtype=np.int64)
        old = np.empty(k, dtype=a.dtype)
        got = _jit()[3](bitmap.view(np.uint64), a, values, idx, old)
        assert got == k
        return idx, old
    idx = np.flatnonzero(np.unpackbits(bitmap, count=a.shape[0], bitorder="little"))
    old = a[idx]
    a[idx] = values[:k]
    return idx, old


def use_numba(itemsize: int) -> bool:
    """Whether the jitted loops handle this element size here (8-byte dtypes always use numpy)."""
    return itemsize <= 4 and numba_enabled()


def encode(idx: np.ndarray, old: np.ndarray, new: np.ndarray, itemsize: int, floating: bool, h: int,
           jit: bool | None = None) -> tuple[bytes, bytes, bytes, bytes, int]:  # fmt: skip
    """``(gap bytes, extra positions, code bytes, escapes, new hash)`` of changed elements: positions
    ``idx`` (ascending int64), raw bits ``old``/``new`` (unsigned arrays of ``itemsize``), hash ``h`` before."""
    if jit if jit is not None else use_numba(itemsize):
        k = idx.shape[0]
        pos8 = np.empty(k, dtype=np.uint8)
        codes = np.empty(k, dtype=np.uint8)
        posx = np.empty(5 * k, dtype=np.uint8)
        esc = np.empty(5 * k, dtype=np.uint8)
        nx, ne, hd = _jit()[0](idx, old, new, 8 * itemsize, floating, pos8, posx, codes, esc)
        return pos8.tobytes(), posx[:nx].tobytes(), codes.tobytes(), esc[:ne].tobytes(), add(h, int(hd))
    o, n = old.astype(np.uint64), new.astype(np.uint64)
    small, extra = B.encode_positions(idx)
    c, e = B.encode_values(o, n, itemsize, floating)
    return small.tobytes(), extra, c.tobytes(), e, add(h, delta(idx, o, n))


def positions(small: np.ndarray, extra: bytes, numel: int, where: str, jit: bool | None = None) -> np.ndarray:
    """Flat positions from gap bytes and extra varints (validated against ``numel``)."""
    if not (jit if jit is not None else numba_enabled()):
        return B.decode_positions(small, extra, numel, where)
    idx = np.empty(small.shape[0], dtype=np.int64)
    err = _jit()[1](small, np.frombuffer(extra, dtype=np.uint8), numel, idx)
    if err:
        what = {ERR_POSITION: f"a position lies beyond the tensor's {numel} elements",
                ERR_VARINT: "a position varint is malformed", ERR_STRAY: "the position stream has stray bytes"}[err]  # fmt: skip
        raise SyncFormatError(f"{where}: {what} (damaged)")
    return idx


def values(idx: np.ndarray, old: np.ndarray, codes: np.ndarray, esc: bytes, itemsize: int, floating: bool,
           h: int, where: str, jit: bool | None = None) -> tuple[np.ndarray, int]:  # fmt: skip
    """New raw bits (unsigned, ``itemsize``) from old ones, code bytes and escapes, and the new hash."""
    if jit if jit is not None else use_numba(itemsize):
        new = np.empty(codes.shape[0], dtype=old.dtype)
        err, hd = _jit()[2](idx, old, codes, np.frombuffer(esc, dtype=np.uint8), 8 * itemsize, floating, new)
        if err:
            what = {ERR_VARINT: "a value escape is malformed", ERR_RANGE: "a value step is out of range",
                    ERR_STRAY: "the escape stream has stray bytes"}[err]  # fmt: skip
            raise SyncFormatError(f"{where}: {what} (damaged)")
        return new, add(h, int(hd))
    o = old.astype(np.uint64)
    n = B.decode_values(o, codes, esc, itemsize, floating, where)
    return B.from_unsigned(n, itemsize), add(h, delta(idx, o, n))
