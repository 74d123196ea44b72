"""Running a job, resumably: the one place where a pass skips what a resume directory already holds.

:func:`run` hands a :class:`~subnetscope.engine.job.Job` to an executor; with a resume directory it first
drops the rows journaled there as finished, journals every row the pass finishes (from the driver, as it
finishes), and returns all rows' results in row order, finished and fresh together. The measure says what
its run is keyed on (``identity``) and how a row's result goes to JSON and back (``codec``); see
:mod:`subnetscope.engine.resume` for the directory's layout and its guarantees.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .job import Job, Row
from .resume import open_resume

if TYPE_CHECKING:
    from .executors.base import Executor


@dataclass(frozen=True)
class Codec:
    """How one row's results (one per consumer) are journaled: to JSON and back."""

    encode: Callable[[list[Any]], Any]
    decode: Callable[[Any], list[Any]]
    #: files a row's results point into, made durable before its journal line (e.g. spilled blobs)
    files: Callable[[list[Any]], Iterable[str | os.PathLike[str]]] | None = None


def run(
    job: Job,
    executor: Executor,
    resume: str | os.PathLike[str] | None = None,
    identity: dict[str, Any] | None = None,
    codec: Codec | None = None,
) -> list[list[Any]]:
    """Every row's results, in row order; with ``resume``, finished rows come from its journal."""
    if resume is None:
        return executor.run(job)
    if identity is None or codec is None:
        raise ValueError("a resumable run needs its identity and a codec")
    state = open_resume(resume, identity, {r.name: r.numel for r in job.rows}, codec.decode)
    try:
        todo = [r for r in job.rows if r.name not in state.done]
        inner = job.on_row_done

        def done(row: Row, results: list[Any]) -> None:
            files = codec.files(results) if codec.files is not None else ()
            state.record(row.name, codec.encode(results), results, durable=files)
            if inner is not None:
                inner(row, results)

        fresh = executor.run(dataclasses.replace(job, rows=todo, on_row_done=done)) if todo else []
        by_name = {r.name: res for r, res in zip(todo, fresh)}
        return [by_name[r.name] if r.name in by_name else state.done[r.name] for r in job.rows]
    finally:
        state.close()
