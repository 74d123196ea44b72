"""Run groups of work in forked worker processes that inherit the caller's state (Linux only).

Used by passes whose work items are closures over open files and plans (``series``): the worker function
and its groups are left in a module global before the pool forks, so nothing but a group number and the
(small) results cross the process boundary. Separate processes matter because threads of one process
serialise on mapping file pages (see :mod:`subnetscope.executors`).
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from .errors import SubnetscopeError

G = TypeVar("G")
R = TypeVar("R")

#: ``auto`` forks worker processes for passes reading at least this many bytes (below, threads start faster)
AUTO_PROCESS_BYTES = 1 << 30

_STATE: Any = None


class WorkerDiedError(SubnetscopeError):
    """A forked worker process died (killed, out of memory) before returning its results."""


def can_fork() -> bool:
    """Whether workers can be forked here (Linux; elsewhere fork is unsafe or missing)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def contiguous_groups(items: Sequence[G], weights: Sequence[int], groups: int) -> list[list[G]]:
    """``items`` cut, in order, into at most ``groups`` runs of about equal total weight (none empty).

    Handing out more runs than workers balances the load dynamically (a worker that finishes early takes
    the next run) while each worker still reads long contiguous stretches of the files.
    """
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


def _call(i: int) -> Any:
    fn, groups = _STATE
    return fn(groups[i])


def map_forked(fn: Callable[[G], R], groups: Sequence[G], workers: int, what: str = "pass") -> Iterator[R]:
    """``fn(group)`` for every group in ``workers`` forked processes; results in completion order.

    ``fn`` may be a closure: the children inherit it at fork. Raises :class:`WorkerDiedError` if a worker
    dies; an exception raised by ``fn`` reaches the caller as is.
    """
    global _STATE
    if _STATE is not None:
        raise RuntimeError("map_forked is not re-entrant")
    _STATE = (fn, groups)
    try:
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=max(1, min(workers, len(groups))), mp_context=ctx) as pool:
            futs = [pool.submit(_call, i) for i in range(len(groups))]
            try:
                for f in as_completed(futs):
                    yield f.result()
            except BaseException:
                for f in futs:
                    f.cancel()
                raise
    except BrokenProcessPool as e:
        raise WorkerDiedError(
            f"a worker process of the {what} died before finishing",
            "check free memory and the system log; rerun with -j 1 (threads) to stay in one process",
        ) from e
    finally:
        _STATE = None
