"""What every executor shares: the protocol, the worker count, the one "auto" policy, and the factory.

Every executor runs a :class:`~subnetscope.engine.job.Job` and returns the same per-row results in row
order, so a report never depends on which one ran it (tested for every command: equal JSON, equal mask
and delta bytes).

- ``serial``: the read loop on the calling thread.
- ``threads``: ``jobs`` threads of this process (the compiled kernels release the GIL). The library's default.
- ``processes``: ``jobs`` forked worker processes (Linux; spawned elsewhere) over *tasks*, contiguous runs of
  chunks of equal size (see :mod:`.tasks`). A dead worker breaks the pool: a fresh pool runs every
  unfinished task again, up to ``max_retries`` times; finished tasks are never run twice.
- ``ray``: the same tasks as Ray tasks, on a cluster or a local instance (see :mod:`.ray`).
- ``auto`` (the command line's default): ``processes`` for a pass of at least ``AUTO_PROCESS_BYTES`` with
  several jobs where workers can be forked, else ``threads``. Threads of one process share its memory map,
  and the kernel serialises their mapping of file pages (measured on the 1B pair with 2 jobs: 0.81-0.84 s
  on threads, 0.55-0.65 s on forked processes); separate processes do not contend.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from typing import Any, ClassVar, Protocol

from ...errors import SubnetscopeError, UsageError
from ..job import Job

EXECUTORS = ("auto", "serial", "threads", "processes", "ray")
#: ``auto`` forks worker processes for passes reading at least this many bytes (below, threads start faster)
AUTO_PROCESS_BYTES = 1 << 30


class ExecutorError(SubnetscopeError):
    """An executor that cannot run (Ray missing or unreachable) or a task that failed for good."""


class Executor(Protocol):
    """Runs a pass; returns every row's results (one per consumer) in row order."""

    name: ClassVar[str]

    def run(self, job: Job) -> list[list[Any]]:
        """Run ``job``."""


def default_jobs() -> int:
    """Workers used when none is given: the CPUs, at most 8."""
    return max(1, min(os.cpu_count() or 1, 8))


def check_jobs(jobs: int | None) -> int | None:
    """``jobs`` if it is None or a positive int, else a :class:`~subnetscope.errors.UsageError`."""
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise UsageError(f"jobs={jobs!r} is not a positive number of workers", "use jobs=None or jobs >= 1")
    return jobs


def start_method() -> str:
    """``SUBNETSCOPE_MP_START`` if set, else ``fork`` on Linux (workers start at once, with the kernels
    already imported; they run only numpy and C code, never torch), else ``spawn``."""
    env = os.environ.get("SUBNETSCOPE_MP_START", "").strip()
    if env:
        return env
    return "fork" if can_fork() else "spawn"


def can_fork() -> bool:
    """Whether workers can be forked here (Linux; elsewhere fork is unsafe or missing)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()
