"""The patch: what one sync step carries, and its wire format.

Layout (all integers little-endian)::

    offset  size  field
    0       8     magic b"\\x93SNSYNC" + format version (1 byte, currently 1)
    8       8     u64 total length of the patch in bytes, trailer included
    16      4     u32 length H of the header
    20      H     header: zstd frame of a UTF-8 JSON object (see below)
    20+H    ...   body: the streams listed in the header, back to back, each stored raw or as one zstd frame
    end-32  32    sha256 of every byte before it

The header holds ``kind`` (``diff`` or ``full``), ``stream`` (the sender's random id), ``version``,
``parent`` (the version a diff applies on; null for a full patch), ``parent_digest`` (the whole-model
digest of that state), ``digest`` (of the new state), ``aliases`` (tied names → the name they share
storage with), ``meta`` (the caller's JSON, e.g. the training step), ``tensors`` (one row per tensor of
the sender: ``[name, dtype, shape, hash, changed, extra_position_bytes, escape_bytes, positions,
table_bytes]``, ``hash`` being 16 hex digits of :mod:`subnetscope.sync.hashing`, ``positions`` 0 (flat)
or 1 (by exponent)) and ``streams`` (``[codec, stored_bytes, raw_bytes]``, codec 0 = raw, 1 = zstd).

A diff has five streams, each the concatenation over the tensors in row order: gap bytes (one per
changed element), extra position varints, value code bytes (one per changed element), value escapes
(see :mod:`subnetscope.sync.bits`), and exponent bucket tables (see
:func:`subnetscope.sync.kernels.bucket_order`). A tensor coded by exponent lists its changed elements
grouped by the exponent of their old value, in flat order within a group, and its gaps count the
elements of the same group in between; its codes follow the same order. A full patch has one stream per tensor: its raw bits split into byte
planes (:func:`subnetscope.delta.encode.to_planes`).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

from ..io.atomic import atomic_file
from .bits import BY_NAME
from .errors import SyncFormatError

MAGIC = b"\x93SNSYNC"
FORMAT = 1
_PRE = struct.Struct("<7sBQI")
TRAILER = 32
#: the largest header (decompressed) a patch may declare
MAX_HEADER = 256 << 20
RAW, ZSTD = 0, 1
#: position codings: gaps in flat order; gaps of ranks within exponent buckets of the old values
FLAT, BY_EXPONENT = 0, 1
#: zstd level of the streams (on uniform positions levels 1-19 agree within 1 %; 19 saves 5-15 % on real patches)
LEVEL = 3
#: keep a zstd frame only when it is at most this fraction of the raw bytes
MIN_SAVING = 0.97

_HINT = "re-send it (a full patch from sender.full() restarts any receiver)"


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of the sender's state, as a patch records it."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    hash: str  #: 16 hex digits: the tensor's hash in the new state
    changed: int  #: elements this patch sets (all of them in a full patch)
    extra_positions: int = 0  #: bytes of this tensor in the extra position stream
    escapes: int = 0  #: bytes of this tensor in the value escape stream
    positions: int = FLAT  #: how positions are coded: :data:`FLAT` or :data:`BY_EXPONENT`
    table: int = 0  #: bytes of this tensor in the exponent bucket table stream

    @property
    def numel(self) -> int:
        """Number of elements."""
        n = 1
        for s in self.shape:
            n *= s
        return n

    def row(self) -> list[Any]:
        return [self.name, self.dtype, list(self.shape), self.hash, self.changed, self.extra_positions,
                self.escapes, self.positions, self.table]  # fmt: skip


@dataclass(frozen=True)
class PatchStats:
    """Sizes of a patch."""

    tensors: int  #: tensors with at least one changed element
    changed: int  #: changed elements
    numel: int  #: elements of the whole state
    bytes: int  #: length of the wire format

    @property
    def density(self) -> float:
        """Changed elements over all elements."""
        return self.changed / self.numel if self.numel else 0.0

    @property
    def bytes_per_changed(self) -> float:
        """Wire bytes per changed element (inf for an empty patch)."""
        return self.bytes / self.changed if self.changed else float("inf")

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {"tensors": self.tensors, "changed": self.changed, "numel": self.numel, "bytes": self.bytes,
                "density": self.density}  # fmt: skip


def pack(raw: bytes, level: int = LEVEL) -> tuple[int, bytes]:
    """``(codec, stored)``: zstd when that saves at least 3 %, else the raw bytes."""
    if len(raw) >= 64:
        c = zstandard.ZstdCompressor(level=level, write_content_size=True).compress(raw)
        if len(c) <= MIN_SAVING * len(raw):
            return ZSTD, c
    return RAW, raw


def _unpack(codec: int, stored: bytes, raw_len: int, where: str) -> bytes:
    if codec == RAW:
        out = stored
    else:
        try:
            out = zstandard.ZstdDecompressor().decompress(stored, max_output_size=max(raw_len, 1))
        except zstandard.ZstdError as e:
            raise SyncFormatError(f"{where}: zstd data is damaged ({e})", _HINT) from None
    if len(out) != raw_len:
        raise SyncFormatError(f"{where}: holds {len(out)} bytes, the header says {raw_len} (damaged)", _HINT)
    return out


@dataclass
class Patch:
    """One step of a sync stream: the tensors' changes since ``parent`` (or, ``kind="full"``, all values).

    Build one with :meth:`Sender.diff` / :meth:`Sender.full`, or read one with :meth:`from_bytes` /
    :meth:`load`; apply it with :meth:`Receiver.apply`.
    """

    kind: str  #: ``diff`` or ``full``
    stream: str  #: the sender's random id (a receiver follows one stream)
    version: int  #: the version of the state after this patch
    parent: int | None  #: the version a diff applies on (None for a full patch)
    parent_digest: str | None  #: whole-model digest of the parent state (None for a full patch)
    digest: str  #: whole-model digest of the new state
    tensors: list[TensorEntry]
    aliases: dict[str, str]  #: tied name → the name whose storage it shares
    streams: list[tuple[int, bytes, int]]  #: ``(codec, stored, raw_len)``
    meta: dict[str, Any] = field(default_factory=dict)
    _blob: bytes | None = field(default=None, repr=False)

    # -- sizes ------------------------------------------------------------------------------------------

    @property
    def stats(self) -> PatchStats:
        """Tensors touched, changed elements, density and wire bytes."""
        return PatchStats(
            tensors=sum(1 for t in self.tensors if t.changed),
            changed=sum(t.changed for t in self.tensors),
            numel=sum(t.numel for t in self.tensors),
            bytes=len(self.to_bytes()),
        )

    def changed_names(self) -> list[str]:
        """Names of the tensors with at least one changed element, in patch order."""
        return [t.name for t in self.tensors if t.changed]

    # -- wire format ------------------------------------------------------------------------------------

    def _header(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "kind": self.kind, "stream": self.stream, "version": self.version,
            "parent": self.parent, "parent_digest": self.parent_digest, "digest": self.digest,
            "aliases": self.aliases, "meta": self.meta, "tensors": [t.row() for t in self.tensors],
            "streams": [[c, len(s), n] for c, s, n in self.streams],
        }  # fmt: skip

    def to_bytes(self) -> bytes:
        """The wire format (see the module docstring); computed once."""
        if self._blob is None:
            head = json.dumps(self._header(), separators=(",", ":")).encode()
            head_z = zstandard.ZstdCompressor(level=LEVEL, write_content_size=True).compress(head)
            body = b"".join(s for _, s, _ in self.streams)
            total = _PRE.size + len(head_z) + len(body) + TRAILER
            pre = _PRE.pack(MAGIC, FORMAT, total, len(head_z))
            h = hashlib.sha256(pre)
            h.update(head_z)
            h.update(body)
            self._blob = b"".join((pre, head_z, body, h.digest()))
        return self._blob

    @classmethod
    def from_bytes(cls, blob: bytes | bytearray | memoryview, where: str = "patch") -> Patch:
        """Parse and check a patch: magic, length, sha256 and the header's consistency (values are checked
        when it is applied). Raises :class:`SyncFormatError`."""
        data = bytes(blob)
        if len(data) < _PRE.size + TRAILER:
            if data[: len(MAGIC)] != MAGIC[: len(data)]:
                raise SyncFormatError(f"{where}: is not a subnetscope sync patch (bad magic)", _HINT)
            raise SyncFormatError(f"{where}: is truncated ({len(data)} bytes)", _HINT)
        magic, fmt, total, hlen = _PRE.unpack_from(data)
        if magic != MAGIC:
            raise SyncFormatError(f"{where}: is not a subnetscope sync patch (bad magic)", _HINT)
        if fmt != FORMAT:
            raise SyncFormatError(
                f"{where}: is in sync format {fmt}; this subnetscope reads format {FORMAT}",
                "upgrade subnetscope on this side, or send from the same version",
            )
        if total < _PRE.size + TRAILER:
            raise SyncFormatError(f"{where}: declares a length of {total} bytes (damaged)", _HINT)
        if len(data) < total:
            raise SyncFormatError(f"{where}: is truncated ({len(data)} of {total} bytes)", _HINT)
        if len(data) > total:
            raise SyncFormatError(f"{where}: has {len(data) - total} trailing bytes after its end", _HINT)
        if hashlib.sha256(data[:-TRAILER]).digest() != data[-TRAILER:]:
            raise SyncFormatError(f"{where}: is damaged (its sha256 does not match its bytes)", _HINT)
        if _PRE.size + hlen + TRAILER > total:
            raise SyncFormatError(f"{where}: declares a {hlen}-byte header beyond its end (damaged)", _HINT)
        try:
            head = zstandard.ZstdDecompressor().decompress(
                data[_PRE.size : _PRE.size + hlen], max_output_size=MAX_HEADER
            )
            h = json.loads(head)
        except (zstandard.ZstdError, ValueError) as e:
            raise SyncFormatError(f"{where}: the header is not readable ({e})", _HINT) from None
        patch = _from_header(h, data[_PRE.size + hlen : -TRAILER], where)
        patch._blob = data
        return patch

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the wire format to ``path`` atomically; returns the path."""
        with atomic_file(path) as tmp:
            tmp.write_bytes(self.to_bytes())
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Patch:
        """Read a patch written by :meth:`save` (checked like :meth:`from_bytes`)."""
        p = Path(path)
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            from ..errors import InputNotFoundError

            raise InputNotFoundError(f"{p}: no such patch file", "check the path") from None
        return cls.from_bytes(data, str(p))

    # -- streams ----------------------------------------------------------------------------------------

    def raw_stream(self, i: int, where: str) -> bytes:
        """Stream ``i`` decompressed (checked against its declared length)."""
        codec, stored, n = self.streams[i]
        return _unpack(codec, stored, n, where)

    def diff_streams(
        self, where: str
    ) -> Iterator[tuple[TensorEntry, np.ndarray, bytes, np.ndarray, bytes, bytes]]:
        """Per tensor of a diff: ``(entry, gap bytes, extra position bytes, code bytes, escape bytes,
        bucket table bytes)``."""
        pos8, posx, codes, esc, table = (self.raw_stream(i, f"{where}: stream {i}") for i in range(5))
        p8 = np.frombuffer(pos8, dtype=np.uint8)
        cd = np.frombuffer(codes, dtype=np.uint8)
        a = x = e = b = 0
        for t in self.tensors:
            yield (t, p8[a : a + t.changed], posx[x : x + t.extra_positions], cd[a : a + t.changed],
                   esc[e : e + t.escapes], table[b : b + t.table])  # fmt: skip
            a += t.changed
            x += t.extra_positions
            e += t.escapes
            b += t.table


def _fail(where: str, what: str) -> SyncFormatError:
    return SyncFormatError(f"{where}: {what} (damaged or not written by subnetscope)", _HINT)


def _from_header(h: Any, body: bytes, where: str) -> Patch:
    """A :class:`Patch` from its parsed header and body, every field type- and size-checked."""
    if not isinstance(h, dict):
        raise _fail(where, "the header is not a JSON object")
    try:
        kind, stream, version = h["kind"], h["stream"], h["version"]
        parent, pdig, digest = h["parent"], h["parent_digest"], h["digest"]
        rows, streams, aliases, meta = h["tensors"], h["streams"], h["aliases"], h["meta"]
    except KeyError as e:
        raise _fail(where, f"the header has no {e.args[0]!r}") from None
    if kind not in ("diff", "full") or not isinstance(stream, str) or not isinstance(digest, str):
        raise _fail(where, "the header's kind, stream or digest is malformed")
    if not isinstance(version, int) or version < 0:
        raise _fail(where, "the header's version is not a non-negative integer")
    if kind == "diff" and (not isinstance(parent, int) or parent != version - 1 or not isinstance(pdig, str)):
        raise _fail(where, "a diff's parent must be its version minus one, with a parent digest")
    if kind == "full" and (parent is not None or pdig is not None):
        raise _fail(where, "a full patch has no parent")
    if not isinstance(aliases, dict) or not all(isinstance(v, str) for v in aliases.values()):
        raise _fail(where, "the header's aliases are malformed")
    if not isinstance(meta, dict) or not isinstance(rows, list) or not isinstance(streams, list):
        raise _fail(where, "the header's meta, tensors or streams are malformed")
    tensors: list[TensorEntry] = []
    for r in rows:
        if not (isinstance(r, list) and len(r) == 9 and r[7] in (FLAT, BY_EXPONENT) and isinstance(r[0], str) and r[1] in BY_NAME
                and isinstance(r[2], list) and all(isinstance(s, int) and s >= 0 for s in r[2])
                and isinstance(r[3], str) and len(r[3]) == 16
                and all(isinstance(v, int) and v >= 0 for v in r[4:])):  # fmt: skip
            raise _fail(where, f"tensor row {str(r)[:80]} is malformed")
        t = TensorEntry(r[0], r[1], tuple(r[2]), r[3], r[4], r[5], r[6], r[7], r[8])
        if t.changed > t.numel or (kind == "full" and t.changed != t.numel):
            raise _fail(where, f"tensor {t.name} claims {t.changed} changed of {t.numel} elements")
        tensors.append(t)
    if len({t.name for t in tensors}) != len(tensors):
        raise _fail(where, "a tensor is listed twice")
    want = 5 if kind == "diff" else len(tensors)
    if len(streams) != want or not all(
        isinstance(s, list)
        and len(s) == 3
        and s[0] in (RAW, ZSTD)
        and all(isinstance(v, int) and v >= 0 for v in s)
        for s in streams
    ):
        raise _fail(where, f"the header lists {len(streams)} malformed streams, expected {want}")
    if sum(s[1] for s in streams) != len(body):
        raise _fail(
            where, f"the streams add up to {sum(s[1] for s in streams)} bytes, the body has {len(body)}"
        )
    if kind == "diff":
        k = sum(t.changed for t in tensors)
        sizes = [k, sum(t.extra_positions for t in tensors), k, sum(t.escapes for t in tensors),
                 sum(t.table for t in tensors)]  # fmt: skip
        if [s[2] for s in streams] != sizes:
            raise _fail(where, "the stream sizes do not match the tensors' counts")
    else:
        for t, s in zip(tensors, streams):
            if s[2] != t.numel * _itemsize(t.dtype):
                raise _fail(where, f"the value stream of {t.name} has the wrong size")
    out: list[tuple[int, bytes, int]] = []
    off = 0
    for c, n, raw in streams:
        out.append((c, body[off : off + n], raw))
        off += n
    return Patch(kind, stream, version, parent, pdig, digest, tensors, dict(aliases), out, dict(meta))


def _itemsize(dtype: str) -> int:
    import torch

    return torch.empty((), dtype=BY_NAME[dtype]).element_size()
