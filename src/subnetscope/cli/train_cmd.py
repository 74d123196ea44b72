"""``subnetscope conjecture``: full vs subnetwork finetuning (paper Conjecture 1)."""

from __future__ import annotations

import click

from .common import (
    TOLERANCE,
    TOLERANCES,
    check_report_output,
    emit_report,
    format_option,
    jobs_option,
    output_option,
    semantics_option,
)


@click.command("conjecture")
@click.option("--base", "base", required=True, help="The model both runs started from.")
@click.option("--full", "full", required=True, help="The fully finetuned model F.")
@click.option("--sub", "sub", required=True, help="The model finetuned inside F's subnetwork S.")
@click.option(
    "--tol", "tol", type=TOLERANCES, default="1e-5,1e-4", show_default=True,
    help="Comma-separated tolerances: S and F agree on an element when |S - F| <= tol.",
)  # fmt: skip
@click.option(
    "--subnetwork-tol", type=TOLERANCE, default=1e-5, show_default=True,
    help="F's subnetwork: the elements with |F - base| > this.",
)  # fmt: skip
@semantics_option
@format_option
@output_option
@jobs_option
def conjecture(
    base: str,
    full: str,
    sub: str,
    tol: list[float],
    subnetwork_tol: float,
    semantics: str,
    fmt: str,
    output: str | None,
    jobs: int | None,
) -> None:
    """Compare full finetuning F with subnetwork finetuning S (paper §4, Conjecture 1).

    Reports the share of S's weights equal to F's within each tolerance, and the share of F's subnetwork
    (the weights F changed from BASE) that S reproduces, overall and per matrix type.
    """  # fmt: skip
    from ..render.conjecture import render
    from ..train.sub_vs_full import conjecture as run

    check_report_output(output, {"BASE": base, "FULL": full, "SUB": sub})
    result = run(base, full, sub, tol, subnetwork_tolerance=subnetwork_tol,
                 semantics=semantics, jobs=jobs, progress=fmt == "human")  # fmt: skip
    emit_report(result.to_json(), fmt, output, lambda: render(result))
