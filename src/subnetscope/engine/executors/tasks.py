"""Tasks: what a process or Ray worker gets (a contiguous run of units) and what it sends back.

A pass's units (chunks of rows, in row order) are cut into contiguous runs of about equal bytes: several
runs per worker, handed out as workers finish, balance the load while each worker still reads long
stretches of the files; a run holds at most ``max_elements`` elements per input, which bounds what a
worker returns (a run's mask bits are ``max_elements / 8`` bytes). A row may span several tasks: its
partial states are merged on the driver like any other partials. Tasks carry *paths*, not data, with each
file's size on the driver, which the worker checks before reading (a node that sees another file under
the same path fails clearly instead of reading garbage).
"""

from __future__ import annotations

import copy
import importlib
import os
import resource
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ...errors import CheckpointFormatError, SubnetscopeError
from ...io.reader import FileHandles
from ..job import Job, Reducer, Unit, units
from ..worker import UnitRunner

G = TypeVar("G")

#: task size bounds (elements per input): big enough to amortise a task, small enough to balance and to
#: keep what a task returns small
MIN_TASK_ELEMENTS = 1 << 23
MAX_TASK_ELEMENTS = 1 << 27
#: tasks per worker when the caller does not size them
TASKS_PER_WORKER = 4


@dataclass(frozen=True)
class Task:
    """A contiguous run of units, with the files it reads and their sizes on the driver."""

    index: int
    units: tuple[Unit, ...]
    files: tuple[tuple[str, int], ...]
    nbytes: int
    label: str  #: the first row's name, for messages

    @property
    def elements(self) -> int:
        """Elements read per input."""
        return sum(u[2] for u in self.units)

    def describe(self) -> str:
        """For messages: which rows."""
        rows = len({u[0] for u in self.units})
        more = f" and {rows - 1} more" if rows > 1 else ""
        return f"task {self.index}: {self.label}{more}"


@dataclass
class TaskResult:
    """What a worker sends back: per row ``(position, chunks, bytes, states)``, or an error."""

    index: int
    rows: list[tuple[int, int, int, list[Any]]] = field(default_factory=list)
    error: tuple[str, str, str, str | None] | None = (
        None  #: (module, class, message, hint) of a SubnetscopeError
    )
    worker: str = ""
    maxrss_kib: int = 0
    seconds: float = 0.0


def contiguous_groups(items: Sequence[G], weights: Sequence[int], groups: int) -> list[list[G]]:
    """``items`` cut, in order, into at most ``groups`` runs of about equal total weight (none empty)."""
    if len(items) != len(weights):
        raise ValueError("one weight per item")
    total = sum(weights)
    out: list[list[G]] = []
    cur: list[G] = []
    acc = 0
    for item, w in zip(items, weights):
        cur.append(item)
        acc += w
        if acc * groups >= total * (len(out) + 1) and len(out) < groups - 1:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def make_tasks(job: Job, chunk: int, workers: int, max_elements: int | None = None) -> list[Task]:
    """The job's units cut into tasks: ``TASKS_PER_WORKER`` per worker, or more so that none holds more
    than ``max_elements`` (default ``MAX_TASK_ELEMENTS``) elements per input."""
    todo = list(units(job.rows, chunk))
    per = [u[2] for u in todo]
    cap = max(chunk, max_elements or MAX_TASK_ELEMENTS)
    n = max(TASKS_PER_WORKER * workers, -(-sum(per) // cap))
    if max_elements is None:
        n = min(n, max(1, -(-sum(per) // MIN_TASK_ELEMENTS)), len(todo)) or 1
    groups = contiguous_groups(todo, [max(1, c) for c in per], n)
    sizes: dict[str, int] = {}
    tasks = []
    for k, g in enumerate(groups):
        files = sorted({str(info.path) for i, _, _ in g for info in job.rows[i].infos})
        for f in files:
            if f not in sizes:
                try:
                    sizes[f] = os.path.getsize(f)
                except OSError as e:
                    raise CheckpointFormatError(
                        f"{f}: cannot stat ({e.strerror})", "check the file"
                    ) from None
        nbytes = sum(job.rows[i].bytes_of(s, c) for i, s, c in g)
        tasks.append(Task(k, tuple(g), tuple((f, sizes[f]) for f in files), nbytes, job.rows[g[0][0]].name))
    return tasks


def check_files(files: Sequence[tuple[str, int]]) -> None:
    """Every file of a task is here, with the size the driver saw."""
    host = socket.gethostname()
    for path, size in files:
        try:
            got = os.path.getsize(path)
        except OSError:
            raise CheckpointFormatError(
                f"{path}: not found on worker node {host}",
                "every node must see the checkpoint at the same path: use a shared filesystem, or download "
                "the same revision into each node's Hugging Face cache",
            ) from None
        if got != size:
            raise CheckpointFormatError(
                f"{path}: is {got} bytes on worker node {host} but {size} on the driver",
                "the nodes hold different files under this path: sync them (same revision everywhere)",
            )


def run_task(job: Job, task: Task, chunk: int, runner: UnitRunner | None = None) -> TaskResult:
    """Run one task here (a worker process or a Ray task): its units in order, folded per row."""
    t0 = time.perf_counter()
    res = TaskResult(task.index, worker=f"{socket.gethostname()}:{os.getpid()}")
    try:
        check_files(task.files)
        if runner is not None:
            res.rows = runner.run_group(task.units)
        else:
            with FileHandles() as handles:
                res.rows = UnitRunner(job, handles, chunk).run_group(task.units)
    except SubnetscopeError as e:
        res.error = (type(e).__module__, type(e).__qualname__, e.message, e.hint)
    res.seconds = time.perf_counter() - t0
    res.maxrss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return res


def raise_remote(err: tuple[str, str, str, str | None]) -> None:
    """Raise, on the driver, the typed error a worker reported."""
    module, name, message, hint = err
    cls: type[SubnetscopeError] = SubnetscopeError
    try:
        found = getattr(importlib.import_module(module), name)
        if isinstance(found, type) and issubclass(found, SubnetscopeError):
            cls = found
    except (ImportError, AttributeError):
        pass
    try:
        exc = cls(message, hint)
    except TypeError:
        exc = SubnetscopeError(message, hint)
    raise exc


def add_result(red: Reducer, res: TaskResult, copy_states: bool = False) -> None:
    """Merge a finished task's per-row states into the driver's reduce (its typed error raised instead);
    ``copy_states`` for states that arrive read-only (Ray's object store)."""
    if res.error is not None:
        raise_remote(res.error)
    for i, chunks, nbytes, states in copy.deepcopy(res.rows) if copy_states else res.rows:
        red.add(i, chunks, nbytes, states)


def worker_job(job: Job) -> Job:
    """The part of ``job`` a worker needs (no driver callbacks, no progress bar)."""
    return Job(job.rows, list(job.consumers), job.chunk_elements, job.desc)
