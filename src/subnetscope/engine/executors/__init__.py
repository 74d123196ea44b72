"""Where a pass runs: one protocol, one module per backend, one ``auto`` policy (see :mod:`.base`)."""

from __future__ import annotations

from .auto import AutoExecutor
from .base import AUTO_PROCESS_BYTES, EXECUTORS, Executor, ExecutorError, default_jobs
from .factory import make_executor, resolve
from .local import SerialExecutor, ThreadExecutor, run_local
from .processes import ProcessExecutor
from .ray import RayExecutor, check_reachable, import_ray
from .tasks import Task, TaskResult, contiguous_groups, make_tasks, run_task

__all__ = [
    "AUTO_PROCESS_BYTES",
    "EXECUTORS",
    "AutoExecutor",
    "Executor",
    "ExecutorError",
    "ProcessExecutor",
    "RayExecutor",
    "SerialExecutor",
    "Task",
    "TaskResult",
    "ThreadExecutor",
    "check_reachable",
    "contiguous_groups",
    "default_jobs",
    "import_ray",
    "make_executor",
    "make_tasks",
    "resolve",
    "run_local",
    "run_task",
]
