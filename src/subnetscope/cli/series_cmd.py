"""``subnetscope series``."""

from __future__ import annotations

import click

from .common import (
    TOLERANCE,
    check_report_output,
    emit_report,
    execution_options,
    format_option,
    jobs_option,
    open_executor,
    output_option,
    semantics_option,
)


@click.command("series")
@click.argument("init")
@click.argument("checkpoints", nargs=-1, required=True, metavar="CKPT_1 ... CKPT_K")
@click.option(
    "--final", default=None, help="The checkpoint that defines the final subnetwork (default: the last one)."
)
@click.option("--tol", type=TOLERANCE, default=1e-5, show_default=True, help="Updated means |Δ| > tol.")
@semantics_option
@format_option
@output_option
@jobs_option
@click.option(
    "--chunk-elements",
    type=click.IntRange(8, 1 << 26),
    default=None,
    help="Elements per read and checkpoint (default 2Mi, less with many checkpoints).",
)
@execution_options
def series(
    init: str,
    checkpoints: tuple[str, ...],
    final: str | None,
    tol: float,
    semantics: str,
    fmt: str,
    output: str | None,
    jobs: int | None,
    chunk_elements: int | None,
    executor: str,
    ray_address: str | None,
    resume: str | None,
) -> None:
    """Sparsity dynamics of one training run: INIT, then its checkpoints in training order.

    Each checkpoint is read once. A directory of HF Trainer `checkpoint-<step>` folders stands for its
    checkpoints sorted by step. Reports, per checkpoint, the sparsity vs INIT and vs the previous one, the
    share of updates outside the final subnetwork and the running union of updated parameters; then the
    split into never updated / cancelled / final subnetwork.
    """
    from ..render.series import render
    from ..series import expand_checkpoints
    from ..series import series as run_series

    if output:
        expanded = expand_checkpoints(list(checkpoints))
        refs = {"INIT": init, **{f"CKPT_{k}": r for k, r in enumerate(expanded, 1)}}
        check_report_output(output, {**refs, **({"--final": final} if final else {})})

    ex = open_executor(executor, jobs, ray_address, resume)
    report = run_series(  # checks the tolerance itself
        init,
        list(checkpoints),
        final=final,
        tolerance=tol,
        semantics=semantics,
        jobs=jobs,
        chunk_elements=chunk_elements,
        progress=fmt == "human",
        executor=ex,
        resume=resume,
    )
    emit_report(report.to_json(), fmt, output, lambda: render(report))
