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
    from ..display import printable
    from ..io.outputs import INTO, Output, check_outputs, path_inputs
    from ..render.fields import check_report
    from ..render.plots import plot_report
    from ..results.schema import load_json
    from .common import say, unreadable_report

    check_outputs(path_inputs([report], "the JSON report read"), [Output(out_dir, "-o", INTO)])
    obj = load_json(report)
    check_report(obj, report)
    with unreadable_report(report):
        paths = plot_report(obj, out_dir)
    for p in paths:
        say(printable(p))
