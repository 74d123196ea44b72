"""``subnetscope compare``."""

from __future__ import annotations

from typing import Any

import click

from .common import (
    POSITIVE,
    TOLERANCE,
    TOLERANCES,
    chunk_option,
    emit_report,
    execution_options,
    format_option,
    jobs_option,
    log,
    open_executor,
    output_option,
    semantics_option,
)


@click.command("compare")
@click.argument("base")
@click.argument("target")
@click.option(
    "--tol",
    "tol",
    type=TOLERANCES,
    default="1e-8,1e-7,1e-6,1e-5",
    show_default=True,
    help="Comma-separated tolerances: unchanged means |target - base| <= tol.",
)
@semantics_option
@format_option
@output_option
@click.option(
    "--mask-out",
    type=click.Path(dir_okay=False),
    help="Also write the mask of updated parameters (same pass).",
)
@click.option(
    "--mask-tol",
    type=TOLERANCE,
    default=None,
    help="Tolerance of --mask-out (default: 1e-5 if listed, else the largest).",
)
@click.option(
    "--strict", is_flag=True, help="Exit 1 if tensors are missing, resized, retyped, or hold NaN/Inf."
)
@jobs_option
@chunk_option
@execution_options
@click.option(
    "--layers/--no-layers", default=True, show_default=True, help="Show the per-layer table (human format)."
)
@click.option("--ulp", is_flag=True, help="Also histogram change sizes in ULPs and |delta| (same pass).")
@click.option(
    "--step-size",
    type=POSITIVE,
    default=None,
    help="With --ulp: share of weights that round a step of S away.",
)
@click.option("--rank", "rank", is_flag=True, help="Also compute the rank of every 2-D update (second read).")
@click.option(
    "--rank-sample", type=click.IntRange(1), default=None, help="--rank on N random 2-D tensors only."
)
@click.option("--rank-layers", default=None, help="--rank on these layers only, e.g. 0,5,10.")
@click.option(
    "--spectrum",
    type=click.IntRange(1),
    default=None,
    metavar="K",
    help="With --rank: spectrum metrics, top K.",
)
def compare(
    base: str,
    target: str,
    tol: list[float],
    semantics: str,
    fmt: str,
    output: str | None,
    mask_out: str | None,
    mask_tol: float | None,
    strict: bool,
    jobs: int | None,
    chunk_elements: int | None,
    executor: str,
    ray_address: str | None,
    resume: str | None,
    layers: bool,
    ulp: bool,
    step_size: float | None,
    rank: bool,
    rank_sample: int | None,
    rank_layers: str | None,
    spectrum: int | None,
) -> None:
    """Update sparsity of TARGET against BASE, in one streaming pass.

    BASE and TARGET: a checkpoint directory, a .safetensors file, an index file, or a hub id org/name[@rev].
    """  # fmt: skip
    from ..comparison import compare as run_compare
    from ..errors import StrictCheckError
    from ..render.table import render_compare

    tols = tol
    ulp = ulp or step_size is not None
    rank = rank or rank_sample is not None or rank_layers is not None or spectrum is not None
    consumers: list[Any] = []
    rank_layer_list = None
    if rank:
        from .common import parse_layers

        rank_layer_list = parse_layers(rank_layers)  # bad input fails before the pass, not after
    sides: tuple[Any, Any] = (base, target)
    if ulp or rank or output or mask_out or resume:
        from ..io.outputs import INTO, Output, check_outputs, checkpoint_inputs
        from ..refs import load_checkpoint

        sides = (load_checkpoint(base), load_checkpoint(target))  # opened once for every pass
        check_outputs(
            [*checkpoint_inputs(sides[0], "BASE"), *checkpoint_inputs(sides[1], "TARGET")],
            [Output(output, "-o"), Output(mask_out, "--mask-out"), Output(resume, "--resume", INTO)],
        )
    if ulp:
        from ..anatomy.ulp import ULPHistograms
        from ..comparison import check_tolerances

        hist = ULPHistograms(check_tolerances(tols), step_size)
        consumers.append(hist)
    ex = open_executor(executor, jobs, ray_address, resume)
    try:
        report = run_compare(
            sides[0],
            sides[1],
            tols,
            semantics,
            jobs=jobs,
            strict=strict,
            mask_out=mask_out,
            mask_tolerance=mask_tol,
            progress=fmt == "human",
            chunk_elements=chunk_elements,
            consumers=consumers,
            executor=ex,
            resume=resume,
        )
        failure = None
    except StrictCheckError as e:
        report = e.report
        failure = e
    if ulp:
        from ..anatomy.ulp import attach

        attach(report, hist)
    if rank:
        from ..anatomy.rank import rank_report

        report.extra["rank"] = rank_report(
            sides[0], sides[1], sample=rank_sample, layers=rank_layer_list, spectrum_k=spectrum,
            progress=fmt == "human",
        ).to_json()  # fmt: skip
    obj = report.to_json()

    def human() -> str:
        parts = [render_compare(report, layers=layers)]
        if "fp8" in report.extra:
            from ..render.fp8 import render as render_fp8

            parts.append(render_fp8(report.extra["fp8"], report.tolerances))
        if ulp or rank:
            from ..render.table import render_rank, render_ulp

            if ulp:
                parts.append(render_ulp(obj))
            if rank:
                parts.append(render_rank(obj["rank"]))
        return "\n\n".join(parts)

    emit_report(obj, fmt, output, human)
    if mask_out:
        log(f"mask written to {mask_out}")
    run_info = getattr(ex, "last_run", None)
    if run_info:
        log(
            f"{ex.name}: "
            + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in run_info.items())
        )
    if failure is not None:
        raise failure
