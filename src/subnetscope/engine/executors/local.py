"""The pass in this process: on the calling thread (``serial``) or on a pool of threads (``threads``).

Units are handed to the pool in row order with at most ``4 × jobs`` in flight, and partials are merged on
the calling thread as they complete, so peak memory is ``jobs × inputs × chunk`` bytes plus the in-flight
partials, whatever the model size.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, ClassVar

from ...io.reader import FileHandles
from ...progress import progress_bar
from ..job import Job, Reducer, units
from ..worker import UnitRunner
from .base import check_jobs, default_jobs


def run_local(job: Job, jobs: int) -> list[list[Any]]:
    """Run ``job`` here with ``jobs`` threads (1: on the calling thread)."""
    chunk = job.chunk
    with FileHandles() as handles, progress_bar(job.nbytes, job.desc, enabled=job.progress, unit="B") as bar:
        runner = UnitRunner(job, handles, chunk)
        red = Reducer(job, chunk, bar)
        if jobs <= 1:
            for u in units(job.rows, chunk):
                i, nbytes, partials = runner.run(u)
                red.add(i, 1, nbytes, partials)
            return red.ordered()
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix=f"subnetscope-{job.desc}") as ex:
            inflight: set[Future[tuple[int, int, list[Any]]]] = set()
            try:
                for u in units(job.rows, chunk):
                    inflight.add(ex.submit(runner.run, u))
                    if len(inflight) >= jobs * 4:
                        done, inflight = wait(inflight, return_when=FIRST_COMPLETED)
                        for f in done:
                            i, nbytes, partials = f.result()
                            red.add(i, 1, nbytes, partials)
                for f in inflight:
                    i, nbytes, partials = f.result()
                    red.add(i, 1, nbytes, partials)
            except BaseException:
                for f in inflight:
                    f.cancel()
                raise
        return red.ordered()


@dataclass
class SerialExecutor:
    """The read loop on the calling thread."""

    name: ClassVar[str] = "serial"

    def run(self, job: Job) -> list[list[Any]]:
        """See :class:`~subnetscope.engine.executors.base.Executor`."""
        return run_local(job, 1)


@dataclass
class ThreadExecutor:
    """``jobs`` threads of this process (default: the CPUs, at most 8)."""

    jobs: int | None = None
    name: ClassVar[str] = "threads"

    def __post_init__(self) -> None:
        check_jobs(self.jobs)

    def run(self, job: Job) -> list[list[Any]]:
        """See :class:`~subnetscope.engine.executors.base.Executor`."""
        return run_local(job, self.jobs or default_jobs())
