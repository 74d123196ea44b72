"""The one read loop: a unit of work is read from every input of its row and handed to every consumer.

Each thread owns one :class:`~subnetscope.io.reader.ChunkReader` per input (zero-copy windows of the page
cache, see :mod:`subnetscope.io.reader`); file descriptors are shared by the threads of a process. Every
executor runs units through :class:`UnitRunner`: threads one unit at a time, process and Ray workers a
group of units folded per row before they report.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from ..io.reader import ChunkReader, FileHandles
from .job import Job, Row, Unit, fold_of


class UnitRunner:
    """Runs units of one job in this process (thread-safe; one set of readers per thread)."""

    def __init__(self, job: Job, handles: FileHandles, chunk: int) -> None:
        self.job = job
        self.handles = handles
        self.chunk = chunk
        self.width = max((len(r.infos) for r in job.rows), default=0)
        self._local = threading.local()
        self._folds = [fold_of(c) for c in job.consumers]

    def _readers(self) -> list[ChunkReader]:
        rs: list[ChunkReader] | None = getattr(self._local, "readers", None)
        if rs is None:
            rs = self._local.readers = [ChunkReader(self.handles, self.chunk * 8) for _ in range(self.width)]
        return rs

    def _chunk(self, row: Row, start: int, count: int) -> list[Any]:
        readers = self._readers()
        arrays = []
        for r, info in enumerate(row.infos):
            first, n = row.extent(r, start, count)
            arrays.append(readers[r].read(info, first, n))
        return [c.chunk(row, start, count, arrays) for c in self.job.consumers]

    def run(self, unit: Unit) -> tuple[int, int, list[Any]]:
        """``(row position, bytes read, one partial per consumer)`` of one unit (an ordered row's unit is
        read chunk by chunk, in order, and folded)."""
        i, start, count = unit
        row = self.job.rows[i]
        partials = self._chunk(row, start, min(count, self.chunk))
        for s in range(start + self.chunk, start + count, self.chunk):
            more = self._chunk(row, s, min(self.chunk, start + count - s))
            partials = [f(row, p, q) for f, p, q in zip(self._folds, partials, more)]
        return i, row.bytes_of(start, count), partials

    def run_group(self, group: Iterable[Unit]) -> list[tuple[int, int, int, list[Any]]]:
        """Every unit of ``group``, folded per row: ``(row position, chunks, bytes, states)`` per row."""
        out: dict[int, list[Any]] = {}
        for unit in group:
            i, nbytes, partials = self.run(unit)
            got = out.get(i)
            if got is None:
                out[i] = [i, 1, nbytes, partials]
                continue
            row = self.job.rows[i]
            got[1] += 1
            got[2] += nbytes
            got[3] = [f(row, s, p) for f, s, p in zip(self._folds, got[3], partials)]
        return [(i, c, b, list(s)) for i, c, b, s in out.values()]
