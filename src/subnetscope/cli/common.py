"""Options and output helpers shared by the commands."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
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


class PositiveNumber(click.ParamType):
    """A finite positive number, checked by :func:`subnetscope.validate.positive_real`."""

    name = "X"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        from .. import validate

        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                self.fail(f"{value!r} is not a number", param, ctx)
        return validate.positive_real(value, _opt_name(param, "value"))


#: click types of ``--tol`` lists, single tolerances and other positive numbers
TOLERANCES = ToleranceList()
TOLERANCE = Tolerance()
POSITIVE = PositiveNumber()


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


def check_report_output(output: str | None, checkpoints: dict[str, str]) -> None:
    """Before a report command reads anything: refuse an ``-o`` that is, or lies inside, one of the input
    ``checkpoints`` (role → path or hub id; opened from headers only) — see :mod:`subnetscope.io.outputs`."""
    if not output:
        return
    from ..io.outputs import Output, check_outputs, checkpoint_inputs
    from ..refs import load_checkpoint

    inputs = [i for role, ref in checkpoints.items() for i in checkpoint_inputs(load_checkpoint(ref), role)]
    check_outputs(inputs, [Output(output, "-o")])


def emit_json(obj: Any) -> None:
    """Write a report's JSON to stdout (one element per line, see :func:`~subnetscope.results.schema.json_text`)."""
    from ..results.schema import json_text

    sys.stdout.write(json_text(obj) + "\n")


def emit_report(obj: Any, fmt: str, output: str | None, human: Callable[[], str]) -> None:
    """The end of every report command: ``-o`` file (atomically), then JSON or the human text on stdout,
    then where the file went on stderr. ``human`` is only called for the human format."""
    from ..results.schema import json_text

    text = json_text(obj) + "\n" if output or fmt == "json" else ""  # encoded once for both
    if output:
        from ..io.atomic import write_text_atomic

        write_text_atomic(output, text)
    if fmt == "json":
        sys.stdout.write(text)
    else:
        say(human())
    if output:
        log(f"report written to {output}")


@contextlib.contextmanager
def unreadable_report(where: str) -> Iterator[None]:
    """Around code that reads fields of JSON reports :func:`~subnetscope.render.fields.check_report` does
    not check: a ``ValueError`` / ``TypeError`` / ``KeyError`` / ``IndexError`` there becomes one typed line
    naming the file(s) (``SUBNETSCOPE_DEBUG=1`` keeps the original traceback)."""
    from ..render.fields import ReportFormatError
    from . import debug

    try:
        yield
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        if debug():
            raise
        raise ReportFormatError(
            f"{where}: a field has the wrong type or is missing ({type(e).__name__}: {e})",
            "the file was edited or damaged: regenerate it with the command that wrote it "
            "(SUBNETSCOPE_DEBUG=1 shows where it failed)",
        ) from None


def say(text: str) -> None:
    """Human-readable text on stdout; its own line breaks stay, any other control character is escaped (the
    renderers escape the names they interpolate, see :mod:`subnetscope.display`; this is the last guard)."""
    from ..display import printable_lines

    click.echo(printable_lines(text))


def log(msg: str) -> None:
    """One line on stderr (control characters escaped: a path or tensor name cannot start a second line)."""
    from ..display import printable

    click.echo(printable(msg), err=True)


def parse_layers(text: str | None) -> list[int] | None:
    """``--rank-layers``: ``"0,5,10"`` or ``"0-3,8"`` → ``[0, 5, 10]`` / ``[0, 1, 2, 3, 8]``."""
    from ..errors import UsageError

    if text is None:
        return None
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                out.extend(range(int(lo), int(hi) + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise UsageError(
                f"--rank-layers: {part!r} is not a layer number or range", "use e.g. 0,5,10 or 0-3"
            ) from None
    if not out:
        raise UsageError("--rank-layers: no layer given", "use e.g. 0,5,10")
    return sorted(set(out))
