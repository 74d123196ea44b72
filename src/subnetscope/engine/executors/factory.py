"""Executors by name: what a caller passes (``"auto"``, ``"ray"``, an executor, None) to an executor."""

from __future__ import annotations

from ...errors import UsageError
from .auto import AutoExecutor
from .base import EXECUTORS, Executor, check_jobs
from .local import SerialExecutor, ThreadExecutor
from .processes import ProcessExecutor
from .ray import RayExecutor


def make_executor(
    name: str | None = None, jobs: int | None = None, ray_address: str | None = None
) -> Executor:
    """The executor called ``name`` (default ``threads``) with ``jobs`` workers."""
    check_jobs(jobs)
    name = name or "threads"
    if ray_address and name != "ray":
        raise UsageError(f"ray_address is only used with the ray executor (got {name!r})",
                         "choose the ray executor, or drop the Ray address")  # fmt: skip
    if name == "auto":
        return AutoExecutor(jobs)
    if name == "serial":
        return SerialExecutor()
    if name == "threads":
        return ThreadExecutor(jobs)
    if name == "processes":
        return ProcessExecutor(jobs)
    if name == "ray":
        return RayExecutor(address=ray_address, num_cpus=jobs)
    raise UsageError(f"unknown executor {name!r}", f"use one of {', '.join(EXECUTORS)}")


def resolve(executor: str | Executor | None, jobs: int | None, ray_address: str | None = None) -> Executor:
    """An executor object from what a caller passed (a name, an executor, or None for threads)."""
    if executor is None or isinstance(executor, str):
        return make_executor(executor, jobs, ray_address)
    return executor
