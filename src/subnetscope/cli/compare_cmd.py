"""``subnetscope compare``."""

from __future__ import annotations

import click

from .common import emit_json, format_option, jobs_option, log, parse_tolerances, write_json_file


@click.command("compare")
@click.argument("base")
@click.argument("target")
@click.option(
    "--tol",
    "tol",
    default="1e-8,1e-7,1e-6,1e-5",
    show_default=True,
    help="Comma-separated tolerances: unchanged means |target - base| <= tol.",
)
@click.option(
    "--semantics",
    type=click.Choice(["exact", "reference"]),
    default="exact",
    show_default=True,
    help="exact: difference computed exactly. reference: the authors' bf16 arithmetic (torch.isclose).",
)
@format_option
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), help="Also write the JSON report here (atomically)."
)
@click.option(
    "--mask-out",
    type=click.Path(dir_okay=False),
    help="Also write the mask of updated parameters (same pass).",
)
@click.option(
    "--mask-tol",
    type=float,
    default=None,
    help="Tolerance of --mask-out (default: 1e-5 if listed, else the largest).",
)
@click.option(
    "--strict", is_flag=True, help="Exit 1 if tensors are missing, resized, retyped, or hold NaN/Inf."
)
@jobs_option
@click.option(
    "--chunk-elements", type=click.IntRange(8, 1 << 28), default=None, help="Elements per read (default 1Mi)."
)
@click.option(
    "--layers/--no-layers", default=True, show_default=True, help="Show the per-layer table (human format)."
)
def compare(
    base: str,
    target: str,
    tol: str,
    semantics: str,
    fmt: str,
    output: str | None,
    mask_out: str | None,
    mask_tol: float | None,
    strict: bool,
    jobs: int | None,
    chunk_elements: int | None,
    layers: bool,
) -> None:
    """Update sparsity of TARGET against BASE, in one streaming pass.

    BASE and TARGET: a checkpoint directory, a .safetensors file, an index file, or a hub id org/name[@rev].
    """  # fmt: skip
    from ..comparison import compare as run_compare
    from ..errors import StrictCheckError
    from ..report.table import render_compare

    tols = parse_tolerances(tol)
    try:
        report = run_compare(
            base,
            target,
            tols,
            semantics,
            jobs=jobs,
            strict=strict,
            mask_out=mask_out,
            mask_tolerance=mask_tol,
            progress=fmt == "human",
            chunk_elements=chunk_elements,
        )
        failure = None
    except StrictCheckError as e:
        report = e.report
        failure = e
    if output:
        write_json_file(output, report.to_json())
    if fmt == "json":
        emit_json(report.to_json())
    else:
        click.echo(render_compare(report, layers=layers))
    if output:
        log(f"report written to {output}")
    if mask_out:
        log(f"mask written to {mask_out}")
    if failure is not None:
        raise failure
