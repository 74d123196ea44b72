"""Training numerics that give the same bits whatever the thread count, the load and the machine.

Why results moved before: two sources, both measured on this project's machine (torch 2.13, MKL 2024.2).

* MKL's ``sgemm`` splits a long inner dimension across threads and adds the partial sums in an order that
  depends on the thread count. The language-model head's input gradient (``[tokens, 49152] @ [49152, 576]``)
  is such a product, so with 1 and with 2 threads *every* gradient of SmolLM2 differed in its last bits,
  and so did the trained weights. MKL's *strict conditional numerical reproducibility* mode
  (``MKL_CBWR=AVX2,STRICT``) makes ``?gemm`` bitwise independent of the thread count.
* torch picks its own kernels (element-wise, softmax, norms, reductions) by the CPU's instruction set: the
  AVX-512 and AVX2 kernels gave different gradients. ``ATEN_CPU_CAPABILITY=avx2`` pins the AVX2 kernels, and
  MKL's ``AVX2`` branch pins its code path, so every x86-64 machine with AVX2 runs the same instructions.

Both settings are read once, when torch first dispatches a kernel and when MKL first runs; in a process
that already trained or sampled they no longer take effect. So the study runs everything that computes with
torch (sampling preference pairs, training) in one spawned worker process whose environment is set before it
imports torch (:class:`NumericsWorker`); measuring needs no torch (subnetscope's counters are exact).

``SUBNETSCOPE_NUMERICS=native`` keeps the machine's fastest kernels instead (not reproducible across thread
counts or machines; runs are cached under another key). What the worker really got is checked, not assumed:
:func:`describe` reports the kernels torch dispatches to, whether a thread-splitting product gives the same
bits on 1 and 2 threads, and a fingerprint of a few fixed computations that two machines can compare.

Not covered: a different torch or MKL version, or a CPU without AVX2 (e.g. ARM, which has no MKL), may
round differently; :func:`describe` records the versions and says ``"reproducible": false`` where it can
tell.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

from ..errors import SubnetscopeError

#: the environment of the reproducible mode (read by MKL and by torch's CPU dispatcher at first use)
PORTABLE_ENV: Mapping[str, str] = {"MKL_CBWR": "AVX2,STRICT", "ATEN_CPU_CAPABILITY": "avx2"}
MODES = ("portable", "native")
#: the name the mode goes by in cache keys and in study.json
MODE_IDS = {"portable": "portable-avx2-cnr-strict", "native": "native"}

T = TypeVar("T")


class NumericsError(SubnetscopeError):
    """The reproducible numerics could not be set up."""


def numerics_mode() -> str:
    """``portable`` (default) or ``native``, from ``SUBNETSCOPE_NUMERICS``."""
    mode = os.environ.get("SUBNETSCOPE_NUMERICS", "").strip().lower() or "portable"
    if mode not in MODES:
        raise NumericsError(
            f"SUBNETSCOPE_NUMERICS={mode!r} is not a numerics mode",
            f"use one of {list(MODES)} (portable: the same bits on every machine; native: fastest kernels)",
        )
    return mode


def mode_id(mode: str | None = None) -> str:
    """The identifier of ``mode`` (default: the current one) used in cache keys."""
    return MODE_IDS[mode or numerics_mode()]


def worker_env(mode: str) -> dict[str, str]:
    """Environment variables the worker of ``mode`` sets before importing torch."""
    return dict(PORTABLE_ENV) if mode == "portable" else {}


def probe(threads: tuple[int, int] = (1, 2)) -> dict[str, Any]:
    """Run a few fixed computations and say whether they gave the same bits on both thread counts.

    The matrix product has a long inner dimension (``[32, 16384] @ [16384, 32]``), which MKL splits across
    threads outside the strict mode (it differs between 1 and 2 threads on this project's machine); the
    large sum is one of torch's own reductions. ``fingerprint`` hashes the results of the first thread
    count, together with exp/log/softmax of fixed inputs: equal fingerprints on two machines mean their
    kernels rounded these the same way.
    """
    import torch

    saved = torch.get_num_threads()
    g = torch.Generator().manual_seed(20505)
    a = torch.randn(32, 16384, generator=g)
    b = torch.randn(16384, 32, generator=g)
    x = torch.randn(4, 49152, generator=g)
    outs = []
    try:
        for n in threads:
            torch.set_num_threads(n)
            outs.append(
                (
                    a @ b,
                    torch.softmax(x, -1),
                    torch.log_softmax(x, -1),
                    torch.exp(x * 0.1),
                    torch.nn.functional.silu(x),
                    torch.rsqrt(x.pow(2).mean(-1)),
                )
            )
    finally:
        torch.set_num_threads(saved)
    same = all(torch.equal(u, v) for u, v in zip(outs[0], outs[1]))
    h = hashlib.sha256()
    for t in outs[0]:
        h.update(t.contiguous().numpy().tobytes())
    return {"threads_tested": list(threads), "thread_independent": same, "fingerprint": h.hexdigest()[:16]}


def describe(mode: str) -> dict[str, Any]:
    """What this process computes with: mode, kernels, versions, and the :func:`probe` result."""
    import torch

    cap = str(torch.backends.cpu.get_cpu_capability())
    info: dict[str, Any] = {
        "mode": mode,
        "id": mode_id(mode),
        "env": {k: os.environ.get(k) for k in PORTABLE_ENV},
        "cpu_capability": cap,
        "mkl": bool(torch.backends.mkl.is_available()),
        "torch": torch.__version__,
        **probe(),
    }
    why = []
    if mode == "portable":
        if not info["mkl"]:
            why.append("torch is not built with MKL (no strict reproducible matrix products)")
        if cap != "AVX2":
            why.append(f"torch dispatches to {cap} kernels, not AVX2 (no AVX2 on this CPU, or set too late)")
        if not info["thread_independent"]:
            why.append("a fixed matrix product gave different bits on 1 and 2 threads")
    else:
        why.append("SUBNETSCOPE_NUMERICS=native: the machine's fastest kernels")
    info["reproducible"] = not why
    info["why_not"] = why
    return info


@contextmanager
def _environ(env: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with ``env`` set, restored afterwards (a child started meanwhile inherits ``env``)."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _init_worker(threads: int) -> None:
    if sys.platform.startswith("linux"):  # end with the study: an orphaned worker would train on, unseen
        import ctypes
        import signal

        with suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    import torch

    torch.set_num_threads(threads)


def _run_reporting(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Run ``fn`` in the worker; a :class:`SubnetscopeError` comes back as its parts (pickling an exception
    rebuilds it from its message alone and would lose the hint)."""
    try:
        return ("ok", fn(*args, **kwargs))
    except SubnetscopeError as e:
        return ("error", type(e), e.message, e.hint)


def _rebuild(cls: type[SubnetscopeError], message: str, hint: str | None) -> SubnetscopeError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.message, err.hint = message, hint
    return err


class NumericsWorker:
    """One spawned process that runs torch work under the numerics of ``mode`` with ``threads`` threads.

    Use as a context manager; :meth:`call` runs a picklable function there and returns its result (an
    exception raised there is raised here). The process starts at the first call, so a study whose runs all
    come from the cache starts none. :attr:`info` is :func:`describe` as the worker saw it (empty until
    then).
    """

    def __init__(self, mode: str | None = None, threads: int = 1) -> None:
        self.mode = mode or numerics_mode()
        self.threads = threads
        self._pool: ProcessPoolExecutor | None = None
        self.info: dict[str, Any] = {}

    @property
    def started(self) -> bool:
        """Whether the process has been started (it starts at the first :meth:`call`)."""
        return self._pool is not None

    def _start(self) -> ProcessPoolExecutor:
        ctx = multiprocessing.get_context("spawn")
        # The environment is set while the process is spawned (the first submit starts it), so it has the
        # variables from its first instruction on: the spawned child re-imports the caller's main module
        # before anything of ours runs there, and that module may already compute with torch.
        with _environ(worker_env(self.mode)):
            pool = ProcessPoolExecutor(
                max_workers=1, mp_context=ctx, initializer=_init_worker, initargs=(self.threads,)
            )
            first = pool.submit(describe, self.mode)
        self._pool = pool
        self.info = {**first.result(), "threads": self.threads}
        return pool

    def __enter__(self) -> NumericsWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the process (a later :meth:`call` starts a new one)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in the worker (started now if it is not running yet)."""
        pool = self._pool or self._start()
        res = pool.submit(_run_reporting, fn, args, kwargs).result()
        if res[0] == "error":
            raise _rebuild(*res[1:])
        out: T = res[1]
        return out


@contextmanager
def numerics_worker(mode: str | None = None, threads: int = 1) -> Iterator[NumericsWorker]:
    """``with numerics_worker(threads=2) as w: w.call(fn, ...)``: see :class:`NumericsWorker`."""
    with NumericsWorker(mode, threads) as w:
        yield w
