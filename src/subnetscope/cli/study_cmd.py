"""``subnetscope study``."""

from __future__ import annotations

import click

from .common import emit_json, format_option, say


@click.command("study")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Output directory for the tables and figures (default: the config's [study] out).",
)
@click.option(
    "--cache",
    type=click.Path(file_okay=False),
    default=None,
    help="Cache of bases, datasets and runs (default: $SUBNETSCOPE_CACHE or ~/.cache/subnetscope).",
)
@format_option
def study(config: str, out: str | None, cache: str | None, fmt: str) -> None:
    """Run the small-scale replication study described by CONFIG (TOML or JSON).

    Trains every run from the base (cached by recipe: an unchanged run is not trained again), measures the
    runs with subnetscope's own library and writes study.json, summary.md and the figures into the output
    directory. Progress and logs go to stderr; the tables (or the JSON with --format json) to stdout.
    """
    from ..study.config import load_config
    from ..study.pipeline import run_study
    from ..study.tables import render_markdown

    cfg = load_config(config)
    doc = run_study(cfg, progress=fmt == "human", cache=cache, out=out)
    if fmt == "json":
        emit_json(doc)
    else:
        say(render_markdown(doc))
