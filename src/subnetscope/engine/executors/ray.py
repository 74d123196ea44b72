"""``ray``: the pass's tasks as Ray tasks, on a cluster or a local instance started for the run.

Ray is the engine RL stacks (verl, OpenRLHF) already run on; it is an optional extra
(``pip install 'subnetscope[ray]'``), imported only when this executor runs. Every node must see the
checkpoint files at the same path (a shared filesystem, or the same hub revision in each node's cache);
each task checks its files' sizes against the driver's first. A task whose worker dies is retried by Ray
(``max_retries``); an error raised on purpose (a :class:`~subnetscope.errors.SubnetscopeError`) is not
retried and reaches the caller with its message and hint. At most ``max_inflight`` tasks are in flight,
so the driver holds at most that many results.
"""

from __future__ import annotations

import importlib
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ...progress import progress_bar
from ..job import Job, Reducer
from .base import ExecutorError, default_jobs
from .processes import check_picklable
from .tasks import Task, TaskResult, add_result, make_tasks, run_task, worker_job


def import_ray() -> Any:
    """``import ray``, or a clear error saying how to install it."""
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise ExecutorError(
            "the ray executor needs the 'ray' package, which is not installed",
            "pip install 'subnetscope[ray]' (or use the processes executor on one machine)",
        ) from None


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast (instead of Ray's long connect retries) when ``host:port`` / ``ray://host:port`` refuses."""
    m = re.fullmatch(r"(?:ray://)?\[?([^\]/]+?)\]?:(\d+)", address.strip())
    if m is None:
        return  # "auto", "local", or something only Ray understands
    host, port = m.group(1), int(m.group(2))
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise ExecutorError(
            f"cannot reach the Ray cluster at {address} ({e.strerror or e})",
            "start one with `ray start --head` and pass the address it prints (or `auto` on a cluster node), "
            "or give no address to start a local Ray",
        ) from None


def _remote_task(job: Job, task: Task, chunk: int) -> TaskResult:
    return run_task(job, task, chunk)


@dataclass
class RayExecutor:
    """Tasks on a Ray cluster: ``address`` (``auto``, ``ray://host:10001``, ...), or a local instance of
    ``num_cpus`` CPUs started for the run (and shut down after it) when Ray is not initialised yet."""

    address: str | None = None
    num_cpus: int | None = None
    max_retries: int = 3  #: Ray retries of a task whose worker died
    task_elements: int | None = None
    max_inflight: int | None = None  #: default: twice the cluster's CPUs
    init_kwargs: dict[str, Any] = field(default_factory=dict)
    name: ClassVar[str] = "ray"
    #: what the last run did: tasks, cluster CPUs, workers used, max worker RSS (MiB), init and pass seconds
    last_run: dict[str, Any] = field(default_factory=dict)

    def run(self, job: Job) -> list[list[Any]]:
        """See :class:`~subnetscope.engine.executors.base.Executor`."""
        ray = import_ray()
        spec = worker_job(job)
        check_picklable(spec, "Ray")
        t0 = time.perf_counter()
        started = False
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, **self.init_kwargs}
            try:
                if self.address:
                    check_reachable(self.address)
                    ray.init(address=self.address, **kw)
                else:
                    ray.init(num_cpus=self.num_cpus or default_jobs(), **kw)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ExecutorError(
                    f"could not start or reach Ray ({str(e).splitlines()[0] if str(e) else type(e).__name__})",
                    "check the Ray address (start a cluster with `ray start --head`), or give none for a local one",
                ) from None
            started = True
        t_init = time.perf_counter() - t0
        try:
            return self._run(ray, job, spec, t_init)
        finally:
            if started:
                ray.shutdown()

    def _run(self, ray: Any, job: Job, spec: Job, t_init: float) -> list[list[Any]]:
        t0 = time.perf_counter()
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        chunk = job.worker_chunk
        tasks = make_tasks(job, chunk, cpus, self.task_elements)
        remote = ray.remote(_remote_task).options(
            num_cpus=1, max_retries=self.max_retries, retry_exceptions=False
        )
        spec_ref = ray.put(spec)
        queue = list(tasks)
        limit = self.max_inflight or 2 * cpus
        inflight: dict[Any, Task] = {}
        workers: set[str] = set()
        rss = 0
        with progress_bar(job.nbytes, job.desc, enabled=job.progress, unit="B") as bar:
            red = Reducer(job, chunk, bar)
            try:
                while queue or inflight:
                    while queue and len(inflight) < limit:
                        t = queue.pop(0)
                        inflight[remote.remote(spec_ref, t, chunk)] = t
                    done, _ = ray.wait(list(inflight), num_returns=1)
                    for ref in done:
                        t = inflight.pop(ref)
                        try:
                            res = ray.get(ref)
                        except ray.exceptions.RayError as e:
                            last = (
                                str(e).strip().splitlines()[-1][:300] if str(e).strip() else type(e).__name__
                            )
                            raise ExecutorError(
                                f"Ray {t.describe()} failed after {self.max_retries} retries: {last}",
                                "check the workers' logs (/tmp/ray/session_latest/logs); rerun with a resume "
                                "directory to keep finished tensors",
                            ) from None
                        # Ray hands back read-only views of its object store: the reduce owns writable copies
                        add_result(red, res, copy_states=True)
                        workers.add(res.worker)
                        rss = max(rss, res.maxrss_kib)
            except BaseException:
                for ref in inflight:
                    ray.cancel(ref, force=True)
                raise
        self.last_run = {"tasks": len(tasks), "cluster_cpus": cpus, "workers": len(workers),
                         "max_worker_rss_mib": rss / 1024, "init_seconds": t_init,
                         "seconds": time.perf_counter() - t0}  # fmt: skip
        return red.ordered()
