"""``subnetscope rank``."""

from __future__ import annotations

import click

from .common import (
    check_report_output,
    emit_report,
    execution_options,
    format_option,
    jobs_option,
    open_executor,
    output_option,
)


def parse_floats(value: str, what: str) -> list[float]:
    """``"0.1,1,10"`` → ``[0.1, 1.0, 10.0]`` with a clear error."""
    out = []
    for part in value.split(","):
        part = part.strip()
        if part:
            try:
                out.append(float(part))
            except ValueError:
                raise click.BadParameter(f"{part!r} is not a number", param_hint=what) from None
    if not out:
        raise click.BadParameter("give at least one number", param_hint=what)
    return out


@click.command("rank")
@click.argument("base")
@click.argument("target")
@click.option(
    "--sample",
    "--rank-sample",
    "sample",
    type=click.IntRange(1),
    default=None,
    help="Rank only N 2-D tensors, drawn at random (see --seed).",
)
@click.option(
    "--layers", "--rank-layers", "layers", default=None, help="Rank only these layers, e.g. 0,5,10 or 0-3."
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of --sample and of --spectrum's random mask."
)
@click.option(
    "--rtol-multipliers",
    default="0.01,0.1,1,10,100",
    show_default=True,
    help="Also report the rank at these multiples of the default tolerance.",
)
@click.option(
    "--spectrum",
    "spectrum",
    type=click.IntRange(1),
    default=None,
    metavar="K",
    help="Also compute spectrum metrics with the top K singular vectors (slower).",
)
@click.option(
    "--device", default="auto", show_default=True, help="auto (CUDA when present), cpu or cuda[:N]."
)
@click.option("--tensors", "show_tensors", is_flag=True, help="Also list every matrix (human format).")
@format_option
@output_option
@jobs_option
@execution_options
def rank(
    base: str, target: str, sample: int | None, layers: str | None, seed: int, rtol_multipliers: str,
    spectrum: int | None, device: str, show_tensors: bool, fmt: str, output: str | None, jobs: int | None,
    executor: str, ray_address: str | None, resume: str | None,
) -> None:  # fmt: skip
    """Numerical rank of every 2-D weight update TARGET - BASE (paper Table 2).

    Rank as torch.linalg.matrix_rank on the float32 delta (default tolerance), from the eigenvalues of the
    float64 Gram matrix; plus stable rank, effective rank and the rank at other tolerances.
    """
    from ..anatomy.rank import rank_report
    from ..render.table import render_rank
    from .common import parse_layers

    layer_list = parse_layers(layers)
    check_report_output(output, {"BASE": base, "TARGET": target})
    ex = open_executor(executor, jobs, ray_address, resume)
    # auto without -j: the library's default, matrices on threads, one per free core, one BLAS thread each
    chosen = None if executor == "auto" and jobs is None else ex
    rep = rank_report(
        base, target, sample=sample, layers=layer_list, seed=seed, device=device,
        rtol_multipliers=parse_floats(rtol_multipliers, "--rtol-multipliers"), spectrum_k=spectrum,
        progress=fmt == "human", jobs=jobs, executor=chosen, resume=resume,
    )  # fmt: skip
    obj = rep.to_json()
    emit_report(obj, fmt, output, lambda: render_rank(obj, tensors=show_tensors))
