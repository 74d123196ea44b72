"""``subnetscope report``."""

from __future__ import annotations

import click

from .common import log


@click.command("report")
@click.argument("reports", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--add",
    "added",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Another compare or rank JSON report to include (repeatable).",
)
@click.option("--label", "labels", multiple=True, help="Label of each compare report, in order (repeatable).")
@click.option("--title", default=None, help="Page title.")
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False), help="The HTML file to write."
)
def report(reports: tuple[str, ...], added: tuple[str, ...], labels: tuple[str, ...], title: str | None,
           output: str) -> None:  # fmt: skip
    """One self-contained HTML page from compare and rank JSON REPORTS.

    Headline sparsity, tolerance table, layer x matrix heatmap, ULP histogram (compare --ulp), rank table
    (a rank report, or compare --rank); with several compare reports, a comparison table and bar chart.
    """  # fmt: skip
    from ..io.outputs import Output, check_outputs, path_inputs
    from ..render.html import write_html
    from ..results.schema import load_json
    from .common import unreadable_report

    paths = [*reports, *added]
    check_outputs(path_inputs(paths, "a JSON report read"), [Output(output, "-o")])
    objs = [load_json(p) for p in paths]
    with unreadable_report(", ".join(paths)):
        write_html(output, objs, labels=list(labels) or None, title=title, sources=paths)
    log(f"report written to {output}")
