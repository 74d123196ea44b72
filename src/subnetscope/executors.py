"""Where the pass runs: serially, on threads (the default), in local processes, or on a Ray cluster.

Every executor returns the same per-tensor statistics in plan order, so the report does not depend on
which one ran it (tested: equal JSON, equal mask bytes).

- ``serial``: the engine on the calling thread.
- ``threads``: the engine's thread pool (``-j`` threads; the compiled kernels release the GIL). The
  library's default.
- ``auto`` (the command line's default): ``processes`` for a pass of at least ``AUTO_PROCESS_BYTES`` with
  several jobs where workers can be forked (Linux) and the extra consumers pickle, else ``threads``.
  Threads of one process share its memory map, and the kernel serialises their mapping of file pages
  (measured here on the 1B pair with 2 jobs: 0.81-0.84 s on threads, 0.55-0.65 s on forked processes);
  separate processes do not contend.
- ``processes``: ``-j`` local worker processes. Pairs are grouped into *tasks* (the tensors of one
  (base shard, target shard) pair, split to at most ``task_elements`` elements, a larger tensor alone);
  each worker runs the engine serially on its task and sends back small stats (``TensorStats`` JSON) and,
  when a mask is written, the task's packed mask bits, which the driver writes into the one mask file as
  tasks finish (see below). A worker that dies (killed, out of memory) breaks the pool: a fresh pool runs
  every unfinished task again, up to ``max_retries`` times; finished tasks are never run twice.
- ``ray``: the same tasks as Ray tasks (``num_cpus=1`` each, at most ``max_inflight`` in flight, largest
  first). Tasks carry *paths*, not data: every node must see the checkpoint files at the same path (a shared
  filesystem, or the same hub revision downloaded into each node's cache); each worker checks every file's
  size against the driver's before reading. A task whose worker dies is retried by Ray (``max_retries``);
  an error raised on purpose (a :class:`~subnetscope.errors.SubnetscopeError`) is not retried and reaches
  the caller with its message and hint. The reduce streams: stats are merged, handed to
  ``PassOptions.on_tensor_done`` (a resumable run's journal) and mask bits written as each task finishes.

Mask parts: workers *return packed bits to the driver* (1 bit per element: 1/32 of the bytes a bf16 pair
reads, 1/16 for FP8) rather than writing into a shared file. It needs no shared writable filesystem and
no coordination of a half-written file between nodes, a retried task simply returns its bits again, and
the file is still written once, atomically, by :class:`~subnetscope.maskfile.MaskWriter` on the driver.
The driver holds at most ``max_inflight`` results (a task's bits: ``task_elements / 8`` bytes).

Ray is an optional extra (``pip install 'subnetscope[ray]'``), imported only when this executor runs.
"""

from __future__ import annotations

import dataclasses
import importlib
import multiprocessing
import os
import pickle
import re
import resource
import socket
import sys
import time
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from .engine import ChunkConsumer, MaskSink, PassOptions, default_jobs, run_pass
from .errors import CheckpointFormatError, SubnetscopeError, UsageError
from .forked import AUTO_PROCESS_BYTES
from .io.checkpoint import Checkpoint
from .io.reader import DEFAULT_CHUNK_ELEMENTS
from .plan import Pair, Plan
from .progress import progress_bar
from .stats import TensorStats

EXECUTORS = ("auto", "serial", "threads", "processes", "ray")
#: elements per read in worker processes when the caller kept the default (larger maps cost less per byte)
PROCESS_CHUNK_ELEMENTS = 1 << 22

#: task size bounds (elements compared): big enough to amortise a task, small enough to balance and to
#: keep a task's mask bits (elements / 8 bytes) small
MIN_TASK_ELEMENTS = 1 << 23
MAX_TASK_ELEMENTS = 1 << 27


class ExecutorError(SubnetscopeError):
    """An executor that cannot run (Ray missing or unreachable) or a task that failed for good."""


class Executor(Protocol):
    """Runs the pass over some pairs of a plan; returns their stats in the order given."""

    name: ClassVar[str]

    def run(
        self,
        plan: Plan,
        opts: PassOptions,
        mask_sink: MaskSink | None = None,
        pairs: list[Pair] | None = None,
    ) -> list[TensorStats]:
        """Compare ``pairs`` (default: all of ``plan``), feeding mask bits to ``mask_sink``."""


@dataclass
class SerialExecutor:
    """The engine on the calling thread."""

    name: ClassVar[str] = "serial"

    def run(
        self,
        plan: Plan,
        opts: PassOptions,
        mask_sink: MaskSink | None = None,
        pairs: list[Pair] | None = None,
    ) -> list[TensorStats]:
        """See :class:`Executor`."""
        return run_pass(plan, dataclasses.replace(opts, jobs=1), mask_sink, pairs)


@dataclass
class ThreadExecutor:
    """The engine's thread pool (``jobs`` threads; default: ``opts.jobs``, else the CPUs, at most 8)."""

    jobs: int | None = None
    name: ClassVar[str] = "threads"

    def run(
        self,
        plan: Plan,
        opts: PassOptions,
        mask_sink: MaskSink | None = None,
        pairs: list[Pair] | None = None,
    ) -> list[TensorStats]:
        """See :class:`Executor`."""
        o = opts if self.jobs is None else dataclasses.replace(opts, jobs=self.jobs)
        return run_pass(plan, o, mask_sink, pairs)


@dataclass
class AutoExecutor:
    """``processes`` for a large pass with several jobs where workers fork, else ``threads`` (module docs).

    Extra per-chunk consumers (``--ulp``, FP8 dequantisation) go to the workers when they pickle; one that
    does not keeps the pass on threads.
    """

    jobs: int | None = None
    min_bytes: int = AUTO_PROCESS_BYTES
    name: ClassVar[str] = "auto"
    #: the executor the last run used (``"threads"`` or ``"processes"``)
    chose: str = ""

    def pick(self, plan: Plan, opts: PassOptions, pairs: list[Pair] | None = None) -> Executor:
        """The executor :meth:`run` hands the pass to."""
        todo = plan.pairs if pairs is None else pairs
        workers = self.jobs or opts.jobs or default_jobs()
        nbytes = sum(p.compare_numel * (p.base.dtype.itemsize + p.target.dtype.itemsize) for p in todo)
        if (
            workers > 1
            and nbytes >= self.min_bytes
            and _start_method() == "fork"
            and _pickles(opts.consumers)
        ):
            return ProcessExecutor(workers)
        return ThreadExecutor(self.jobs)

    def run(
        self,
        plan: Plan,
        opts: PassOptions,
        mask_sink: MaskSink | None = None,
        pairs: list[Pair] | None = None,
    ) -> list[TensorStats]:
        """See :class:`Executor`."""
        ex = self.pick(plan, opts, pairs)
        self.chose = ex.name
        return ex.run(plan, opts, mask_sink, pairs)


# ---------------------------------------------------------------------------------------------------------
# tasks: what a worker gets and what it sends back


@dataclass(frozen=True)
class Task:
    """A group of pairs run by one worker, with the files it reads and their sizes on the driver."""

    index: int
    pairs: tuple[Pair, ...]
    files: tuple[tuple[str, int], ...]

    @property
    def elements(self) -> int:
        """Elements compared."""
        return sum(p.compare_numel for p in self.pairs)

    @property
    def nbytes(self) -> int:
        """Bytes read (both sides)."""
        return sum(p.compare_numel * (p.base.dtype.itemsize + p.target.dtype.itemsize) for p in self.pairs)

    def describe(self) -> str:
        """For messages: first tensor and size."""
        more = f" and {len(self.pairs) - 1} more" if len(self.pairs) > 1 else ""
        return f"task {self.index}: {self.pairs[0].name}{more}"


@dataclass(frozen=True)
class TaskOptions:
    """The pass options a worker needs (no callbacks)."""

    tolerances: tuple[float, ...]
    semantics: str
    chunk_elements: int
    mask_tolerance: float | None
    want_mask: bool
    consumers: tuple[ChunkConsumer, ...] = ()
    threads: int = 1

    @classmethod
    def of(cls, opts: PassOptions, want_mask: bool, threads: int = 1) -> TaskOptions:
        """From the driver's :class:`~subnetscope.engine.PassOptions`."""
        return cls(tuple(opts.tolerances), opts.semantics, opts.chunk_elements, opts.mask_tolerance,
                   want_mask, tuple(opts.consumers), threads)  # fmt: skip


@dataclass
class TaskResult:
    """What a worker sends back: stats JSON per pair, packed mask bits per pair, and where it ran."""

    index: int
    stats: list[dict[str, Any]] = field(default_factory=list)
    masks: list[bytes] | None = None
    error: tuple[str, str, str, str | None] | None = (
        None  #: (module, class, message, hint) of a SubnetscopeError
    )
    worker: str = ""
    maxrss_kib: int = 0
    seconds: float = 0.0


def default_task_elements(pairs: list[Pair], workers: int) -> int:
    """About eight tasks per worker, within [MIN_TASK_ELEMENTS, MAX_TASK_ELEMENTS]."""
    total = sum(p.compare_numel for p in pairs)
    return int(min(MAX_TASK_ELEMENTS, max(MIN_TASK_ELEMENTS, total // max(1, 8 * workers))))


def make_tasks(pairs: Iterable[Pair], max_elements: int) -> list[Task]:
    """Group pairs by (base shard, target shard), then split each group into tasks of at most
    ``max_elements`` compared elements (a larger tensor is a task of its own). Largest task first."""
    groups: dict[tuple[Path, Path], list[Pair]] = {}
    for p in pairs:
        groups.setdefault((p.base.path, p.target.path), []).append(p)
    chunks: list[list[Pair]] = []
    for group in groups.values():
        cur: list[Pair] = []
        n = 0
        for p in group:
            if cur and n + p.compare_numel > max_elements:
                chunks.append(cur)
                cur, n = [], 0
            cur.append(p)
            n += p.compare_numel
        if cur:
            chunks.append(cur)
    sizes: dict[str, int] = {}
    tasks = []
    for i, c in enumerate(chunks):
        files = sorted({str(f) for p in c for f in (p.base.path, p.target.path)})
        for f in files:
            if f not in sizes:
                try:
                    sizes[f] = os.path.getsize(f)
                except OSError as e:
                    raise CheckpointFormatError(
                        f"{f}: cannot stat ({e.strerror})", "check the file"
                    ) from None
        tasks.append(Task(i, tuple(c), tuple((f, sizes[f]) for f in files)))
    tasks.sort(key=lambda t: -t.nbytes)
    return tasks


class _Collect:
    """Mask sink of one task: the packed bits of each pair, filled in place."""

    def __init__(self, pairs: Iterable[Pair]) -> None:
        self.bufs = {p.index: np.zeros((p.numel + 7) // 8, dtype=np.uint8) for p in pairs}

    def write(self, pair: Pair, start: int, packed: np.ndarray) -> None:
        buf = self.bufs[pair.index]
        off = start // 8
        n = min(packed.size, buf.size - off)
        buf[off : off + n] = packed[:n]


_EMPTY = Checkpoint(Path("."), {}, [])


def _check_files(files: Iterable[tuple[str, int]]) -> None:
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


def run_task(task: Task, topts: TaskOptions) -> TaskResult:
    """Run one task (in a worker process or Ray task): the engine over its pairs, serially."""
    t0 = time.perf_counter()
    res = TaskResult(task.index, worker=f"{socket.gethostname()}:{os.getpid()}")
    try:
        _check_files(task.files)
        pairs = list(task.pairs)
        sink = _Collect(pairs) if topts.want_mask else None
        opts = PassOptions(list(topts.tolerances), topts.semantics, jobs=topts.threads,
                           chunk_elements=topts.chunk_elements, mask_tolerance=topts.mask_tolerance,
                           consumers=list(topts.consumers))  # fmt: skip
        stats = run_pass(Plan(_EMPTY, _EMPTY, pairs, []), opts, mask_sink=sink, pairs=pairs)
        res.stats = [s.to_json() for s in stats]
        if sink is not None:
            res.masks = [sink.bufs[p.index].tobytes() for p in pairs]
    except SubnetscopeError as e:
        res.error = (type(e).__module__, type(e).__qualname__, e.message, e.hint)
    res.seconds = time.perf_counter() - t0
    res.maxrss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return res


def _raise_remote(err: tuple[str, str, str, str | None]) -> None:
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


class _Reducer:
    """Driver side: merge task results as they arrive (stats, mask bits, the per-tensor hook)."""

    def __init__(self, pairs: list[Pair], opts: PassOptions, mask_sink: MaskSink | None, bar: Any) -> None:
        self.by_index = {p.index: p for p in pairs}
        self.opts = opts
        self.mask_sink = mask_sink
        self.bar = bar
        self.results: dict[int, TensorStats] = {}
        self.max_rss_kib = 0
        self.workers: set[str] = set()

    def add(self, task: Task, res: TaskResult) -> None:
        if res.error is not None:
            _raise_remote(res.error)
        self.max_rss_kib = max(self.max_rss_kib, res.maxrss_kib)
        self.workers.add(res.worker)
        for i, (p, obj) in enumerate(zip(task.pairs, res.stats)):
            st = TensorStats.from_json(obj)
            if res.masks is not None and self.mask_sink is not None and res.masks[i]:
                self.mask_sink.write(self.by_index[p.index], 0, np.frombuffer(res.masks[i], dtype=np.uint8))
            self.results[p.index] = st
            if self.opts.on_tensor_done is not None:
                self.opts.on_tensor_done(st)
        self.bar.update(task.nbytes)

    def ordered(self, pairs: list[Pair]) -> list[TensorStats]:
        missing = [p.name for p in pairs if p.index not in self.results]
        if missing:  # pragma: no cover - every task is accounted for above; this guards the invariant
            raise ExecutorError(f"{len(missing)} tensor(s) got no result, e.g. {missing[0]}", "rerun")
        return [self.results[p.index] for p in pairs]


def _pickles(consumers: Iterable[ChunkConsumer]) -> bool:
    try:
        pickle.dumps(tuple(consumers))
    except Exception:
        return False
    return True


def _check_picklable(topts: TaskOptions, where: str) -> None:
    try:
        pickle.dumps(topts)
    except Exception as e:
        raise UsageError(
            f"the extra per-chunk computations cannot be sent to {where} workers ({e})",
            "use --executor threads with them, or make the consumer picklable",
        ) from None


def warm_kernels(pairs: Iterable[Pair], topts: TaskOptions) -> None:
    """Load the compiled kernels for the plan's dtypes here, so that forked workers inherit them."""
    from .engine import Thresholds
    from .kernels.compare import count_chunk

    th = Thresholds(list(topts.tolerances), topts.semantics, topts.mask_tolerance)
    seen = set()
    for p in pairs:
        dt = p.base.dtype
        if p.same_dtype and dt.is_float and dt.code not in seen:
            seen.add(dt.code)
            z = np.zeros(8, dtype=dt.bits_dtype)
            out = np.zeros(len(th.sorted) + 3, dtype=np.int64)
            mask = np.zeros(1 if topts.want_mask else 0, dtype=np.uint8)
            count_chunk(z, z, dt, th.for_dtype(dt), topts.semantics == "reference", out, mask, th.mask_k)


def _start_method() -> str:
    """``SUBNETSCOPE_MP_START`` if set, else ``fork`` on Linux (workers start at once, with the kernels
    already imported; they run only numpy/numba code, never torch), else ``spawn``."""
    env = os.environ.get("SUBNETSCOPE_MP_START", "").strip()
    if env:
        return env
    return "fork" if sys.platform.startswith("linux") else "spawn"


@dataclass
class ProcessExecutor:
    """``jobs`` local worker processes over tasks (see the module docs)."""

    jobs: int | None = None
    max_retries: int = 2  #: pool restarts after a worker died
    task_elements: int | None = None
    start_method: str | None = None
    name: ClassVar[str] = "processes"
    #: what the last run did: tasks, workers, retries, max worker RSS (MiB), seconds
    last_run: dict[str, Any] = field(default_factory=dict)

    def run(
        self,
        plan: Plan,
        opts: PassOptions,
        mask_sink: MaskSink | None = None,
        pairs: list[Pair] | None = None,
    ) -> list[TensorStats]:
        """See :class:`Executor`."""
        t0 = time.perf_counter()
        todo = plan.pairs if pairs is None else pairs
        workers = self.jobs or opts.jobs or default_jobs()
        tasks = make_tasks(todo, self.task_elements or default_task_elements(todo, workers))
        topts = TaskOptions.of(opts, mask_sink is not None)
        if topts.chunk_elements == DEFAULT_CHUNK_ELEMENTS:
            topts = dataclasses.replace(topts, chunk_elements=PROCESS_CHUNK_ELEMENTS)
        _check_picklable(topts, "process")
        ctx = multiprocessing.get_context(self.start_method or _start_method())
        if ctx.get_start_method() == "fork":
            warm_kernels(todo, topts)
        pending = {t.index: t for t in tasks}
        restarts = 0
        total = sum(t.nbytes for t in tasks)
        with progress_bar(total, "compare", enabled=opts.progress, unit="B") as bar:
            red = _Reducer(todo, opts, mask_sink, bar)
            while pending:
                pool = ProcessPoolExecutor(max_workers=min(workers, len(pending)), mp_context=ctx)
                broken = False
                try:
                    futs: dict[Future[TaskResult], Task] = {
                        pool.submit(run_task, t, topts): t
                        for t in sorted(pending.values(), key=lambda t: -t.nbytes)
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
                            red.add(futs[f], res)
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
                            "--resume DIR to keep finished tensors",
                        )
        self.last_run = {"tasks": len(tasks), "workers": workers, "retries": restarts,
                         "max_worker_rss_mib": red.max_rss_kib / 1024, "seconds": time.perf_counter() - t0}  # fmt: skip
        return red.ordered(todo)


def import_ray() -> Any:
    """``import ray``, or a clear error saying how to install it."""
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise ExecutorError(
            "--executor ray needs the 'ray' package, which is not installed",
            "pip install 'subnetscope[ray]' (or use --executor processes on one machine)",
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
            "or drop --ray-address to start a local Ray",
        ) from None


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

    def run(
        self,
        plan: Plan,
        opts: PassOptions,
        mask_sink: MaskSink | None = None,
        pairs: list[Pair] | None = None,
    ) -> list[TensorStats]:
        """See :class:`Executor`."""
        ray = import_ray()
        t0 = time.perf_counter()
        started = False
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, **self.init_kwargs}
            try:
                if self.address:
                    check_reachable(self.address)
                    ray.init(address=self.address, **kw)
                else:
                    ray.init(num_cpus=self.num_cpus or opts.jobs or default_jobs(), **kw)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ExecutorError(
                    f"could not start or reach Ray ({str(e).splitlines()[0] if str(e) else type(e).__name__})",
                    "check --ray-address (start a cluster with `ray start --head`), or omit it for a local one",
                ) from None
            started = True
        t_init = time.perf_counter() - t0
        try:
            return self._run(ray, plan, opts, mask_sink, pairs, t_init)
        finally:
            if started:
                ray.shutdown()

    def _run(
        self, ray: Any, plan: Plan, opts: PassOptions, mask_sink: MaskSink | None, pairs: list[Pair] | None,
        t_init: float,
    ) -> list[TensorStats]:  # fmt: skip
        t0 = time.perf_counter()
        todo = plan.pairs if pairs is None else pairs
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        tasks = make_tasks(todo, self.task_elements or default_task_elements(todo, cpus))
        topts = TaskOptions.of(opts, mask_sink is not None)
        _check_picklable(topts, "Ray")
        remote = ray.remote(run_task).options(
            num_cpus=1, max_retries=self.max_retries, retry_exceptions=False
        )
        topts_ref = ray.put(topts)
        queue = list(tasks)  # largest first
        limit = self.max_inflight or 2 * cpus
        inflight: dict[Any, Task] = {}
        with progress_bar(sum(t.nbytes for t in tasks), "compare", enabled=opts.progress, unit="B") as bar:
            red = _Reducer(todo, opts, mask_sink, bar)
            try:
                while queue or inflight:
                    while queue and len(inflight) < limit:
                        t = queue.pop(0)
                        inflight[remote.remote(t, topts_ref)] = t
                    done, _ = ray.wait(list(inflight), num_returns=1)
                    for ref in done:
                        t = inflight.pop(ref)
                        try:
                            res = ray.get(ref)
                        except ray.exceptions.RayError as e:
                            raise ExecutorError(
                                f"Ray {t.describe()} failed after {self.max_retries} retries: "
                                f"{str(e).strip().splitlines()[-1][:300] if str(e).strip() else type(e).__name__}",
                                "check the workers' logs (/tmp/ray/session_latest/logs); rerun with --resume DIR "
                                "to keep finished tensors",
                            ) from None
                        red.add(t, res)
            except BaseException:
                for ref in inflight:
                    ray.cancel(ref, force=True)
                raise
        self.last_run = {"tasks": len(tasks), "cluster_cpus": cpus, "workers": len(red.workers),
                         "max_worker_rss_mib": red.max_rss_kib / 1024, "init_seconds": t_init,
                         "seconds": time.perf_counter() - t0}  # fmt: skip
        return red.ordered(todo)


def make_executor(
    name: str | None = None, jobs: int | None = None, ray_address: str | None = None
) -> Executor:
    """The executor called ``name`` (default ``threads``) with ``jobs`` workers."""
    name = name or "threads"
    if ray_address and name != "ray":
        raise UsageError(f"--ray-address is only used with --executor ray (got --executor {name})",
                         "add --executor ray, or drop --ray-address")  # fmt: skip
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
