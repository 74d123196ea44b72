"""Options and output helpers shared by the commands."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def parse_tolerances(value: str) -> list[float]:
    """``"1e-8,1e-5"`` → ``[1e-8, 1e-5]`` with a clear error."""
    out = []
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(float(part))
        except ValueError:
            raise click.BadParameter(f"{part!r} is not a number (use e.g. 1e-8,1e-5)") from None
    if not out:
        raise click.BadParameter("give at least one tolerance")
    return out


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


def execution_options(f: F) -> F:
    """``--executor``, ``--ray-address`` and ``--resume DIR``: the same for every pass command."""
    f = click.option(
        "--resume", type=click.Path(file_okay=False), default=None, metavar="DIR",
        help="Keep finished tensors in DIR; rerun with the same DIR to continue an interrupted run.",
    )(f)  # fmt: skip
    f = click.option(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="With --executor ray: join this cluster (e.g. auto).",
    )(f)
    return click.option(
        "--executor", type=click.Choice(["auto", "serial", "threads", "processes", "ray"]), default="auto",
        show_default=True,
        help="Where the pass runs: -j threads, -j local processes, or Ray tasks; auto: processes for a pass "
        "of 1 GiB or more on Linux, else threads. The result is the same.",
    )(f)  # fmt: skip


def open_executor(executor: str, jobs: int | None, ray_address: str | None, resume: str | None) -> Any:
    """The executor the execution options name; says on stderr how far a resumed run already got."""
    if ray_address and executor != "ray":
        from ..errors import UsageError

        raise UsageError(
            f"--ray-address is only used with --executor ray (got --executor {executor})",
            "add --executor ray, or drop --ray-address",
        )
    from ..engine.executors import make_executor

    ex = make_executor(executor, jobs, ray_address)
    if resume:
        from ..engine.resume import journaled

        done = journaled(resume)
        log(f"resume: {done} tensor(s) already done in {resume}" if done else f"resume: journal in {resume}")
    return ex


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
