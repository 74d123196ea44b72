"""``processes``: local worker processes over tasks, with retries when a worker dies.

The job reaches the workers once, as the pool's initializer argument: inherited without pickling when the
pool forks (Linux; consumers may then hold closures and open files), pickled when it spawns. Only task
descriptions and small per-row states cross the process boundary afterwards.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ...errors import UsageError
from ...io.reader import FileHandles
from ...progress import progress_bar
from ..job import Job, Reducer
from ..worker import UnitRunner
from .base import ExecutorError, check_jobs, default_jobs, start_method
from .tasks import Task, TaskResult, add_result, make_tasks, run_task, worker_job

_WORKER: tuple[Job, int, UnitRunner] | None = None


def _die_with(parent: int) -> None:
    """Let the kernel kill this worker when the driver dies (SIGKILL, the OOM killer): otherwise a forked
    worker waits forever on a queue whose other end its siblings still hold open (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the driver died before the request took effect
        os._exit(1)


def _init(job: Job, chunk: int, parent: int) -> None:
    global _WORKER
    _die_with(parent)
    _WORKER = (job, chunk, UnitRunner(job, FileHandles(), chunk))


def _run(task: Task) -> TaskResult:
    assert _WORKER is not None
    job, chunk, runner = _WORKER
    return run_task(job, task, chunk, runner)


def warm(job: Job) -> None:
    """Let every consumer that can (a ``warm(rows)`` method) load its kernels in this process."""
    for c in job.consumers:
        w = getattr(c, "warm", None)
        if callable(w):
            w(job.rows)


def check_picklable(obj: Any, where: str) -> None:
    """A clear error when the consumers cannot be sent to ``where`` workers."""
    try:
        pickle.dumps(obj)
    except Exception as e:
        raise UsageError(
            f"the pass's per-chunk computations cannot be sent to {where} workers ({e})",
            "run it on threads, or make the consumer picklable",
        ) from None


@dataclass
class ProcessExecutor:
    """``jobs`` local worker processes over tasks (see :mod:`subnetscope.engine.executors.base`)."""

    jobs: int | None = None
    max_retries: int = 2  #: pool restarts after a worker died
    task_elements: int | None = None  #: at most this many elements per input in a task
    start_method: str | None = None
    name: ClassVar[str] = "processes"
    #: what the last run did: tasks, workers, retries, max worker RSS (MiB), seconds
    last_run: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_jobs(self.jobs)

    def run(self, job: Job) -> list[list[Any]]:
        """See :class:`~subnetscope.engine.executors.base.Executor`."""
        t0 = time.perf_counter()
        workers = self.jobs or default_jobs()
        chunk = job.worker_chunk
        tasks = make_tasks(job, chunk, workers, self.task_elements)
        ctx = multiprocessing.get_context(self.start_method or start_method())
        spec = worker_job(job)
        if ctx.get_start_method() == "fork":
            warm(job)  # load the kernels once here: forked workers inherit them
        else:
            check_picklable(spec, "process")
        pending = {t.index: t for t in tasks}
        restarts = 0
        rss = 0
        with progress_bar(job.nbytes, job.desc, enabled=job.progress, unit="B") as bar:
            red = Reducer(job, chunk, bar)
            while pending:
                pool = ProcessPoolExecutor(
                    max_workers=min(workers, len(pending)), mp_context=ctx, initializer=_init,
                    initargs=(spec, chunk, os.getpid()),
                )  # fmt: skip
                broken = False
                try:
                    futs: dict[Future[TaskResult], Task] = {
                        pool.submit(_run, t): t for t in sorted(pending.values(), key=lambda t: t.index)
                    }
                    left = set(futs)
                    while left:
                        done, left = wait(left, return_when=FIRST_COMPLETED)
                        for f in done:
                            try:
                                res = f.result()
                            except BrokenProcessPool:
                                broken = True
                                continue
                            add_result(red, res)
                            rss = max(rss, res.maxrss_kib)
                            del pending[res.index]
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
                pool.shutdown(wait=not broken, cancel_futures=True)
                if pending:
                    restarts += 1
                    if restarts > self.max_retries:
                        t = next(iter(pending.values()))
                        raise ExecutorError(
                            f"a worker process died {restarts} times; {len(pending)} task(s) unfinished, e.g. "
                            f"{t.describe()}",
                            "check memory (each worker needs a few chunks) and the system log; rerun with "
                            "a resume directory to keep finished tensors",
                        )
        self.last_run = {"tasks": len(tasks), "workers": workers, "retries": restarts,
                         "max_worker_rss_mib": rss / 1024, "seconds": time.perf_counter() - t0}  # fmt: skip
        return red.ordered()
