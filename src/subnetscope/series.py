"""``series``: the dynamics of one training run from its checkpoints, reading each checkpoint once.

For INIT and checkpoints CKPT_1 … CKPT_K (and the final one, by default CKPT_K) every tensor is read chunk
by chunk from all of them together (K + 1 chunk buffers per worker thread), and a fused kernel counts, per
checkpoint k:

- ``changed_vs_init``: elements with ``|CKPT_k − INIT| > tol`` (sparsity vs init, paper Figure 5);
- ``changed_vs_prev``: ``|CKPT_k − CKPT_{k−1}| > tol`` (consecutive-step sparsity; CKPT_0 is INIT);
- ``outside_final``: elements changed vs init at k that are *not* in the final subnetwork (paper Figure 6;
  ``outside_final_step`` is the same for the consecutive-step update);
- ``ever_updated``: the running union of elements changed vs init at some checkpoint ≤ k;
- the same with bit identity instead of the tolerance (``identical_vs_init`` / ``identical_vs_prev``,
  ``ever_touched_bits``);

and at the end the split of every parameter into *never updated* / *cancelled* (updated at some checkpoint
but back within tol of its initial value in the final one) / *final subnetwork* (changed vs init in the
final checkpoint); the three sum to the parameter count (paper Figure 2). Only counts leave a chunk, so
memory is a few chunks per checkpoint whatever the model size.

"Updated" is ``|Δ| > tol`` with the ``compare`` semantics (exact by default, or the authors' reference
arithmetic); bit-identical elements are always unchanged.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__, validate
from .engine.job import Job, Row
from .engine.run import Codec, run
from .errors import MismatchError, UsageError
from .io.checkpoint import INDEX_NAME, Checkpoint
from .io.safetensors_header import TensorInfo
from .results.schema import Finding
from .results.series import REPORT_KIND, SeriesReport, StepInfo, TensorSeries

if TYPE_CHECKING:
    from .engine.executors.base import Executor

CheckpointLike = str | os.PathLike[str] | Checkpoint

__all__ = [
    "REPORT_KIND",
    "CheckpointLike",
    "SeriesReport",
    "StepInfo",
    "TensorSeries",
    "expand_checkpoints",
    "series",
    "step_of",
]

# ---------------------------------------------------------------------------------------------------------
# checkpoint lists

_CKPT_DIR = re.compile(r"^checkpoint-(\d+)$")


def _has_weights(p: Path) -> bool:
    return (p / INDEX_NAME).is_file() or any(p.glob("*.safetensors"))


def step_of(ref: str | os.PathLike[str]) -> int | None:
    """Training step of a ``checkpoint-<step>`` path (None for other names)."""
    m = _CKPT_DIR.match(Path(ref).name)
    return int(m.group(1)) if m else None


def expand_checkpoints(refs: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Replace every run directory (holding ``checkpoint-<step>`` folders, no weights of its own) by its
    checkpoints sorted by step (``checkpoint-10`` after ``checkpoint-9``); keep other refs as given."""
    out: list[str] = []
    for ref in refs:
        p = Path(ref)
        if p.is_dir() and not _has_weights(p):
            subs = []
            for d in p.iterdir():
                m = _CKPT_DIR.match(d.name)
                if m and d.is_dir():
                    subs.append((int(m.group(1)), d))
            if subs:
                out.extend(str(d) for _, d in sorted(subs))
                continue
        out.append(str(ref))
    return out


# ---------------------------------------------------------------------------------------------------------
# the pass


@dataclass
class _Tensor:
    index: int
    name: str
    infos: list[TensorInfo]  #: one per row (INIT, steps, [final])
    layer: int | None
    kind: str

    @property
    def numel(self) -> int:
        return self.infos[0].numel


def _ck(x: CheckpointLike) -> Checkpoint:
    from .refs import load_checkpoint

    return x if isinstance(x, Checkpoint) else load_checkpoint(x)


def _same_path(a: Checkpoint, b: Checkpoint) -> bool:
    try:
        return a.root.resolve() == b.root.resolve()
    except OSError:  # pragma: no cover
        return False


def _same_layout(a: Checkpoint, b: Checkpoint) -> bool:
    """Whether ``b`` has exactly ``a``'s tensor names, shapes and dtypes (so aligning finds nothing)."""
    if len(a.tensors) != len(b.tensors):
        return False
    for name, t in a.tensors.items():
        u = b.tensors.get(name)
        if u is None or u.shape != t.shape or u.dtype != t.dtype:
            return False
    return True


def _align(
    init: Checkpoint, rows: list[Checkpoint], labels: list[str]
) -> tuple[list[_Tensor], list[Finding]]:
    from .plan import make_plan

    findings: list[Finding] = []
    ok: dict[str, list[TensorInfo]] = {}
    meta: dict[str, tuple[int | None, str]] = {}
    first = True
    seen: set[tuple[str, str, str]] = set()
    for ck, label in zip(rows, labels):
        if not first and _same_layout(init, ck):  # the usual case: skip re-planning (12 ms per 1B row)
            for infos in ok.values():
                infos.append(ck.tensors[infos[0].name])
            continue
        plan = make_plan(init, ck)
        for f in plan.findings:
            key = (f.kind, f.tensor, f.detail)
            if key not in seen:
                seen.add(key)
                findings.append(Finding(f.kind, f.tensor, f"{label}: {f.detail}"))
        good = {p.name: p for p in plan.pairs if p.base.shape == p.target.shape}
        for p in plan.pairs:
            if p.name not in good:
                findings.append(
                    Finding("skipped", p.name, f"{label}: shape differs from init; not in the series")
                )
        if first:
            for name, p in good.items():
                ok[name] = [p.base, p.target]
                meta[name] = (p.layer, p.kind)
            first = False
        else:
            for name in list(ok):
                if name in good:
                    ok[name].append(good[name].target)
                else:
                    del ok[name]
    tensors = [_Tensor(i, n, infos, *meta[n]) for i, (n, infos) in enumerate(ok.items())]
    return tensors, findings


def series(
    init: CheckpointLike,
    checkpoints: Sequence[CheckpointLike] | CheckpointLike,
    *,
    final: CheckpointLike | None = None,
    tolerance: float = 1e-5,
    semantics: str = "exact",
    jobs: int | None = None,
    chunk_elements: int | None = None,
    progress: bool = False,
    executor: str | Executor | None = "threads",
    ray_address: str | None = None,
    resume: str | os.PathLike[str] | None = None,
) -> SeriesReport:
    """Sparsity dynamics of a run: INIT and its checkpoints in training order, each read once.

    Args:
        init: the checkpoint training started from.
        checkpoints: the run's checkpoints in order (or one run directory); a run directory of ``checkpoint-<step>`` folders is
            expanded to them, sorted by step (see :func:`expand_checkpoints`).
        final: the checkpoint whose changed set is "the final subnetwork" (default: the last one); when
            it is not among ``checkpoints`` it is read in the same pass.
        tolerance: an element is updated when ``|Δ| > tolerance``.
        semantics: ``"exact"`` or ``"reference"`` (as in :func:`subnetscope.compare`).
        jobs: workers (default: CPUs, at most 8); the result does not depend on it.
        chunk_elements: elements per read and checkpoint (default 2 Mi, less with many checkpoints).
        progress: progress bar on stderr (only on a terminal).
        executor: where the pass runs, as for :func:`subnetscope.compare`: ``"threads"`` (default),
            ``"serial"``, ``"processes"``, ``"auto"`` (processes for a series of 1 GiB or more, the command
            line's default), ``"ray"``, or an :class:`~subnetscope.engine.executors.Executor`; the result
            does not depend on it.
        ray_address: with ``executor="ray"``: the cluster to join (default: start a local instance).
        resume: a directory keeping finished tensors' counters (:mod:`subnetscope.engine.resume`): an
            interrupted run given the same directory continues where it stopped, with the same report.

    Tensors are aligned by name; a tensor missing from a checkpoint or of another shape than in INIT is
    left out of the whole series, with a finding.
    """
    from .engine.executors.factory import resolve

    tolerance = validate.tolerance(tolerance)
    validate.semantics(semantics)
    validate.jobs(jobs)
    chunk_elements = validate.chunk_elements(chunk_elements)
    if isinstance(executor, str) or executor is None:
        from .engine.executors.base import EXECUTORS

        validate.choice(executor or "threads", "executor", EXECUTORS)
    ex = resolve(executor, jobs, ray_address)
    if isinstance(checkpoints, (str, os.PathLike, Checkpoint)):
        checkpoints = [checkpoints]  # one run directory
    refs: list[CheckpointLike] = []
    for ref in checkpoints:
        if isinstance(ref, Checkpoint):
            refs.append(ref)
        else:
            refs.extend(expand_checkpoints([ref]))
    if not refs:
        raise UsageError("no checkpoint given", "give INIT and at least one checkpoint (or a run directory)")
    ick = _ck(init)
    cks = [_ck(r) for r in refs]
    steps = []
    for k, ck in enumerate(cks, 1):
        label = ck.ref or str(ck.root)
        steps.append(StepInfo(k, Path(label.rstrip("/")).name or label, label, step_of(label.rstrip("/"))))
    fin_index: int | None = len(cks)
    rows = list(cks)
    if final is not None:
        fck = _ck(final)
        fin_index = next((k for k, ck in enumerate(cks, 1) if _same_path(ck, fck)), None)
        if fin_index is None:
            rows.append(fck)
    else:
        fck = cks[-1]
    labels = [s.name for s in steps] + (["final"] if len(rows) > len(cks) else [])
    tensors, findings = _align(ick, rows, labels)
    if not tensors:
        raise MismatchError(
            f"no tensor of {ick.ref} is present with the same shape in every checkpoint",
            "give checkpoints of one training run",
        )
    nsteps = len(cks)
    fin_row = fin_index if fin_index is not None else len(rows)
    counts = _run(tensors, nsteps, fin_row, float(tolerance), semantics, chunk_elements, progress, ex,
                  resume, ick, rows)  # fmt: skip
    results = [
        TensorSeries(t.name, list(t.infos[0].shape), t.layer, t.kind, t.numel, *c)
        for t, c in zip(tensors, counts)
    ]
    return SeriesReport(
        init={"ref": ick.ref, "path": str(ick.root), "tensors": len(ick), "numel": ick.numel},
        steps=steps,
        final={"ref": fck.ref, "index": fin_index},
        tolerance=float(tolerance),
        semantics=semantics,
        tensors=results,
        findings=findings,
    )


def _run(
    tensors: list[_Tensor], nsteps: int, fin_row: int, tolerance: float, semantics: str,
    chunk_elements: int | None, progress: bool, ex: Executor, resume: str | os.PathLike[str] | None,
    init: Checkpoint, rows: list[Checkpoint],
) -> list[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """The pass on the engine: every tensor's counters, in order (finished ones from ``resume``)."""
    from .fingerprint import of_checkpoint
    from .measures.series import SeriesCounter
    from .measures.series import chunk_elements as pick_chunk

    jrows = [Row(t.index, t.name, tuple(t.infos), t.numel, t) for t in tensors]
    job = Job(jrows, [SeriesCounter(tolerance, semantics, nsteps, fin_row)], pick_chunk(jrows, chunk_elements),
              "series", progress)  # fmt: skip
    identity = None
    if resume is not None:
        identity = {
            "kind": REPORT_KIND, "inputs": [of_checkpoint(c).to_json() for c in (init, *rows)],
            "tensors": [t.name for t in tensors], "final_row": fin_row, "tolerance": tolerance,
            "semantics": semantics, "tool_version": __version__,
        }  # fmt: skip
    return [r[0] for r in run(job, ex, resume, identity, _CODEC)]


def _encode(results: list[Any]) -> Any:
    steps, split = results[0]
    return {"steps": steps.tolist(), "split": split.tolist()}


def _decode(obj: Any) -> list[Any]:
    return [(np.asarray(obj["steps"], dtype=np.int64), np.asarray(obj["split"], dtype=np.int64))]


_CODEC = Codec(_encode, _decode)
