"""Rebuilding TARGET's tensors from BASE and a delta, as an engine consumer (see :mod:`.apply`).

Every manifest tensor is one *ordered* row that the engine reads nothing for (the consumer reads the base
and the delta itself); its chunks reach :class:`Rebuilder` in order on one thread, which keeps the current
run of unchanged chunks in a thread-local and copies the whole run from the base file in the kernel
(``copy_file_range``) when a stored chunk or the tensor's end breaks it. A sparse chunk is read from the
base into a private buffer, patched and written; a chunk stored whole is decoded and written. Every piece
goes to its fixed offset in the pre-laid-out shards (:class:`~subnetscope.delta.shards.ShardWriter`), so
the output bytes do not depend on the executor or on the order tensors finish.

Forked workers write through the descriptors they inherit; a pickled copy (spawned processes, Ray tasks)
reopens the base, the delta's data files and the output shards by path, so on Ray every node must see
all three at the same path (a shared filesystem).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from math import gcd
from pathlib import Path
from typing import Any

import numpy as np

from ..dtypes import DTYPES
from ..engine.job import Row
from ..io.reader import ChunkReader, FileHandles
from .encode import decode_values, patch_chunk
from .format import Manifest
from .shards import ShardWriter
from .store import DataReader


def engine_chunk(chunk_elements: int) -> int:
    """Elements per engine chunk for a delta of ``chunk_elements``: the least multiple of it that is a
    multiple of 8 (the engine's chunks are), so every engine chunk holds whole delta chunks."""
    return chunk_elements * (8 // gcd(chunk_elements, 8))


class _Local(threading.local):
    pid = -1
    reader: ChunkReader | None = None
    bufs: dict[str, np.ndarray]
    records: dict[int, Any]
    run_start = 0
    run_end = 0


class Rebuilder:
    """The rebuild as an engine consumer: writes each tensor's bytes; its result is the tensor's shard name."""

    def __init__(self, manifest: Manifest, delta_dir: Path, writer: ShardWriter) -> None:
        self.m = manifest
        self.delta_dir = delta_dir
        self.writer = writer
        self.handles = FileHandles()
        self.reader = DataReader(delta_dir, manifest.files)
        self._local = _Local()

    def __getstate__(self) -> dict[str, Any]:
        return {"m": self.m, "delta_dir": self.delta_dir, "writer": self.writer}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["m"], state["delta_dir"], state["writer"])  # type: ignore[misc]

    def close(self) -> None:
        """Close the base and delta descriptors this process opened."""
        self.handles.close()
        self.reader.close()

    def _state(self) -> _Local:
        st = self._local
        if st.pid != os.getpid():  # first use on this thread, or a forked child's copy of its parent's
            st.pid = os.getpid()
            st.reader = ChunkReader(self.handles, self.m.chunk_elements * 8)
            st.bufs = {}
        return st

    def _flush(self, row: Row, st: _Local, size: int) -> None:
        if st.run_end > st.run_start:
            b = row.payload[1]
            n = (st.run_end - st.run_start) * size
            off = st.run_start * size
            self.writer.copy_from(row.name, off, self.handles.fd(b.path), b.start + off, n)
        st.run_start = st.run_end

    def chunk(self, row: Row, start: int, count: int, arrays: Sequence[np.ndarray]) -> int:
        """Rebuild the delta chunks of elements ``[start, start + count)``; bytes written when the row ends."""
        e, b = row.payload
        m = self.m
        st = self._state()
        bits = DTYPES[e.dtype].bits_dtype
        size = bits.itemsize
        if start == 0:
            st.records = {rec.index: rec for rec in e.chunks}
            st.run_start = st.run_end = 0
        ce = m.chunk_elements
        for i in range(start // ce, -(-(start + count) // ce)):
            s, c = m.chunk_span(e, i)
            if c == 0:
                continue
            rec = st.records.get(i)
            if rec is None:  # extend the run of copied chunks
                st.run_end = s + c
                continue
            self._flush(row, st, size)
            where = f"{m.path}: tensor {e.name!r} chunk {i}"
            pblob, vblob = self.reader.blobs(rec)
            values = decode_values(rec.val_codec, vblob, bits, rec.changed, where)
            if rec.positions == "all":
                piece = values
            else:
                buf = st.bufs.get(bits.str)
                if buf is None:
                    buf = st.bufs[bits.str] = np.empty(ce, dtype=bits)
                piece = buf[:c]
                assert st.reader is not None and b is not None
                np.copyto(piece, st.reader.read(b, s, c))  # reads are read-only views: patch a private copy
                patch_chunk(piece, rec.positions, rec.pos_codec, pblob, values, where)
            self.writer.write(e.name, s * size, np.ascontiguousarray(piece).data)
            st.run_start = st.run_end = s + c
        if start + count >= row.numel:
            self._flush(row, st, size)
            return int(e.nbytes)
        return 0

    def merge(self, row: Row, state: Any, partial: Any) -> int:
        """Bytes written so far."""
        return int(state or 0) + int(partial)

    def finish(self, row: Row, state: Any) -> str:
        """The shard file that holds the tensor."""
        return self.writer.shard_of(row.name)
