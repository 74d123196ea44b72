"""``subnetscope plot``."""

from __future__ import annotations

import click


@click.command("plot")
@click.argument("report", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--out-dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Directory for the PNG and SVG files (created if needed).",
)
def plot(report: str, out_dir: str) -> None:
    """Plots (PNG and SVG) from a compare, rank or series JSON REPORT.

    compare: layer x matrix-type heatmap, sparsity vs tolerance (and the ULP histogram with --ulp);
    rank: rank per matrix type; series: the series plots. Prints the paths written.
    """  # fmt: skip
    from ..io.outputs import INTO, Output, check_outputs, path_inputs
    from ..report.plots import plot_report
    from ..report.schema import load_json

    check_outputs(path_inputs([report], "the JSON report read"), [Output(out_dir, "-o", INTO)])
    for p in plot_report(load_json(report), out_dir):
        click.echo(str(p))
