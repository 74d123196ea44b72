"""Numerical rank of every 2-D weight update (the paper's Table 2), plus stable and effective rank.

The rank of ``Δ = float32(target) - float32(base)`` is the number of singular values above
``tol = σ_max · max(m, n) · eps32``: the default of :func:`torch.linalg.matrix_rank` on the float32 delta.
Instead of an SVD, the singular values come from the eigenvalues of the float64 Gram matrix of the smaller
side (``ΔᵀΔ`` or ``ΔΔᵀ``, accumulated block by block): ``σ = sqrt(max(λ, 0))``.

Why that gives the same count: forming the Gram matrix and its eigenvalues in float64 perturbs each
eigenvalue by at most about ``m · n · eps64 · σ_max²`` (sums of ``m`` products, ``‖Δ‖_F² ≤ n σ_max²``,
backward-stable ``eigvalsh``), while the threshold on eigenvalues is ``tol² = max(m, n)² · eps32² ·
σ_max²``. Their ratio is at most ``eps64 / eps32² · min(m, n) / max(m, n) ≤ 2^-52 / 2^-46 = 1/64``: an
eigenvalue can only cross the threshold if its singular value lies within 1 % of ``tol`` (in this
worst case; blocked sums do far better). That close to the threshold the count depends on rounding in
either computation (matrix_rank's float32 SVD has errors of order ``eps32 · σ_max`` too), which is why
the report also gives the rank at multiples of the tolerance. The same in float32 would not work: ``eps32 / eps32² = 2^23``, the perturbation swamps the threshold (the issue
measured ranks of 2047 for 2046 and 121 for 64 that way).

On a CUDA device (``device="cuda"``, or ``"auto"`` when one is present) the same is computed with torch on
the device. Tall matrices (embeddings, lm_head) are streamed in row blocks, so their delta is never held
whole; other matrices hold one float32 delta at a time.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__, validate
from ..errors import SubnetscopeError, UsageError
from ..io.checkpoint import Checkpoint
from ..io.reader import FileHandles
from ..plan import Pair, make_plan
from ..refs import load_checkpoint
from ..report.schema import Finding

if TYPE_CHECKING:
    from ..engine.executors.base import Executor
from ..results.rank import (
    DEFAULT_RTOL_MULTIPLIERS,
    EPS32,
    METHOD,
    NONFINITE_DETAIL,
    REPORT_KIND,
    MatrixRank,
    RankReport,
)
from .rank_math import (
    _gram_torch,
    delta_rank,
    gram,
    gram_eigenvalues,
    pair_gram,
    rank_from_gram,
    read_delta,
    read_matrix,
    resolve_device,
    to_float32,
)

__all__ = [
    "DEFAULT_RTOL_MULTIPLIERS",
    "EPS32",
    "METHOD",
    "NONFINITE_DETAIL",
    "REPORT_KIND",
    "MatrixRank",
    "RankReport",
    "cpu_workers",
    "delta_rank",
    "gram",
    "gram_eigenvalues",
    "pair_gram",
    "rank_from_gram",
    "rank_report",
    "rankable",
    "read_delta",
    "read_matrix",
    "resolve_device",
    "select_pairs",
    "to_float32",
]


def rankable(pair: Pair) -> bool:
    """A 2-D float tensor with something to compare."""
    return (
        len(pair.target.shape) == 2
        and len(pair.base.shape) == 2
        and pair.base.dtype.is_float
        and pair.target.dtype.is_float
        and pair.compare_numel > 0
    )


def select_pairs(
    pairs: Sequence[Pair], sample: int | None = None, layers: Sequence[int] | None = None, seed: int = 0
) -> list[Pair]:
    """The 2-D float pairs to rank: those in ``layers`` (when given), then ``sample`` of them drawn with
    ``seed`` (when given), in plan order."""
    cand = [p for p in pairs if rankable(p)]
    if not cand:
        raise UsageError(
            "no 2-D float weight tensors to rank", "rank compares weight matrices of two checkpoints"
        )
    if layers is not None:
        present = sorted({p.layer for p in cand if p.layer is not None})
        missing = sorted(set(layers) - set(present))
        if missing:
            span = f"{present[0]}..{present[-1]}" if present else "none"
            raise UsageError(
                f"`layers`: layer(s) {', '.join(map(str, missing))} not in the checkpoint (layers: {span})",
                "pick layers that exist",
            )
        want = set(layers)
        cand = [p for p in cand if p.layer in want]
    if sample is not None:
        if sample < 1:
            raise UsageError(f"`sample` {sample}: must be at least 1", "give a positive number")
        if sample < len(cand):
            keep = sorted(random.Random(seed).sample(range(len(cand)), sample))
            cand = [cand[i] for i in keep]
    return cand


def _describe(ck: Checkpoint) -> dict[str, Any]:
    from ..comparison import describe

    return describe(ck)


def rank_report(
    base: str | os.PathLike[str] | Checkpoint,
    target: str | os.PathLike[str] | Checkpoint,
    *,
    sample: int | None = None,
    layers: Sequence[int] | None = None,
    seed: int = 0,
    device: str | None = "auto",
    rtol_multipliers: Sequence[float] = DEFAULT_RTOL_MULTIPLIERS,
    spectrum_k: int | None = None,
    progress: bool = False,
    on_matrix: Callable[[MatrixRank], None] | None = None,
    jobs: int | None = None,
    executor: str | Executor | None = None,
    ray_address: str | None = None,
    resume: str | os.PathLike[str] | None = None,
) -> RankReport:
    """Rank every 2-D weight update of ``target`` against ``base`` (or a sample / some layers of them).

    Args:
        base, target: checkpoint references (as :func:`subnetscope.compare`) or opened checkpoints.
        sample: rank only this many matrices, drawn at random with ``seed``.
        layers: rank only matrices of these layers (embeddings and lm_head are outside layers).
        device: ``"auto"`` (CUDA when torch sees one), ``"cpu"`` or ``"cuda[:N]"``.
        rtol_multipliers: also report the rank at these multiples of the default tolerance.
        spectrum_k: also compute :func:`subnetscope.anatomy.spectrum.spectrum_metrics` with this k.
        progress: a progress bar on stderr (when it is a terminal).
        on_matrix: called with each matrix's result, in order, once every matrix is ranked.
        jobs, executor, ray_address: where the matrices are ranked, one whole matrix per worker at a time
            (as for :func:`subnetscope.compare`). The default on the CPU: :func:`cpu_workers` threads, each
            with one BLAS thread; worker processes and Ray tasks limit their BLAS to one thread too. A CUDA
            ``device`` runs on the calling thread (executor None, ``auto``, ``serial`` or ``threads``).
        resume: a resume directory keeping each finished matrix's result (the report is the same).
    """
    from ..engine.job import Job, Row
    from ..engine.run import Codec, run

    mults = validate.positive_reals(rtol_multipliers, "rtol_multipliers")
    if spectrum_k is not None:
        validate.int_range(spectrum_k, "spectrum_k")
    if sample is not None:
        validate.int_range(sample, "sample")
    if layers is not None:
        if isinstance(layers, (str, bytes)):
            raise UsageError(f"layers={layers!r} is not a list of layer numbers", "give e.g. [0, 5, 10]")
        layers = [validate.int_range(x, f"layers[{i}]", 0) for i, x in enumerate(layers)]
    validate.integer(seed, "seed")
    validate.jobs(jobs)
    b = base if isinstance(base, Checkpoint) else load_checkpoint(base)
    t = target if isinstance(target, Checkpoint) else load_checkpoint(target)
    dev = resolve_device(device)
    plan = make_plan(b, t)
    todo = select_pairs(plan.pairs, sample, layers, seed)
    rows = [
        Row(k, p.name, (), p.compare_numel, p, ordered=True,
            work=p.compare_numel * (p.base.dtype.itemsize + p.target.dtype.itemsize))
        for k, p in enumerate(todo)
    ]  # fmt: skip
    ranker = MatrixRanker(mults, dev, spectrum_k, seed)
    job = Job(rows, [ranker], max(8, max((r.numel for r in rows), default=0) + 8), "rank", progress)
    identity = None
    if resume is not None:
        from ..fingerprint import of_checkpoint

        identity = {"kind": "subnetscope.rank", "base": of_checkpoint(b).to_json(),
                    "target": of_checkpoint(t).to_json(), "matrices": [p.name for p in todo],
                    "rtol_multipliers": mults, "spectrum_k": spectrum_k, "seed": seed, "device": dev,
                    "method": METHOD, "tool_version": __version__}  # fmt: skip
    codec = Codec(
        lambda res: None if res[0] is None else res[0].to_json(),
        lambda obj: [None if obj is None else MatrixRank.from_json(obj)],
    )
    out: list[MatrixRank] = []
    findings: list[Finding] = []
    try:
        with _one_blas_thread(dev == "cpu") as limited:
            ex = _rank_executor(executor, jobs, ray_address, dev, len(todo), limited)
            results = run(job, ex, resume, identity, codec)
    finally:
        ranker.close()
    for pair, (m,) in zip(todo, results):
        if m is None:
            findings.append(Finding("nonfinite", pair.name, NONFINITE_DETAIL))
            continue
        out.append(m)
        if on_matrix is not None:
            on_matrix(m)
    selection = {
        "candidates": sum(1 for p in plan.pairs if rankable(p)),
        "ranked": len(out),
        "nonfinite": len(findings),
        "sample": sample,
        "layers": list(layers) if layers is not None else None,
        "seed": seed,
    }
    return RankReport(
        _describe(b), _describe(t), out, mults, dev, METHOD, selection, __version__, spectrum_k, findings
    )


class MatrixRanker:
    """The rank as an engine consumer: a row is one whole matrix pair, read and ranked by
    :func:`_rank_pair` in one go (the engine reads nothing for it); the result is its :class:`MatrixRank`,
    or None when the update holds NaN or Inf."""

    def __init__(self, mults: list[float], device: str, spectrum_k: int | None, seed: int) -> None:
        self.args = (mults, device, spectrum_k, seed)
        self.handles = FileHandles()
        self._driver = os.getpid()
        self._limited = -1

    def __getstate__(self) -> dict[str, Any]:
        return {"args": self.args, "driver": self._driver}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(*state["args"])  # type: ignore[misc]
        self._driver = state["driver"]

    def close(self) -> None:
        """Close the checkpoint descriptors this process opened."""
        self.handles.close()

    def chunk(self, row: Any, start: int, count: int, arrays: Sequence[np.ndarray]) -> list[Any]:
        """Rank the row's matrix (on its first chunk; a row is one chunk)."""
        if start:
            return []
        pid = os.getpid()
        if pid != self._driver and self._limited != pid:  # a worker process: one BLAS thread, for good
            self._limited = pid
            try:
                from threadpoolctl import threadpool_limits

                threadpool_limits(limits=1, user_api="blas")
            except ImportError:
                pass
        mults, device, spectrum_k, seed = self.args
        return [_rank_pair(row.payload, self.handles, mults, device, spectrum_k, seed)]

    def merge(self, row: Any, state: Any, partial: Any) -> list[Any]:
        """The matrix's result (a row has one chunk with a result)."""
        return list(state or []) + list(partial)

    def finish(self, row: Any, state: Any) -> MatrixRank | None:
        """The matrix's :class:`MatrixRank`, or None (NaN or Inf)."""
        return state[0] if state else None


def _rank_executor(
    executor: str | Executor | None, jobs: int | None, ray_address: str | None, device: str, matrices: int,
    limited: bool,
) -> Executor:  # fmt: skip
    from ..engine.executors import SerialExecutor, ThreadExecutor
    from ..engine.executors.factory import resolve

    name = executor if executor is None or isinstance(executor, str) else executor.name
    if device != "cpu":
        if name not in (None, "auto", "serial", "threads"):
            raise UsageError(
                f"device {device!r} ranks on the calling process only (got executor {name!r})",
                "use the serial or threads executor, or device='cpu'",
            )
        return SerialExecutor()
    if name is None or (name == "threads" and jobs is None):
        workers = cpu_workers(matrices) if limited else 1
        return ThreadExecutor(workers) if workers > 1 else SerialExecutor()
    return resolve(executor, jobs, ray_address)


def cpu_workers(matrices: int) -> int:
    """How many matrices to rank at once on the CPU: ``SUBNETSCOPE_RANK_WORKERS`` if set, else one per core
    not already busy (CPUs this process may use minus the 1-minute load average), at least 1.

    Each matrix runs its BLAS and LAPACK calls on one thread (:func:`_one_blas_thread`), so the result of a
    matrix does not depend on this number. Why not BLAS threads instead: the matrices are small
    (576 × 576 Gram matrices for SmolLM2), and two OpenBLAS threads on a busy 2-core machine made every
    call 4–15× slower than one (each waits for a descheduled thread): that made a full pass take minutes.
    """
    env = os.environ.get("SUBNETSCOPE_RANK_WORKERS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            raise UsageError(
                f"SUBNETSCOPE_RANK_WORKERS={env!r} is not a number", "set it to a positive integer"
            ) from None
        if n < 1:
            raise UsageError(f"SUBNETSCOPE_RANK_WORKERS={n}: must be at least 1", "set it to 1 or more")
    else:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        n = max(1, min(cpus, int(cpus - load + 0.5)))
    return max(1, min(n, matrices))


@contextmanager
def _one_blas_thread(enabled: bool) -> Iterator[bool]:
    """Limit BLAS/LAPACK to one thread while ranking (with threadpoolctl); yields whether it could."""
    if not enabled:
        yield False
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield False
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield True


def _rank_pair(
    pair: Pair, handles: FileHandles, mults: list[float], device: str, spectrum_k: int | None, seed: int
) -> MatrixRank | None:
    """One matrix's rank, or None when its update holds NaN or Inf (no rank is defined then)."""
    cols = pair.target.shape[1]
    rows = pair.compare_numel // cols
    spec = None
    # NaN/Inf and overflowing differences are found below, from the Gram matrix: no numpy warnings
    with np.errstate(over="ignore", invalid="ignore"):
        try:
            if spectrum_k is not None:
                from .spectrum import spectrum_metrics

                w0 = read_matrix(pair.base, rows, handles)
                w1 = read_matrix(pair.target, rows, handles)
                d = read_delta(pair, handles)
                if not np.isfinite(d).all():
                    return None
                g = _gram_torch(d, device) if device != "cpu" else gram(d)
                spec = spectrum_metrics(w0, w1, spectrum_k, delta=d, seed=seed, device=device)
                del w0, w1, d
            elif device != "cpu":
                g = _gram_torch(read_delta(pair, handles), device)
            else:
                g, rows, cols = pair_gram(pair, handles)
        except MemoryError:
            raise SubnetscopeError(
                f"{pair.name}: out of memory ranking a {rows}x{cols} delta",
                "rank fewer matrices: give `sample` or `layers`",
            ) from None
    # a float32 delta squared and summed in float64 cannot overflow: a non-finite Gram matrix means a NaN or
    # Inf in the delta (one in either checkpoint, or a difference of finite values beyond float32's range)
    if not np.isfinite(g).all():
        return None
    m = rank_from_gram(g, rows, cols, mults, device, pair.name)
    m.layer, m.kind, m.dtype, m.spectrum = pair.layer, pair.kind, pair.target.dtype.code, spec
    return m
