"""The ``subnetscope`` command: a thin layer over the library.

Each command lives in its own module and is imported only when it runs, so ``--help`` stays instant.
Errors the library raises on purpose (:class:`~subnetscope.errors.SubnetscopeError`) become one line on
stderr and exit code 2 (1 for ``--strict`` findings); ``SUBNETSCOPE_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from typing import Any

import click

from .. import __version__

#: command name → "module:function" (module relative to this package)
COMMANDS: dict[str, str] = {
    "compare": "compare_cmd:compare",
    "plot": "plot_cmd:plot",
    "mask": "mask_cmd:mask",
    "overlap": "mask_cmd:overlap",
    "series": "series_cmd:series",
    "rank": "anatomy_cmd:rank",
    "report": "report_cmd:report",
    "delta": "delta_cmd:delta",
    "conjecture": "train_cmd:conjecture",
    "study": "study_cmd:study",
    "sync": "sync_cmd:sync",
}

#: one-line help shown by ``subnetscope --help`` without importing the command modules
SUMMARIES: dict[str, str] = {
    "compare": "Update sparsity of TARGET against BASE, per tensor, layer and matrix type.",
    "plot": "Plots (PNG and SVG) from a compare or series JSON report.",
    "mask": "Write the mask of parameters updated from BASE to TARGET.",
    "overlap": "Overlap of two subnetworks (masks) against random baselines.",
    "series": "Sparsity dynamics over the checkpoints of one training run.",
    "rank": "Numerical rank of every 2-D weight update.",
    "report": "A self-contained HTML page from one or more JSON reports.",
    "delta": "Export or apply a sparse, bit-exact delta between two checkpoints.",
    "conjecture": "Compare full and subnetwork finetuning (paper Conjecture 1).",
    "study": "Run the small-scale replication study from a config file.",
    "sync": "Inspect or replay sparse weight-sync patches (trainer → rollout engines).",
}


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        if ctx.resilient_parsing or "--help" in sys.argv[1:2]:
            return click.Command(cmd_name, help=SUMMARIES.get(cmd_name, ""))
        mod_name, attr = target.split(":")
        mod = importlib.import_module(f"{__name__}.{mod_name}")
        cmd: click.Command = getattr(mod, attr)
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SUMMARIES.get(name, "")) for name in COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(
    cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}
)
@click.version_option(__version__, prog_name="subnetscope")
def cli() -> None:
    """Measure, and use, the sparse subnetworks that RL finetuning updates in LLM checkpoints.

    Models are local paths (a directory, a .safetensors file, an index) or hub ids org/name[@revision].
    Data goes to stdout, progress and logs to stderr. Set SUBNETSCOPE_DEBUG=1 for tracebacks.
    """


def debug() -> bool:
    """Whether ``SUBNETSCOPE_DEBUG`` asks for tracebacks."""
    return os.environ.get("SUBNETSCOPE_DEBUG", "").strip() not in ("", "0")


def _stdout_failed(e: OSError) -> None:
    """Standard output refused a write (``> /dev/full``, a full disk): one line, exit 2."""
    with contextlib.suppress(OSError):  # the unwritten rest must not fail again at exit
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
    click.echo(
        f"subnetscope: error: cannot write to standard output: {e.strerror or e}; "
        "free space where stdout goes, redirect it elsewhere, or write the report with -o FILE",
        err=True,
    )
    sys.exit(2)


def parser_error_line(e: click.ClickException, argv: list[str] | None = None) -> str:
    """A click error (bad option value, unknown option, missing argument...) as one line, the usage hint
    on the same line: ``Invalid value for '-j' / '--jobs': ...; see 'subnetscope compare --help'``."""
    msg = " ".join(e.format_message().split()).removesuffix(".")  # click may break "Did you mean" off
    if not isinstance(e, click.UsageError):
        return msg
    ctx = getattr(e, "ctx", None)
    if ctx is not None:
        path = ctx.command_path
    else:  # some parser errors carry no context: the command is the leading words of argv
        words = ["subnetscope"]
        args = list(sys.argv[1:] if argv is None else argv)
        if args and args[0] in COMMANDS:
            words.append(args[0])
            if args[0] == "delta" and len(args) > 1 and args[1] in ("export", "apply"):
                words.append(args[1])
        path = " ".join(words)
    return f"{msg}; see '{path} --help'"


def main(argv: list[str] | None = None) -> Any:
    """Entry point of the ``subnetscope`` script."""
    from ..display import printable
    from ..errors import SubnetscopeError

    try:
        rv = cli.main(args=argv, prog_name="subnetscope", standalone_mode=False)
        sys.stdout.flush()  # a full or failing stdout must fail here, not at interpreter exit
        return rv
    except SubnetscopeError as e:
        if debug():
            raise
        from .advice import cli_line

        click.echo(f"subnetscope: error: {printable(cli_line(e))}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("subnetscope: interrupted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("subnetscope: interrupted; no output was written", err=True)
        sys.exit(130)
    except click.ClickException as e:
        # `subnetscope` or `subnetscope delta` alone: the help text (click >= 8.2 raises for it)
        if type(e).__name__ == "NoArgsIsHelpError":
            e.show()
            sys.exit(2)
        if debug():
            raise
        click.echo(f"subnetscope: error: {printable(parser_error_line(e, argv))}", err=True)
        sys.exit(2 if e.exit_code == 2 else e.exit_code)
    except BrokenPipeError:
        sys.exit(0)
    except OSError as e:
        if debug() or e.filename is not None:  # the library names its own files (OutputWriteError)
            raise
        _stdout_failed(e)
    except MemoryError:
        if debug():
            raise
        click.echo("subnetscope: error: out of memory; lower -j or use --chunk-elements", err=True)
        sys.exit(2)
