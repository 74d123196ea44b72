"""What a streaming pass is: rows of tensors, consumers of their chunks, and the driver-side reduce.

A *row* is one tensor across the R inputs of a pass (R = 2 for ``compare``: base and target; K + 1 or
K + 2 for ``series``: INIT, the checkpoints, and the final one). Every row is read in chunks of the same
element range from all of its inputs; each *consumer* sees every chunk once, on a worker, and returns a
small partial result. Partials are folded into one state per row and finished on the driver, in any order
of completion, so the result never depends on the executor, the number of workers, or how the work was
cut (tested for every command and executor).

The consumer contract (:class:`Consumer`):

- ``chunk(row, start, count, arrays)``, on a worker: ``arrays[r]`` holds the raw bits of elements
  ``[start, start + count)`` of input ``r`` (valid only during the call; shorter where that input has fewer
  elements, and packed bytes, 1 bit an element, for an input marked ``packed``); returns a partial.
- ``merge(row, state, partial)``, on the driver: fold a partial into the row's state (None at first).
  ``partial`` may also be the folded state of several chunks from one worker, so ``merge`` must be
  associative: states and partials are the same kind of value.
- ``fold(row, state, partial)`` (optional), on a worker that runs many chunks before it reports (process
  and Ray workers): like ``merge`` but without driver-side effects; defaults to ``merge``. A consumer that
  writes to a driver-side sink (the mask file) does it in ``merge`` and only collects in ``fold``.
- ``finish(row, state)``, on the driver once the row's last chunk is merged: the row's result.

An *ordered* row (``Row.ordered``) is one unit of work: its chunks go to ``chunk`` in order, on one thread,
with nothing else in between on that thread, so a consumer may keep running state for it (a sha256 of the
bytes) in a thread-local until its last chunk. Rows that need no order are cut into independent chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..io.safetensors_header import TensorInfo


@dataclass(frozen=True)
class Row:
    """One tensor across the inputs of a pass."""

    index: int  #: position in the pass (results come back in this order)
    name: str
    infos: tuple[TensorInfo, ...]  #: where its bytes are, one per input
    numel: int  #: elements of the row (each input is read over its leading ``numel`` elements, or fewer)
    payload: Any = None  #: the measure's own description of the row (e.g. a compare ``Pair``)
    ordered: bool = False  #: its chunks go to the consumers in order, on one thread (see the module docs)
    packed: tuple[bool, ...] = ()  #: per input: it holds packed bits (1 per element, little bit order)
    #: bytes of work of a row whose consumer does its own I/O (the engine reads no input for it): what
    #: progress counts and the ``auto`` policy weighs for it (None: the bytes the engine reads)
    work: int | None = None

    @property
    def nbytes(self) -> int:
        """Bytes read for this row, all inputs together."""
        return self.bytes_of(0, self.numel)

    def is_packed(self, r: int) -> bool:
        """Whether input ``r`` holds packed bits."""
        return r < len(self.packed) and self.packed[r]

    def extent(self, r: int, start: int, count: int) -> tuple[int, int]:
        """The stored elements of input ``r`` that hold row elements ``[start, start + count)``."""
        if self.is_packed(r):
            first, last = start // 8, (start + count + 7) // 8
        else:
            first, last = start, start + count
        n = self.infos[r].numel
        return min(first, n), max(0, min(last, n) - min(first, n))

    def bytes_of(self, start: int, count: int) -> int:
        """Bytes read for row elements ``[start, start + count)``, all inputs together (or its share of
        ``work``)."""
        if self.work is not None:
            return self.work if count >= self.numel else self.work * count // max(1, self.numel)
        return sum(self.extent(r, start, count)[1] * i.dtype.itemsize for r, i in enumerate(self.infos))


class Consumer(Protocol):
    """Something computed from every chunk of a pass (see the module docs)."""

    def chunk(self, row: Row, start: int, count: int, arrays: Sequence[np.ndarray]) -> Any:
        """Partial result of one chunk (on a worker)."""

    def merge(self, row: Row, state: Any, partial: Any) -> Any:
        """Fold ``partial`` into ``state`` (on the driver; ``state`` is None at first)."""

    def finish(self, row: Row, state: Any) -> Any:
        """The row's result (on the driver)."""


@dataclass
class Job:
    """One pass: rows, consumers, chunking, and what the driver does with each finished row."""

    rows: list[Row]
    consumers: Sequence[Consumer]
    chunk_elements: int
    desc: str = "pass"  #: progress bar label and what error messages call the pass
    progress: bool = False
    #: called on the driver with a finished row and its results (one per consumer), e.g. a resume journal
    on_row_done: Callable[[Row, list[Any]], None] | None = None
    #: chunk size for worker processes, when the measure prefers larger maps there (None: ``chunk_elements``)
    process_chunk_elements: int | None = None

    @property
    def chunk(self) -> int:
        """Elements per chunk, a multiple of 8 (so packed mask bits start on a byte)."""
        return _chunk_of(self.chunk_elements)

    @property
    def worker_chunk(self) -> int:
        """Elements per chunk in worker processes and Ray tasks (``process_chunk_elements`` when set)."""
        return _chunk_of(self.process_chunk_elements or self.chunk_elements)

    @property
    def nbytes(self) -> int:
        """Bytes the pass reads."""
        return sum(r.nbytes for r in self.rows)

    def chunks_of(self, row: Row, chunk: int | None = None) -> int:
        """How many units ``row`` is read in (an empty or ordered row has one, so it gets finished)."""
        if row.ordered:
            return 1
        c = chunk or self.chunk
        return max(1, -(-row.numel // c))


def _chunk_of(elements: int) -> int:
    return max(8, elements - elements % 8)


#: a work unit: (row position in ``Job.rows``, first element, element count)
Unit = tuple[int, int, int]


def units(rows: Sequence[Row], chunk: int) -> Iterator[Unit]:
    """Every chunk of every row, in row order (an empty row yields one empty unit, an ordered row one
    unit for all of it)."""
    for i, r in enumerate(rows):
        if r.numel == 0 or r.ordered:
            yield i, 0, r.numel
            continue
        for s in range(0, r.numel, chunk):
            yield i, s, min(chunk, r.numel - s)


def fold_of(c: Consumer) -> Callable[[Row, Any, Any], Any]:
    """The worker-side fold of ``c`` (its ``fold`` if it has one, else ``merge``)."""
    f: Callable[[Row, Any, Any], Any] = getattr(c, "fold", c.merge)
    return f


@dataclass
class Reducer:
    """Driver side of every executor: fold partials per row, finish rows as they complete, keep order."""

    job: Job
    chunk: int
    bar: Any
    states: dict[int, list[Any]] = field(default_factory=dict)
    remaining: dict[int, int] = field(default_factory=dict)
    results: dict[int, list[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.job.consumers)
        for i, r in enumerate(self.job.rows):
            self.states[i] = [None] * n
            self.remaining[i] = self.job.chunks_of(r, self.chunk)

    def add(self, i: int, chunks: int, nbytes: int, partials: Sequence[Any]) -> None:
        """Merge the partials of ``chunks`` chunks of row ``i`` (``nbytes`` read for them)."""
        row = self.job.rows[i]
        st = self.states[i]
        for k, (c, part) in enumerate(zip(self.job.consumers, partials)):
            st[k] = c.merge(row, st[k], part)
        self.bar.update(nbytes)
        self.remaining[i] -= chunks
        if self.remaining[i] == 0:
            del self.remaining[i]
            res = [c.finish(row, s) for c, s in zip(self.job.consumers, self.states.pop(i))]
            self.results[i] = res
            if self.job.on_row_done is not None:
                self.job.on_row_done(row, res)
        elif self.remaining[i] < 0:  # pragma: no cover - an executor bug, never a user error
            raise RuntimeError(f"row {row.name!r} got more chunks than it has")

    def ordered(self) -> list[list[Any]]:
        """Results of every row, in row order."""
        if self.remaining:  # pragma: no cover - guards the executors' invariant
            i = next(iter(self.remaining))
            raise RuntimeError(f"{len(self.remaining)} row(s) unfinished, e.g. {self.job.rows[i].name!r}")
        return [self.results[i] for i in range(len(self.job.rows))]
