"""The O(changed elements) loops of sync, fused: encode (positions, value codes, hash change) on the sender,
decode (positions; values and hash change) on the receiver.

numba runs them when available (``SUBNETSCOPE_NO_NUMBA=1`` turns it off); the numpy functions of
:mod:`subnetscope.sync.bits` and :mod:`subnetscope.sync.hashing` compute the same bytes and are the
reference the tests hold the jitted loops to. The O(n) comparison itself is the delta format's C kernel
(:func:`subnetscope.kernels.delta.diff_pack`), or torch on a GPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..kernels.jit import AVAILABLE as _NUMBA
from ..kernels.jit import LazyJit
from . import bits as B
from .errors import SyncFormatError
from .hashing import _C1, _C2, GOLDEN, add, delta

ERR_POSITION, ERR_VARINT, ERR_STRAY, ERR_RANGE = -2, -3, -4, -5


def _mix_j(u, i):  # pragma: no cover - jitted
    z = u + np.uint64(i) * np.uint64(GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_C1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_C2)
    return z ^ (z >> np.uint64(31))


def _encode_nb(idx, pos, old, new, width, floating, pos8, posx, codes, esc):  # pragma: no cover - jitted
    full = np.uint64((1 << width) - 1)
    sign = np.uint64(1 << (width - 1))
    prev = -1
    nx = 0
    ne = 0
    hd = np.uint64(0)
    for j in range(idx.shape[0]):
        i = idx[j]
        g = pos[j] - prev - 1
        prev = pos[j]
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


def _rank_take_nb(words, a, values, idx, old, rank, bkt, cnt, shift, mask):  # pragma: no cover - jitted
    n = a.shape[0]
    k = 0
    for j in range(words.shape[0]):
        w = words[j]
        lo = j << 6
        hi = min(lo + 64, n)
        if w == 0:
            for i in range(lo, hi):
                cnt[(np.int64(a[i]) >> shift) & mask] += 1
            continue
        for i in range(lo, hi):
            b = (np.int64(a[i]) >> shift) & mask
            if (w >> np.uint64(i - lo)) & np.uint64(1):
                idx[k] = i
                old[k] = a[i]
                rank[k] = cnt[b]
                bkt[k] = b
                a[i] = values[k]
                k += 1
            cnt[b] += 1
    return k


def _scan_nb(a, start, cnt, targets, ptr, end, shift, mask, idx, old):  # pragma: no cover - jitted
    found = 0
    for i in range(a.shape[0]):
        b = (np.int64(a[i]) >> shift) & mask
        p = ptr[b]
        if p < end[b] and targets[p] == cnt[b]:
            idx[p] = start + i
            old[p] = a[i]
            ptr[b] = p + 1
            found += 1
        cnt[b] += 1
    return found


mix_j: Any = None


_jit = LazyJit(
    globals(),
    kernels={"encode": _encode_nb, "positions": _positions_nb, "values": _values_nb, "take": _take_nb,
             "rank_take": _rank_take_nb, "scan": _scan_nb},
    inline={"mix_j": _mix_j},
)  # fmt: skip


def take(bitmap: np.ndarray, a: np.ndarray, values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """After :func:`~subnetscope.kernels.delta.diff_pack`: the ``k`` positions of the set bits of
    ``bitmap`` and the old values of ``a`` there, and ``a`` set to ``values[:k]`` there (the snapshot
    update), in one loop over the set bits, 64 bits at a time. ``bitmap`` must hold a multiple of 8 bytes
    (zero past the ``len(a)`` bits)."""
    if _NUMBA:
        idx = np.empty(k, dtype=np.int64)
        old = np.empty(k, dtype=a.dtype)
        got = _jit().take(bitmap.view(np.uint64), a, values, idx, old)
        assert got == k
        return idx, old
    idx = np.flatnonzero(np.unpackbits(bitmap, count=a.shape[0], bitorder="little"))
    old = a[idx]
    a[idx] = values[:k]
    return idx, old


#: exponent field of the float formats whose positions are coded by exponent: dtype name → (shift, mask)
EXPONENT = {"bfloat16": (7, 0xFF), "float16": (10, 0x1F), "float32": (23, 0xFF)}


def rank_take(
    bitmap: np.ndarray, a: np.ndarray, values: np.ndarray, k: int, cnt: np.ndarray, dtype: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`take`, plus for each changed element its exponent bucket (of the old value) and its rank
    among the elements of that bucket (counting from ``cnt``, the per-bucket counts of the elements before
    ``a``; updated to include ``a``). Returns ``(positions, old values, ranks, buckets)``."""
    shift, mask = EXPONENT[dtype]
    idx = np.empty(k, dtype=np.int64)
    rank = np.empty(k, dtype=np.int64)
    bkt = np.empty(k, dtype=np.int64)
    if _NUMBA:
        old = np.empty(k, dtype=a.dtype)
        got = _jit().rank_take(bitmap.view(np.uint64), a, values, idx, old, rank, bkt, cnt, shift, mask)
        assert got == k
        return idx, old, rank, bkt
    b = (a.astype(np.int64) >> shift) & mask
    idx = np.flatnonzero(np.unpackbits(bitmap, count=a.shape[0], bitorder="little"))
    order = np.argsort(b, kind="stable")
    r = np.empty(a.shape[0], dtype=np.int64)
    sb = b[order]
    first = np.searchsorted(sb, sb, side="left")
    r[order] = np.arange(a.shape[0]) - first
    rank = r[idx] + cnt[b[idx]]
    cnt += np.bincount(b, minlength=cnt.shape[0])
    old = a[idx]
    a[idx] = values[:k]
    return idx, old, rank, b[idx]


def bucket_order(idx: np.ndarray, rank: np.ndarray, bkt: np.ndarray) -> tuple[np.ndarray, np.ndarray, bytes]:
    """The coded order of changed elements by exponent: ``(permutation, pseudo positions, bucket table)``.

    Elements are grouped by bucket (ascending), in flat order within a bucket. Pseudo positions make the
    gaps those between ranks within a bucket, each bucket's first gap its first rank: bucket ``b``'s
    pseudo positions are ``rank + base_b`` with ``base_b`` one past the previous bucket's last pseudo
    position. The table lists, per bucket with changes, the bucket's distance to the previous one and its
    number of changes (LEB128 varints, preceded by the number of buckets).
    """
    order = np.argsort(bkt, kind="stable")
    b, r = bkt[order], rank[order]
    starts = np.flatnonzero(np.diff(b, prepend=-1))
    ends = np.append(starts[1:], b.shape[0])
    base = np.zeros(starts.shape[0], dtype=np.int64)
    if starts.shape[0] > 1:
        base[1:] = np.cumsum(r[ends[:-1] - 1] + 1)
    pos = r + np.repeat(base, ends - starts)
    ids = b[starts]
    table = np.concatenate(
        [[starts.shape[0]], np.column_stack([np.diff(ids, prepend=0), ends - starts]).reshape(-1)]
    )
    return order, pos, B.varint_encode(table.astype(np.int64))


def read_table(table: bytes, changed: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of the table of :func:`bucket_order`: ``(bucket ids, changes per bucket)``, validated."""
    raw = np.frombuffer(table, dtype=np.uint8)
    nvals = int(np.count_nonzero(raw < 0x80))
    vals = B.varint_decode(table, nvals, where) if nvals else np.zeros(0, dtype=np.int64)
    if vals.shape[0] == 0 or vals.shape[0] != 1 + 2 * int(vals[0]):
        raise SyncFormatError(f"{where}: the exponent bucket table is malformed (damaged)")
    pairs = vals[1:].reshape(-1, 2)
    ids = np.cumsum(pairs[:, 0])
    counts = pairs[:, 1]
    if int(counts.sum()) != changed or (ids.shape[0] and (int(ids[-1]) > 0xFF or np.any(counts == 0)
                                                          or (ids.shape[0] > 1 and np.any(pairs[1:, 0] == 0)))):  # fmt: skip
        raise SyncFormatError(
            f"{where}: the exponent bucket table does not add up to {changed} changes (damaged)"
        )
    return ids, counts


def scan_targets(
    pos: np.ndarray, ids: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From decoded pseudo positions and the bucket table: ``(ranks, first slot per bucket, end slot per
    bucket)``, the slots being indices into the coded order (arrays of 256 for the scan)."""
    ends = np.cumsum(counts)
    starts = ends - counts
    base = np.zeros(ids.shape[0], dtype=np.int64)
    if ids.shape[0] > 1:
        base[1:] = pos[ends[:-1] - 1] + 1
    ranks = pos - np.repeat(base, counts)
    ptr = np.zeros(256, dtype=np.int64)
    end = np.zeros(256, dtype=np.int64)
    ptr[ids] = starts
    end[ids] = ends
    return ranks, ptr, end


def scan(
    blocks_iter: Any, dtype: str, ranks: np.ndarray, ptr: np.ndarray, end: np.ndarray, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """Find the changed elements of a tensor coded by exponent: scan its old values (``(start, uint
    array)`` blocks in flat order), counting elements per bucket; returns ``(positions, old values)`` in the
    coded order. Raises :class:`SyncFormatError` if some rank is not found (beyond its bucket's elements)."""
    shift, mask = EXPONENT[dtype]
    k = ranks.shape[0]
    idx = np.full(k, -1, dtype=np.int64)
    old: np.ndarray | None = None
    cnt = np.zeros(256, dtype=np.int64)
    p = ptr.copy()
    found = 0
    jit = _NUMBA
    for start, a in blocks_iter:
        if old is None:
            old = np.empty(k, dtype=a.dtype)
        if jit:
            found += int(_jit().scan(a, start, cnt, ranks, p, end, shift, mask, idx, old))
        else:
            b = (a.astype(np.int64) >> shift) & mask
            for bb in np.unique(b):
                at = np.flatnonzero(b == bb)
                lo, hi = int(p[bb]), int(end[bb])
                want = ranks[lo:hi] - cnt[bb]
                sel = want[(want >= 0) & (want < at.shape[0])]
                if sel.shape[0]:
                    slots = np.arange(lo, lo + sel.shape[0])
                    idx[slots] = start + at[sel]
                    old[slots] = a[at[sel]]
                    p[bb] += sel.shape[0]
                    found += sel.shape[0]
                cnt[bb] += at.shape[0]
    if found != k or old is None:
        raise SyncFormatError(
            f"{where}: {k - found} coded position(s) lie beyond their exponent bucket (damaged)"
        )
    return idx, old


def use_numba(itemsize: int) -> bool:
    """Whether the jitted loops handle this element size here (8-byte dtypes always use numpy)."""
    return itemsize <= 4 and _NUMBA


def encode(idx: np.ndarray, old: np.ndarray, new: np.ndarray, itemsize: int, floating: bool, h: int,
           jit: bool | None = None, pos: np.ndarray | None = None) -> tuple[bytes, bytes, bytes, bytes, int]:  # fmt: skip
    """``(gap bytes, extra positions, code bytes, escapes, new hash)`` of changed elements: positions
    ``idx`` (int64), raw bits ``old``/``new`` (unsigned arrays of ``itemsize``), hash ``h`` before. The
    gaps are those of ``pos`` (ascending; default ``idx``), the coded positions."""
    pos = idx if pos is None else pos
    if jit if jit is not None else use_numba(itemsize):
        k = idx.shape[0]
        pos8 = np.empty(k, dtype=np.uint8)
        codes = np.empty(k, dtype=np.uint8)
        posx = np.empty(5 * k, dtype=np.uint8)
        esc = np.empty(5 * k, dtype=np.uint8)
        nx, ne, hd = _jit().encode(idx, pos, old, new, 8 * itemsize, floating, pos8, posx, codes, esc)
        return pos8.tobytes(), posx[:nx].tobytes(), codes.tobytes(), esc[:ne].tobytes(), add(h, int(hd))
    o, n = old.astype(np.uint64), new.astype(np.uint64)
    small, extra = B.encode_positions(pos)
    c, e = B.encode_values(o, n, itemsize, floating)
    return small.tobytes(), extra, c.tobytes(), e, add(h, delta(idx, o, n))


def positions(small: np.ndarray, extra: bytes, numel: int, where: str, jit: bool | None = None) -> np.ndarray:
    """Flat positions from gap bytes and extra varints (validated against ``numel``)."""
    if not (jit if jit is not None else _NUMBA):
        return B.decode_positions(small, extra, numel, where)
    idx = np.empty(small.shape[0], dtype=np.int64)
    err = _jit().positions(small, np.frombuffer(extra, dtype=np.uint8), numel, idx)
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
        err, hd = _jit().values(
            idx, old, codes, np.frombuffer(esc, dtype=np.uint8), 8 * itemsize, floating, new
        )
        if err:
            what = {ERR_VARINT: "a value escape is malformed", ERR_RANGE: "a value step is out of range",
                    ERR_STRAY: "the escape stream has stray bytes"}[err]  # fmt: skip
            raise SyncFormatError(f"{where}: {what} (damaged)")
        return new, add(h, int(hd))
    o = old.astype(np.uint64)
    n = B.decode_values(o, codes, esc, itemsize, floating, where)
    return B.from_unsigned(n, itemsize), add(h, delta(idx, o, n))
