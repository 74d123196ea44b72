"""``compare``: update sparsity of a target checkpoint against its base, in one streaming pass."""

from __future__ import annotations

import os
from collections.abc import Sequence

from . import __version__
from .engine import ChunkConsumer, PassOptions, run_pass
from .errors import StrictCheckError, UsageError
from .io.checkpoint import Checkpoint
from .plan import Plan, make_plan
from .refs import load_checkpoint
from .report.schema import Finding, Report
from .stats import TensorStats

#: the paper's Table 6 sweep; 1e-5 is its headline tolerance
DEFAULT_TOLERANCES: tuple[float, ...] = (1e-8, 1e-7, 1e-6, 1e-5)

CheckpointLike = str | os.PathLike[str] | Checkpoint


def _ck(x: CheckpointLike) -> Checkpoint:
    return x if isinstance(x, Checkpoint) else load_checkpoint(x)


def check_tolerances(tolerances: Sequence[float]) -> list[float]:
    """Validate a tolerance list (non-empty, finite, non-negative, no duplicates)."""
    tols = [float(t) for t in tolerances]
    if not tols:
        raise UsageError("no tolerance given", "pass at least one, e.g. --tol 1e-5")
    for t in tols:
        if not (t >= 0 and t != float("inf")):
            raise UsageError(f"tolerance {t!r} is not a finite non-negative number", "use values like 1e-5")
    if len(set(tols)) != len(tols):
        raise UsageError(f"duplicate tolerances in {tols}", "list each tolerance once")
    return tols


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
    """The ``base`` / ``target`` block of a report."""
    return {
        "ref": ck.ref,
        "path": str(ck.root),
        "files": len(ck.files),
        "tensors": len(ck),
        "numel": ck.numel,
    }


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
            same pass (see :mod:`subnetscope.maskfile`).
        mask_tolerance: tolerance of the mask; default the report's primary one (1e-5 when listed).
        consumers: extra per-chunk computations run in the same pass (their results land in each tensor's
            JSON under their ``key``).
        progress: show a progress bar on stderr (only when it is a terminal).
        chunk_elements: elements per read (default 1 Mi).
    """
    tols = check_tolerances(tolerances)
    if semantics not in ("exact", "reference"):
        raise UsageError(f"unknown semantics {semantics!r}", "use 'exact' or 'reference'")
    b, t = _ck(base), _ck(target)
    plan = make_plan(b, t)
    report = Report(describe(b), describe(t), semantics, tols, [], list(plan.findings), __version__)
    if mask_tolerance is None:
        mask_tolerance = tols[report.primary_index]
    elif mask_out is not None and mask_tolerance not in tols:
        tols.append(mask_tolerance)
        report.tolerances = tols
    opts = PassOptions(tols, semantics, jobs=jobs, mask_tolerance=mask_tolerance, progress=progress,
                       consumers=list(consumers))  # fmt: skip
    if chunk_elements:
        opts.chunk_elements = chunk_elements
    if mask_out is not None:
        report.tensors = _with_mask(plan, opts, mask_out, mask_tolerance, semantics)
        report.extra["mask"] = {"path": str(mask_out), "tolerance": mask_tolerance}
    else:
        report.tensors = run_pass(plan, opts)
    report.findings.extend(nonfinite_findings(report))
    if strict and report.findings:
        kinds = sorted({f.kind for f in report.findings})
        raise StrictCheckError(
            f"--strict: {len(report.findings)} finding(s) ({', '.join(kinds)}), e.g. "
            f"{report.findings[0].tensor}: {report.findings[0].detail}",
            "see the report's findings, or drop --strict to accept them",
            report=report,
        )
    return report


def _with_mask(
    plan: Plan, opts: PassOptions, mask_out: str | os.PathLike[str], tol: float, semantics: str
) -> list[TensorStats]:
    from .fingerprint import of_checkpoint
    from .maskfile import MaskWriter

    names = [p.name for p in plan.pairs]
    fp = of_checkpoint(plan.base, names)
    shapes = {p.name: p.target.shape for p in plan.pairs}
    extra = {"base_ref": plan.base.ref, "target_ref": plan.target.ref}
    dtypes = {p.name: p.base.dtype.code for p in plan.pairs}
    with MaskWriter(mask_out, shapes, fp, tol, semantics, extra, dtypes=dtypes) as w:
        return run_pass(plan, opts, mask_sink=w)
