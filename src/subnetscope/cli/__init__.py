"""The ``subnetscope`` command: a thin layer over the library.

Each command lives in its own module and is imported only when it runs, so ``--help`` stays instant.
Errors the library raises on purpose (:class:`~subnetscope.errors.SubnetscopeError`) become one line on
stderr and exit code 2 (1 for ``--strict`` findings); ``SUBNETSCOPE_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

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


def main(argv: list[str] | None = None) -> Any:
    """Entry point of the ``subnetscope`` script."""
    from ..errors import SubnetscopeError

    try:
        return cli.main(args=argv, prog_name="subnetscope", standalone_mode=False)
    except SubnetscopeError as e:
        if debug():
            raise
        click.echo(f"subnetscope: error: {e.one_line()}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("subnetscope: interrupted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("subnetscope: interrupted; no output was written", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(2 if e.exit_code == 2 else e.exit_code)
    except BrokenPipeError:
        sys.exit(0)
    except MemoryError:
        if debug():
            raise
        click.echo("subnetscope: error: out of memory; lower -j or use --chunk-elements", err=True)
        sys.exit(2)
