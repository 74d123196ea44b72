"""Options and output helpers shared by the commands."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def _opt_name(param: click.Parameter | None, fallback: str) -> str:
    opts = getattr(param, "opts", None) or []
    return max(opts, key=len) if opts else fallback


class ToleranceList(click.ParamType):
    """``"1e-8,1e-5"`` → ``[1e-8, 1e-5]``, checked by :func:`subnetscope.validate.tolerances` (the same
    rule as the library's)."""

    name = "TOL[,TOL...]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list[float]:
        from .. import validate

        if isinstance(value, list):
            return validate.tolerances(value, _opt_name(param, "--tol"))
        out = []
        for part in str(value).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                out.append(float(part))
            except ValueError:
                self.fail(f"{part!r} is not a number (use e.g. 1e-8,1e-5)", param, ctx)
        if not out:
            self.fail("give at least one tolerance (e.g. 1e-5)", param, ctx)
        return validate.tolerances(out, _opt_name(param, "--tol"))


class Tolerance(click.ParamType):
    """One tolerance, checked by :func:`subnetscope.validate.tolerance`."""

    name = "TOL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        from .. import validate

        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                self.fail(f"{value!r} is not a number (use e.g. 1e-5)", param, ctx)
        return validate.tolerance(value, _opt_name(param, "--tol"))


#: click types of ``--tol`` lists and single tolerances
TOLERANCES = ToleranceList()
TOLERANCE = Tolerance()


def format_option(f: F) -> F:
    """``--format human|json``."""
    return click.option(
        "--format", "fmt", type=click.Choice(["human", "json"]), default="human", show_default=True,
        help="human: tables on stdout; json: the versioned JSON report on stdout.",
    )(f)  # fmt: skip


def jobs_option(f: F) -> F:
    """``-j/--jobs N``."""
    return click.option(
        "-j", "--jobs", type=click.IntRange(1, 256), default=None,
        help="Worker threads (default: CPUs, at most 8). Results do not depend on it.",
    )(f)  # fmt: skip


def semantics_option(f: F) -> F:
    """``--semantics exact|reference``."""
    return click.option(
        "--semantics", type=click.Choice(["exact", "reference"]), default="exact", show_default=True,
        help="exact: difference computed exactly. reference: the authors' bf16 arithmetic (torch.isclose).",
    )(f)  # fmt: skip


def output_option(f: F) -> F:
    """``-o/--output FILE``: the JSON report, written atomically."""
    return click.option(
        "-o",
        "--output",
        type=click.Path(dir_okay=False),
        help="Also write the JSON report here (atomically).",
    )(f)


def chunk_option(f: F) -> F:
    """``--chunk-elements N`` for the streaming pass."""
    return click.option(
        "--chunk-elements",
        type=click.IntRange(8, 1 << 28),
        default=None,
        help="Elements per read (default 1Mi).",
    )(f)


def emit_json(obj: Any) -> None:
    """Write a report's JSON to stdout (one element per line, see :func:`~subnetscope.report.schema.json_text`)."""
    from ..report.schema import json_text

    sys.stdout.write(json_text(obj) + "\n")


def emit_report(obj: Any, fmt: str, output: str | None, human: Callable[[], str]) -> None:
    """The end of every report command: ``-o`` file (atomically), then JSON or the human text on stdout,
    then where the file went on stderr. ``human`` is only called for the human format."""
    from ..report.schema import json_text

    text = json_text(obj) + "\n" if output or fmt == "json" else ""  # encoded once for both
    if output:
        from ..io.atomic import write_text_atomic

        write_text_atomic(output, text)
    if fmt == "json":
        sys.stdout.write(text)
    else:
        click.echo(human())
    if output:
        log(f"report written to {output}")


def log(msg: str) -> None:
    """A line on stderr."""
    click.echo(msg, err=True)
