"""``subnetscope mask`` and ``subnetscope overlap``."""

from __future__ import annotations

import click

from .common import (
    TOLERANCE,
    chunk_option,
    emit_json,
    emit_report,
    execution_options,
    format_option,
    jobs_option,
    log,
    open_executor,
    output_option,
    say,
    semantics_option,
)


@click.command("mask")
@click.argument("base")
@click.argument("target")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="The mask file to write (atomically).",
)
@click.option(
    "--tol", type=TOLERANCE, default=1e-5, show_default=True, help="Updated means |target - base| > tol."
)
@semantics_option
@format_option
@jobs_option
@chunk_option
@execution_options
def mask(
    base: str,
    target: str,
    output: str,
    tol: float,
    semantics: str,
    fmt: str,
    jobs: int | None,
    chunk_elements: int | None,
    executor: str,
    ray_address: str | None,
    resume: str | None,
) -> None:
    """Write the mask of parameters updated from BASE to TARGET (one bit each) to -o FILE.

    The mask records the tolerance, the semantics and a fingerprint of BASE, so that it is never used with
    another model without a clear error. It is written in the same streaming pass as `compare`.
    """
    from ..comparison import compare as run_compare
    from ..display import printable
    from ..io.outputs import Output, check_outputs, checkpoint_inputs
    from ..refs import load_checkpoint
    from ..render.table import fmt_tol, human_count, pct, ref_of

    t = tol  # checked by the option's type, as the library checks it
    bck, tck = load_checkpoint(base), load_checkpoint(target)
    check_outputs(
        [*checkpoint_inputs(bck, "BASE"), *checkpoint_inputs(tck, "TARGET")], [Output(output, "-o")]
    )
    ex = open_executor(executor, jobs, ray_address, resume)
    report = run_compare(
        bck,
        tck,
        [t],
        semantics,
        jobs=jobs,
        mask_out=output,
        mask_tolerance=t,
        progress=fmt == "human",
        chunk_elements=chunk_elements,
        executor=ex,
        resume=resume,
    )
    from ..results.mask import mask_summary

    s = mask_summary(report, output, t)
    if fmt == "json":
        emit_json(s)
        return
    ratio = s["bytes_per_bf16_byte"]
    say(
        f"mask written to {printable(output)}\n"
        f"  base:   {ref_of(report.base)}\n"
        f"  target: {ref_of(report.target)}\n"
        f"  {s['tensors']} tensors, {human_count(s['numel'])} parameters; updated at tol {fmt_tol(t)} "
        f"({semantics}): {s['changed']:,} ({pct(1 - s['sparsity'])}), sparsity {pct(s['sparsity'])}\n"
        f"  {s['bytes']:,} bytes" + (f" (1/{1 / ratio:.1f} of the model in bf16)" if ratio else "")
    )
    if report.findings:
        log(
            f"{len(report.findings)} finding(s), e.g. {report.findings[0].tensor}: {report.findings[0].detail}"
        )


@click.command("overlap")
@click.argument("masks", nargs=-1, metavar="MASK1 MASK2")
@click.option(
    "--base",
    "base",
    default=None,
    help="The masks' base checkpoint: adds the magnitude-matched baseline (bins of |w| by exponent).",
)
@click.option(
    "--deltas",
    nargs=3,
    default=None,
    metavar="BASE T1 T2",
    help="Compute the two updated sets from checkpoints instead of masks (adds sign agreement and cosine).",
)
@click.option(
    "--tol",
    type=TOLERANCE,
    default=1e-5,
    show_default=True,
    help="With --deltas: updated means |T - BASE| > tol.",
)
@format_option
@output_option
@click.option(
    "--layers/--no-layers", default=True, show_default=True, help="Show the per-layer table (human format)."
)
@jobs_option
@chunk_option
@execution_options
def overlap(
    masks: tuple[str, ...],
    base: str | None,
    deltas: tuple[str, str, str] | None,
    tol: float,
    fmt: str,
    output: str | None,
    layers: bool,
    jobs: int | None,
    chunk_elements: int | None,
    executor: str,
    ray_address: str | None,
    resume: str | None,
) -> None:
    """Overlap of two subnetworks against random baselines: o1, o2, Jaccard, z-scores.

    Give two mask files (from `subnetscope mask` or `compare --mask-out`) made over the same base, or
    --deltas BASE T1 T2 to compute both updated sets in one pass over the three checkpoints.
    """
    from ..errors import UsageError
    from ..overlap import overlap as run_overlap
    from ..overlap import overlap_deltas
    from ..render.overlap import render

    def check_output(masks: tuple[str, ...], refs: list[str]) -> None:
        if not output:
            return
        from ..io.outputs import Output, check_outputs, checkpoint_inputs, path_inputs
        from ..refs import load_checkpoint

        cks = [load_checkpoint(r) for r in refs]  # headers only
        check_outputs(
            [*path_inputs(masks, "a mask read"), *(i for c in cks for i in checkpoint_inputs(c, c.ref))],
            [Output(output, "-o")],
        )

    if deltas:
        if masks:
            raise UsageError(
                "give either two mask files or --deltas BASE T1 T2, not both", "drop the mask arguments"
            )
        if base is not None:
            raise UsageError("--base is implied by --deltas BASE T1 T2", "drop --base")
        check_output((), list(deltas))
        ex = open_executor(executor, jobs, ray_address, resume)
        report = overlap_deltas(*deltas, tolerance=tol, progress=fmt == "human", chunk_elements=chunk_elements,
                                executor=ex, resume=resume)  # fmt: skip
    else:
        src = click.get_current_context().get_parameter_source("tol")
        if src is not None and src.name == "COMMANDLINE":
            raise UsageError(
                "--tol applies to --deltas only", "a mask file carries its own tolerance: recompute the mask"
            )
        if len(masks) != 2:
            raise UsageError(
                f"expected two mask files, got {len(masks)}",
                "usage: subnetscope overlap MASK1 MASK2 [--base BASE], or --deltas BASE T1 T2",
            )
        check_output(masks, [base] if base is not None else [])
        ex = open_executor(executor, jobs, ray_address, resume)
        report = run_overlap(masks[0], masks[1], base=base, progress=fmt == "human", chunk_elements=chunk_elements,
                             executor=ex, resume=resume)  # fmt: skip
    emit_report(report.to_json(), fmt, output, lambda: render(report, layers=layers))
