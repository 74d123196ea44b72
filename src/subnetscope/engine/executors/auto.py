"""``auto``: the one policy that picks where a pass runs (see :mod:`subnetscope.engine.executors.base`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..job import Job
from .base import AUTO_PROCESS_BYTES, Executor, check_jobs, default_jobs, start_method
from .local import ThreadExecutor
from .processes import ProcessExecutor


@dataclass
class AutoExecutor:
    """``processes`` for a pass of at least ``min_bytes`` with several jobs where workers fork, else
    ``threads``."""

    jobs: int | None = None
    min_bytes: int = AUTO_PROCESS_BYTES
    name: ClassVar[str] = "auto"
    #: the executor the last run used (``"threads"`` or ``"processes"``)
    chose: str = ""

    def __post_init__(self) -> None:
        check_jobs(self.jobs)

    def pick(self, job: Job) -> Executor:
        """The executor :meth:`run` hands ``job`` to."""
        workers = self.jobs or default_jobs()
        if workers > 1 and job.nbytes >= self.min_bytes and start_method() == "fork":
            return ProcessExecutor(workers)
        return ThreadExecutor(self.jobs)

    def run(self, job: Job) -> list[list[Any]]:
        """See :class:`~subnetscope.engine.executors.base.Executor`."""
        ex = self.pick(job)
        self.chose = ex.name
        return ex.run(job)
