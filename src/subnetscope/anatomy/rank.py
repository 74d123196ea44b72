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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__, validate
from ..dtypes import DType, decode
from ..errors import SubnetscopeError, UsageError
from ..io.checkpoint import Checkpoint
from ..io.reader import ChunkReader, FileHandles
from ..io.safetensors_header import TensorInfo
from ..naming import KINDS
from ..plan import Pair, make_plan
from ..refs import load_checkpoint
from ..report.schema import SCHEMA_VERSION, Finding, check_schema, load_json

if TYPE_CHECKING:
    from ..engine.executors.base import Executor

REPORT_KIND = "subnetscope.rank"
#: float32 machine epsilon (torch.finfo(torch.float32).eps)
EPS32 = float(np.finfo(np.float32).eps)
#: ranks are also reported at these multiples of the default tolerance
DEFAULT_RTOL_MULTIPLIERS: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)
#: the finding of a matrix whose update holds NaN or Inf
NONFINITE_DETAIL = "the update holds NaN or Inf values: no rank is defined, the matrix was left out"
METHOD = "gram-eigvalsh-float64"
#: float64 elements per block when the Gram matrix is accumulated (64 MiB)
_BLOCK_ELEMENTS = 8 << 20


@dataclass
class MatrixRank:
    """Rank statistics of one 2-D update."""

    name: str
    rows: int
    cols: int
    rank: int  #: numerical rank at the default tolerance
    sigma_max: float
    tol: float  #: σ_max · max(rows, cols) · eps32
    stable_rank: float  #: ‖Δ‖_F² / σ_max²
    effective_rank: float  #: exp(entropy of σ / Σσ) over σ > tol (Roy & Vetterli)
    ranks_at: list[int]  #: rank at each rtol multiplier of the report
    sigma_min: float  #: smallest singular value (resolved to ~1e-8 · σ_max)
    layer: int | None = None
    kind: str = "other"
    dtype: str = ""
    spectrum: dict[str, Any] | None = None  #: :mod:`subnetscope.anatomy.spectrum` metrics, when asked

    @property
    def max_rank(self) -> int:
        """min(rows, cols)."""
        return min(self.rows, self.cols)

    @property
    def rank_pct(self) -> float:
        """Rank as a percentage of min(rows, cols)."""
        return 100.0 * self.rank / self.max_rank if self.max_rank else 0.0

    def to_json(self) -> dict[str, Any]:
        """JSON form (``name``, ``rank`` and ``max_rank`` are stable keys)."""
        d: dict[str, Any] = {
            "name": self.name,
            "shape": [self.rows, self.cols],
            "dtype": self.dtype,
            "layer": self.layer,
            "kind": self.kind,
            "rank": self.rank,
            "max_rank": self.max_rank,
            "rank_pct": self.rank_pct,
            "stable_rank": self.stable_rank,
            "effective_rank": self.effective_rank,
            "sigma_max": self.sigma_max,
            "sigma_min": self.sigma_min,
            "tol": self.tol,
            "ranks_at": list(self.ranks_at),
        }
        if self.spectrum is not None:
            d["spectrum"] = self.spectrum
        return d

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> MatrixRank:
        """Inverse of :meth:`to_json`."""
        rows, cols = obj["shape"]
        return cls(
            name=obj["name"], rows=int(rows), cols=int(cols), rank=int(obj["rank"]),
            sigma_max=float(obj["sigma_max"]), tol=float(obj["tol"]), stable_rank=float(obj["stable_rank"]),
            effective_rank=float(obj["effective_rank"]), ranks_at=[int(r) for r in obj["ranks_at"]],
            sigma_min=float(obj.get("sigma_min", 0.0)), layer=obj.get("layer"), kind=obj.get("kind", "other"),
            dtype=obj.get("dtype", ""), spectrum=obj.get("spectrum"),
        )  # fmt: skip


def _summary(items: Sequence[MatrixRank], nmult: int) -> dict[str, Any]:
    if not items:
        return {"matrices": 0}
    pct = [m.rank_pct for m in items]
    at = [
        sum(100.0 * m.ranks_at[i] / m.max_rank if m.max_rank else 0.0 for m in items) / len(items)
        for i in range(nmult)
    ]
    out: dict[str, Any] = {
        "matrices": len(items),
        "mean_rank_pct": sum(pct) / len(pct),
        "min_rank_pct": min(pct),
        "max_rank_pct": max(pct),
        "full_rank": sum(1 for m in items if m.rank == m.max_rank),
        "mean_stable_rank": sum(m.stable_rank for m in items) / len(items),
        "mean_effective_rank": sum(m.effective_rank for m in items) / len(items),
        "mean_effective_rank_pct": sum(100 * m.effective_rank / m.max_rank for m in items if m.max_rank)
        / len(items),
        "mean_rank_pct_at": at,
    }
    spec = [m.spectrum for m in items if m.spectrum and m.spectrum.get("enrichment") is not None]
    if spec:
        out["mean_enrichment"] = sum(float(s["enrichment"]) for s in spec) / len(spec)
    return out


@dataclass
class RankReport:
    """Result of :func:`rank_report`."""

    base: dict[str, Any]
    target: dict[str, Any]
    tensors: list[MatrixRank]
    rtol_multipliers: list[float] = field(default_factory=lambda: list(DEFAULT_RTOL_MULTIPLIERS))
    device: str = "cpu"
    method: str = METHOD
    selection: dict[str, Any] = field(default_factory=dict)  #: sample / layers / seed / candidates
    tool_version: str = __version__
    spectrum_k: int | None = None
    #: matrices that were not ranked (``nonfinite``: the update holds NaN or Inf)
    findings: list[Finding] = field(default_factory=list)

    def by_kind(self) -> dict[str, dict[str, Any]]:
        """Means per matrix type (unweighted over matrices), in KINDS order."""
        groups: dict[str, list[MatrixRank]] = {}
        for m in self.tensors:
            groups.setdefault(m.kind, []).append(m)
        return {k: _summary(groups[k], len(self.rtol_multipliers)) for k in KINDS if k in groups}

    def overall(self) -> dict[str, Any]:
        """Means over every ranked matrix."""
        return _summary(self.tensors, len(self.rtol_multipliers))

    def to_json(self) -> dict[str, Any]:
        """The versioned JSON document (``"report": "subnetscope.rank"``)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "report": REPORT_KIND,
            "tool": {"name": "subnetscope", "version": self.tool_version},
            "method": self.method,
            "device": self.device,
            "tolerance": "sigma_max * max(rows, cols) * eps(float32), as torch.linalg.matrix_rank",
            "eps": EPS32,
            "rtol_multipliers": list(self.rtol_multipliers),
            "spectrum_k": self.spectrum_k,
            "base": self.base,
            "target": self.target,
            "selection": self.selection,
            "overall": self.overall(),
            "by_kind": self.by_kind(),
            "findings": [f.to_json() for f in self.findings],
            "tensors": [m.to_json() for m in self.tensors],
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> RankReport:
        """Rebuild from :meth:`to_json` output (checks kind and schema version)."""
        check_schema(obj, REPORT_KIND)
        return cls(
            base=obj.get("base", {}), target=obj.get("target", {}),
            tensors=[MatrixRank.from_json(t) for t in obj["tensors"]],
            rtol_multipliers=[float(x) for x in obj.get("rtol_multipliers", DEFAULT_RTOL_MULTIPLIERS)],
            device=obj.get("device", "cpu"), method=obj.get("method", METHOD),
            selection=obj.get("selection", {}), tool_version=obj.get("tool", {}).get("version", ""),
            spectrum_k=obj.get("spectrum_k"), findings=[Finding(**f) for f in obj.get("findings", [])],
        )  # fmt: skip

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RankReport:
        """Read a rank report written with ``-o``."""
        return cls.from_json(load_json(path))


# -- the arithmetic ---------------------------------------------------------------------------------------------


def resolve_device(device: str | None) -> str:
    """``"auto"``/None → ``"cuda"`` when torch sees a GPU, else ``"cpu"``; otherwise checked and returned."""
    if device in (None, "auto"):
        # skip the (slow) torch import on machines without an NVIDIA driver
        if not os.path.exists("/proc/driver/nvidia/version"):
            return "cpu"
        try:
            import torch
        except ImportError:
            return "cpu"
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return "cpu"
    if device.startswith("cuda"):
        try:
            import torch
        except ImportError:
            raise UsageError(
                f"device {device!r} needs torch", "pip install torch, or use --device cpu"
            ) from None
        if not torch.cuda.is_available():
            raise UsageError(f"device {device!r}: torch sees no CUDA GPU", "use --device cpu or auto")
        return device
    raise UsageError(f"unknown device {device!r}", "use auto, cpu or cuda[:N]")


def gram(delta: np.ndarray) -> np.ndarray:
    """float64 Gram matrix of the smaller side of a 2-D float array, accumulated in column/row blocks."""
    m, n = delta.shape
    if m >= n:
        g = np.zeros((n, n), dtype=np.float64)
        step = max(1, _BLOCK_ELEMENTS // max(n, 1))
        for r in range(0, m, step):
            blk = delta[r : r + step].astype(np.float64)
            g += blk.T @ blk
        return g
    g = np.zeros((m, m), dtype=np.float64)
    step = max(1, _BLOCK_ELEMENTS // max(m, 1))
    for c in range(0, n, step):
        blk = delta[:, c : c + step].astype(np.float64)
        g += blk @ blk.T
    return g


def gram_eigenvalues(g: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Eigenvalues (ascending, float64, clamped at 0) of a symmetric Gram matrix."""
    if device != "cpu":
        import torch

        lam_t = torch.linalg.eigvalsh(torch.from_numpy(g).to(device))
        lam = lam_t.cpu().numpy()
    else:
        lam = np.linalg.eigvalsh(g)
    out: np.ndarray = np.maximum(lam, 0.0)
    return out


def _gram_torch(delta: np.ndarray, device: str) -> np.ndarray:
    import torch

    d = torch.from_numpy(np.ascontiguousarray(delta)).to(device).double()
    g = d.T @ d if d.shape[0] >= d.shape[1] else d @ d.T
    out: np.ndarray = g.cpu().numpy()
    return out


def rank_from_gram(
    g: np.ndarray, rows: int, cols: int, rtol_multipliers: Sequence[float] = DEFAULT_RTOL_MULTIPLIERS,
    device: str = "cpu", name: str = "",
) -> MatrixRank:  # fmt: skip
    """Rank statistics from the float64 Gram matrix of the smaller side of a ``rows × cols`` delta."""
    lam = gram_eigenvalues(g, device)
    fro2 = float(np.trace(g))
    return _from_eigenvalues(lam, fro2, rows, cols, rtol_multipliers, name)


def _from_eigenvalues(
    lam: np.ndarray, fro2: float, rows: int, cols: int, mults: Sequence[float], name: str
) -> MatrixRank:
    sig = np.sqrt(lam)
    smax = float(sig[-1]) if sig.size else 0.0
    tol = smax * max(rows, cols) * EPS32
    if smax == 0.0:
        return MatrixRank(name, rows, cols, 0, 0.0, 0.0, 0.0, 0.0, [0] * len(mults), 0.0)
    rank = int(np.count_nonzero(sig > tol))
    ranks_at = [int(np.count_nonzero(sig > m * tol)) for m in mults]
    kept = sig[sig > tol]
    p = kept / kept.sum()
    erank = float(np.exp(-np.sum(p * np.log(p))))
    return MatrixRank(name, rows, cols, rank, smax, tol, fro2 / (smax * smax), erank, ranks_at, float(sig[0]))


def delta_rank(
    delta: Any,
    rtol_multipliers: Sequence[float] = DEFAULT_RTOL_MULTIPLIERS,
    device: str = "cpu",
    name: str = "",
) -> MatrixRank:
    """Rank statistics of one 2-D float32 delta (numpy array or torch tensor); ``rank`` equals
    ``torch.linalg.matrix_rank(delta)`` (see the module docstring for the argument)."""
    rtol_multipliers = validate.positive_reals(rtol_multipliers, "rtol_multipliers")
    d = delta.detach().cpu().numpy() if hasattr(delta, "detach") else np.asarray(delta)
    if d.ndim != 2:
        raise UsageError(f"rank needs a 2-D matrix, got shape {list(d.shape)}", "pass a weight matrix")
    d = d.astype(np.float32, copy=False)
    g = _gram_torch(d, device) if device != "cpu" else gram(d)
    return rank_from_gram(g, d.shape[0], d.shape[1], rtol_multipliers, device, name)


# -- reading checkpoints ----------------------------------------------------------------------------------------


def to_float32(bits: np.ndarray, dtype: DType) -> np.ndarray:
    """Values of raw ``bits`` as float32 (exact for bf16/fp16/fp8/fp32)."""
    if dtype.code == "BF16":
        out: np.ndarray = (bits.astype(np.uint32) << 16).view(np.float32)
        return out
    if dtype.code == "F16":
        return bits.view(np.float16).astype(np.float32)
    if dtype.code == "F32":
        return bits.view(np.float32).copy()
    return decode(bits, dtype).astype(np.float32)


def _values(r: ChunkReader, info: TensorInfo, start: int, count: int, wide: bool) -> np.ndarray:
    bits = r.read(info, start, count)
    return decode(bits, info.dtype) if wide else to_float32(bits, info.dtype)


def read_delta(pair: Pair, handles: FileHandles, rows: slice | None = None) -> np.ndarray:
    """The float32 delta ``target - base`` of a 2-D pair (its shared rows, or the row range ``rows``)."""
    cols = pair.target.shape[1]
    nrows = pair.compare_numel // cols if cols else 0
    r0, r1, _ = (rows or slice(0, nrows)).indices(nrows)
    count = (r1 - r0) * cols
    wide = "F64" in (pair.base.dtype.code, pair.target.dtype.code)
    ra, rb = ChunkReader(handles, count * 8), ChunkReader(handles, count * 8)
    a = _values(ra, pair.base, r0 * cols, count, wide)
    b = _values(rb, pair.target, r0 * cols, count, wide)
    d = b - a
    return d.astype(np.float32, copy=False).reshape(r1 - r0, cols)


def read_matrix(info: TensorInfo, rows: int, handles: FileHandles) -> np.ndarray:
    """The first ``rows`` rows of a 2-D tensor as float32."""
    cols = info.shape[1]
    r = ChunkReader(handles, rows * cols * info.dtype.itemsize)
    return to_float32(r.read(info, 0, rows * cols), info.dtype).reshape(rows, cols)


def pair_gram(pair: Pair, handles: FileHandles) -> tuple[np.ndarray, int, int]:
    """(float64 Gram matrix of the smaller side, rows, cols) of a pair's float32 delta; tall matrices are
    read in row blocks, so their delta is never held whole."""
    cols = pair.target.shape[1]
    rows = pair.compare_numel // cols
    if rows < cols:
        return gram(read_delta(pair, handles)), rows, cols
    g = np.zeros((cols, cols), dtype=np.float64)
    step = max(1, min(rows, _BLOCK_ELEMENTS // cols))
    buf = np.empty((step, cols), dtype=np.float64)  # reused: a fresh 64 MiB block per step page-faults
    for r in range(0, rows, step):
        d = read_delta(pair, handles, slice(r, min(rows, r + step)))
        blk = buf[: d.shape[0]]
        np.copyto(blk, d)
        g += blk.T @ blk
    return g, rows, cols


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
                f"--rank-layers: layer(s) {', '.join(map(str, missing))} not in the checkpoint (layers: {span})",
                "pick layers that exist",
            )
        want = set(layers)
        cand = [p for p in cand if p.layer in want]
    if sample is not None:
        if sample < 1:
            raise UsageError(f"--rank-sample {sample}: must be at least 1", "give a positive number")
        if sample < len(cand):
            keep = sorted(random.Random(seed).sample(range(len(cand)), sample))
            cand = [cand[i] for i in keep]
    return cand


def parse_layers(text: str | None) -> list[int] | None:
    """``"0,5,10"`` or ``"0-3,8"`` → ``[0, 5, 10]`` / ``[0, 1, 2, 3, 8]``."""
    if text is None:
        return None
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                out.extend(range(int(lo), int(hi) + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise UsageError(
                f"--rank-layers: {part!r} is not a layer number or range", "use e.g. 0,5,10 or 0-3"
            ) from None
    if not out:
        raise UsageError("--rank-layers: no layer given", "use e.g. 0,5,10")
    return sorted(set(out))


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
                "use --rank-sample or --rank-layers",
            ) from None
    # a float32 delta squared and summed in float64 cannot overflow: a non-finite Gram matrix means a NaN or
    # Inf in the delta (one in either checkpoint, or a difference of finite values beyond float32's range)
    if not np.isfinite(g).all():
        return None
    m = rank_from_gram(g, rows, cols, mults, device, pair.name)
    m.layer, m.kind, m.dtype, m.spectrum = pair.layer, pair.kind, pair.target.dtype.code, spec
    return m
