"""``compare``: update sparsity of a target checkpoint against its base, in one streaming pass."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import __version__, validate
from .errors import StrictCheckError
from .io.checkpoint import Checkpoint
from .measures.compare import ChunkConsumer, PassOptions, run_pass
from .plan import Pair, Plan, make_plan
from .refs import load_checkpoint
from .results.schema import Finding, Report
from .stats import TensorStats

if TYPE_CHECKING:
    from .engine.executors import Executor
    from .measures.compare import MaskSink
    from .measures.compare_resume import CompareResume

#: the paper's Table 6 sweep; 1e-5 is its headline tolerance
DEFAULT_TOLERANCES: tuple[float, ...] = (1e-8, 1e-7, 1e-6, 1e-5)

CheckpointLike = str | os.PathLike[str] | Checkpoint


def _ck(x: CheckpointLike) -> Checkpoint:
    return x if isinstance(x, Checkpoint) else load_checkpoint(x)


def check_tolerances(tolerances: Sequence[float], name: str = "tolerances") -> list[float]:
    """Validate a tolerance list (non-empty, finite, non-negative, no duplicates); see
    :func:`subnetscope.validate.tolerances`."""
    return validate.tolerances(tolerances, name)


def nonfinite_findings(report: Report) -> list[Finding]:
    """One finding per tensor holding NaN or Inf on either side."""
    out = []
    for t in report.tensors:
        c = t.counts
        if c.nonfinite_base or c.nonfinite_target:
            out.append(
                Finding(
                    "nonfinite",
                    t.name,
                    f"NaN/Inf values: {c.nonfinite_base} in base, {c.nonfinite_target} in target",
                )
            )
    return out


def describe(ck: Checkpoint) -> dict[str, object]:
    """The ``base`` / ``target`` block of a report (``format`` only for non-safetensors inputs)."""
    out: dict[str, object] = {
        "ref": ck.ref,
        "path": str(ck.root),
        "files": len(ck.files),
        "tensors": len(ck),
        "numel": ck.numel,
    }
    if ck.format != "safetensors":
        out["format"] = ck.format
    return out


def compare(
    base: CheckpointLike,
    target: CheckpointLike,
    tolerances: Sequence[float] = DEFAULT_TOLERANCES,
    semantics: str = "exact",
    *,
    jobs: int | None = None,
    strict: bool = False,
    mask_out: str | os.PathLike[str] | None = None,
    mask_tolerance: float | None = None,
    consumers: Sequence[ChunkConsumer] = (),
    progress: bool = False,
    chunk_elements: int | None = None,
    executor: str | Executor | None = None,
    ray_address: str | None = None,
    resume: str | os.PathLike[str] | None = None,
) -> Report:
    """Compare ``target`` with ``base`` tensor by tensor and return a :class:`Report`.

    Args:
        base, target: a checkpoint directory, a ``.safetensors`` file, an index file, a hub id
            ``org/name[@revision]``, or an already opened :class:`~subnetscope.io.Checkpoint`.
        tolerances: an element is *unchanged* at tolerance ``tol`` when ``|target - base| <= tol``.
        semantics: ``"exact"`` (difference computed exactly, compared in float64) or ``"reference"``
            (the authors' arithmetic: difference in the stored dtype, ``torch.isclose(delta, 0, atol=tol)``).
        jobs: worker threads (default: number of CPUs, at most 8). The report does not depend on it.
        strict: raise :class:`~subnetscope.errors.StrictCheckError` (after computing everything) if any
            tensor is missing on one side, changed shape or dtype, or holds NaN/Inf.
        mask_out: also write the mask of updated elements (``|Δ| > mask_tolerance``) to this file, in the
            same pass (see :mod:`subnetscope.maskfile`). Like ``resume``, it may not be, lie inside or
            hold an input, nor be the other output (:func:`subnetscope.io.outputs.check_outputs`).
        mask_tolerance: tolerance of the mask; default the report's primary one (1e-5 when listed).
        consumers: extra per-chunk computations run in the same pass (their results land in each tensor's
            JSON under their ``key``).
        progress: show a progress bar on stderr (only when it is a terminal).
        chunk_elements: elements per read (default 1 Mi).
        executor: ``"threads"`` (default), ``"serial"``, ``"processes"`` (``jobs`` local processes),
            ``"auto"`` (processes for a large pass on Linux, else threads: the command line's default),
            ``"ray"``, or an :class:`~subnetscope.engine.executors.Executor`; the report does not depend on it.
        ray_address: with ``executor="ray"``: the cluster to join (default: start a local instance).
        resume: a directory keeping finished tensors' stats (see :mod:`subnetscope.measures.compare_resume`): an interrupted
            run given the same directory continues where it stopped, with the same report.

    FP8 weights with block scales (``X.weight`` + ``X.weight_scale_inv``) are also compared by dequantized
    value in the same pass; the report then has an ``fp8`` section (see :mod:`subnetscope.fp8`).
    """
    tols = check_tolerances(tolerances)
    validate.semantics(semantics)
    validate.jobs(jobs)
    chunk_elements = validate.chunk_elements(chunk_elements)
    if mask_tolerance is not None:
        mask_tolerance = validate.tolerance(mask_tolerance, "mask_tolerance")
    if isinstance(executor, str) or executor is None:
        from .engine.executors.base import EXECUTORS

        validate.choice(executor or "threads", "executor", EXECUTORS)
    b, t = _ck(base), _ck(target)
    from .io.outputs import INTO, Output, check_outputs, checkpoint_inputs

    check_outputs(
        [*checkpoint_inputs(b, "BASE"), *checkpoint_inputs(t, "TARGET")],
        [Output(mask_out, "mask_out"), Output(resume, "resume", INTO)],
    )
    plan = make_plan(b, t)
    report = Report(describe(b), describe(t), semantics, tols, [], list(plan.findings), __version__)
    if mask_tolerance is None:
        mask_tolerance = tols[report.primary_index]
    elif mask_out is not None and mask_tolerance not in tols:
        tols.append(mask_tolerance)
        report.tolerances = tols
    from . import fp8
    from .engine.executors.factory import resolve

    ex = resolve(executor, jobs, ray_address)
    fp8_counter, fp8_plan = fp8.consumer_for(plan, tols, semantics)
    extra_consumers = [fp8_counter] if fp8_counter is not None else []
    opts = PassOptions(tols, semantics, jobs=jobs, mask_tolerance=mask_tolerance, progress=progress,
                       consumers=[*consumers, *extra_consumers])  # fmt: skip
    if chunk_elements:
        opts.chunk_elements = chunk_elements
    report.tensors = _run(plan, opts, ex, mask_out, mask_tolerance, semantics, resume)
    if mask_out is not None:
        report.extra["mask"] = {"path": str(mask_out), "tolerance": mask_tolerance}
    if fp8_counter is not None:
        fp8.attach(report, fp8_plan)
    report.findings.extend(nonfinite_findings(report))
    if strict and report.findings:
        kinds = sorted({f.kind for f in report.findings})
        raise StrictCheckError(
            f"`strict=True`: {len(report.findings)} finding(s) ({', '.join(kinds)}), e.g. "
            f"{report.findings[0].tensor}: {report.findings[0].detail}",
            "see the report's findings, or drop `strict=True` to accept them",
            report=report,
        )
    return report


def _run(
    plan: Plan,
    opts: PassOptions,
    ex: Executor,
    mask_out: str | os.PathLike[str] | None,
    tol: float,
    semantics: str,
    resume: str | os.PathLike[str] | None,
) -> list[TensorStats]:
    """The pass on ``ex``, with the mask file and the resume journal when asked for."""
    state = None
    if resume is not None:
        from .measures.compare_resume import open_compare_resume

        state = open_compare_resume(resume, plan, opts, tol if mask_out is not None else None)
        opts.on_tensor_done = state.record
    try:
        todo = plan.pairs if state is None else state.pending(plan.pairs)
        if mask_out is None:
            fresh = run_pass(plan, opts, None, todo, ex)
        else:
            fresh = _with_mask(plan, opts, ex, todo, mask_out, tol, semantics, state)
        return fresh if state is None else state.merged(fresh)
    finally:
        if state is not None:
            state.close()


def _with_mask(
    plan: Plan, opts: PassOptions, ex: Executor, todo: list[Pair], mask_out: str | os.PathLike[str], tol: float,
    semantics: str, state: CompareResume | None,
) -> list[TensorStats]:  # fmt: skip
    from .fingerprint import of_checkpoint
    from .maskfile import MaskWriter

    names = [p.name for p in plan.pairs]
    fp = of_checkpoint(plan.base, names)
    shapes = {p.name: p.target.shape for p in plan.pairs}
    extra = {"base_ref": plan.base.ref, "target_ref": plan.target.ref}
    dtypes = {p.name: p.base.dtype.code for p in plan.pairs}
    with MaskWriter(mask_out, shapes, fp, tol, semantics, extra, dtypes=dtypes) as w:
        sink: MaskSink = w
        if state is not None:
            state.replay(w)
            sink = state.tee(w)
        return run_pass(plan, opts, sink, todo, ex)
