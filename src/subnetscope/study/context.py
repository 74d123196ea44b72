"""What the study's steps share: :class:`StudyContext`, the paper's claims, logging, optional steps."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import StudyConfig
from .numerics import NumericsWorker
from .runs import Dataset, RunRecord

PRIMARY_TOL = 1e-5

#: what the paper reports, for the tables (arXiv 2505.11711: abstract, §4, Figure 2)
PAPER = {
    "table1": "RL updates only 5–30 % of the parameters (update sparsity 70–95 %) across 7 RL algorithms and "
    "10 models; SFT is the contrast that updates much more",
    "table4": "subnetworks from different seeds, data and algorithms overlap substantially more than the "
    "uniform random baseline (App. E: o1_random = density of run 2)",
    "table2": "RL updates are sparse but nearly full-rank: the update matrices have on average more than 99 % "
    "of the maximum rank",
    "table3": "θ_sub vs θ_full identical on 94.0 % (DPO) / 90.5 % (PRIME) of weights at 1e-5, 100 % at 1e-4",
    "figure2": "PRIME: 72 % never updated, 8 % updated then cancelled, 20 % final subnetwork",
    "figure3": "nearly all parameter matrices receive similarly sparse updates (no layer is frozen)",
}


def log(msg: str) -> None:
    """One progress line on stderr."""
    print(msg, file=sys.stderr, flush=True)


@dataclass
class StudyContext:
    """Everything the steps share."""

    cfg: StudyConfig
    cache: Path
    work: Path
    out: Path
    progress: bool = True
    base_dir: Path | None = None
    base_id: str = ""
    datasets: dict[str, Dataset] = field(default_factory=dict)
    runs: dict[str, RunRecord] = field(default_factory=dict)
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)  #: run → compare JSON (with ULP)
    ranks: dict[str, dict[str, Any]] = field(default_factory=dict)  #: run → rank JSON (Table 2)
    masks: dict[str, Path] = field(default_factory=dict)  #: run → mask file at 1e-5
    timings: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)
    worker: NumericsWorker | None = None  #: where torch computes (sampling, training): see :mod:`.numerics`

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time a step and log its start and end."""
        log(f"[study] {name} ...")
        t0 = time.time()
        try:
            yield
        finally:
            self.timings[name] = round(time.time() - t0, 2)
            log(f"[study] {name} done in {self.timings[name]:.1f} s")

    def skip(self, name: str, why: str) -> None:
        """Record (and log) that a step could not run."""
        self.skipped[name] = why
        log(f"[study] {name} skipped: {why}")


def optional(ctx: StudyContext, name: str, fn: Callable[[], None]) -> None:
    """Run a step that depends on a module another part of subnetscope provides; skip it if missing."""
    from ..errors import SubnetscopeError

    try:
        fn()
    except ImportError as e:
        ctx.skip(name, f"needs a module that is not available ({e})")
    except SubnetscopeError as e:
        if type(e).__name__ in ("MissingDependencyError", "MissingAnatomyError"):
            ctx.skip(name, e.one_line())
        else:
            raise


def tol_index(obj: Mapping[str, Any], tol: float) -> int:
    """The index of the report's tolerance nearest ``tol``."""
    tols = [float(t) for t in obj["tolerances"]]
    return min(range(len(tols)), key=lambda i: abs(tols[i] - tol))
