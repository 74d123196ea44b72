"""``subnetscope delta export`` and ``subnetscope delta apply``."""

from __future__ import annotations

from typing import Any

import click

from ..display import printable
from .common import emit_json, execution_options, format_option, jobs_option, open_executor, say


def _size(n: int) -> str:
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n} B"


_UNITS = {"KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "KB": 10**3, "MB": 10**6, "GB": 10**9, "B": 1}


class Size(click.ParamType):
    """``"5GB"``, ``"500MB"``, ``"2GiB"`` or a number of bytes → bytes (positive)."""

    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            n = value
        else:
            v = str(value).strip().upper()
            scale = 1
            for suffix, mult in _UNITS.items():
                if v.endswith(suffix):
                    v, scale = v[: -len(suffix)], mult
                    break
            try:
                f = float(v) * scale
                n = int(f)
            except (ValueError, OverflowError):
                self.fail(f"{value!r} is not a size (use e.g. 5GB, 500MB or a number of bytes)", param, ctx)
        if n <= 0:
            self.fail(f"{value!r}: the size must be positive", param, ctx)
        return n


@click.group("delta")
def delta() -> None:
    """Export or apply a sparse, bit-exact delta between two checkpoints.

    A delta stores, per tensor, which elements changed (any bit) and their new values, so that
    `delta apply` rebuilds TARGET byte for byte from BASE.
    """


@delta.command("export")
@click.argument("base")
@click.argument("target")
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    type=click.Path(file_okay=False),
    help="Delta directory to write.",
)
@click.option(
    "--overwrite", is_flag=True, help="Replace OUTPUT if it exists (only once the new delta is complete)."
)
@click.option(
    "--level", type=click.IntRange(-7, 22), default=1, show_default=True, help="zstd level of the blobs."
)
@click.option(
    "--chunk-elements",
    type=click.IntRange(8, 1 << 28),
    default=1 << 20,
    show_default=True,
    help="Elements per chunk.",
)
@jobs_option
@format_option
@execution_options
def export(
    base: str,
    target: str,
    output: str,
    overwrite: bool,
    level: int,
    chunk_elements: int,
    jobs: int | None,
    fmt: str,
    executor: str,
    ray_address: str | None,
    resume: str | None,
) -> None:
    """Write the delta that rebuilds TARGET from BASE into the directory OUTPUT.

    BASE and TARGET: a checkpoint directory, a .safetensors file, an index file, or a hub id org/name[@rev].
    """
    from .. import validate
    from ..delta import export_delta

    validate.chunk_elements(chunk_elements, "--chunk-elements", multiple_of_8=True)
    ex = open_executor(executor, jobs, ray_address, resume)
    res = export_delta(
        base, target, output, chunk_elements=chunk_elements, zstd_level=level, overwrite=overwrite,
        progress=fmt == "human", executor=ex, resume=resume,
    )  # fmt: skip
    j = res.to_json()
    if fmt == "json":
        emit_json(j)
        return
    enc = ", ".join(f"{n} {k}" for k, n in sorted(j["encodings"].items(), key=lambda kv: -kv[1]))
    say(
        f"delta      {printable(res.path)}\n"
        f"tensors    {j['tensors']}: {enc}; {len(j['removed'])} removed\n"
        f"changed    {j['changed']:,} of {j['numel']:,} elements ({100 * j['density']:.2f} %)\n"
        f"size       {_size(j['delta_bytes'])} = {j['ratio']:.3f} x TARGET ({_size(j['target_bytes'])})"
    )


@delta.command("apply")
@click.argument("base")
@click.argument("delta_dir", metavar="DELTA_DIR", type=click.Path(file_okay=False))
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    type=click.Path(file_okay=False),
    help="Checkpoint directory to write.",
)
@click.option("--verify", is_flag=True, help="Check the sha256 of every rebuilt tensor against the delta.")
@click.option(
    "--overwrite", is_flag=True, help="Replace OUTPUT if it exists (only once the new one is complete)."
)
@click.option(
    "--max-shard-size",
    "max_shard",
    type=Size(),
    default="5GB",
    show_default=True,
    help="Largest weight file written (e.g. 2GB, 500MB).",
)
@jobs_option
@format_option
@execution_options
def apply(
    base: str,
    delta_dir: str,
    output: str,
    verify: bool,
    overwrite: bool,
    max_shard: int,
    jobs: int | None,
    fmt: str,
    executor: str,
    ray_address: str | None,
    resume: str | None,
) -> None:
    """Rebuild TARGET from BASE and DELTA_DIR as a Hugging Face checkpoint directory OUTPUT.

    Refuses, writing nothing, a BASE other than the one the delta was made against and a damaged delta.
    With --executor ray every node must see BASE, DELTA_DIR and OUTPUT at the same path.
    """
    from ..delta import apply_delta

    ex = open_executor(executor, jobs, ray_address, resume)
    res = apply_delta(
        base, delta_dir, output, verify=verify, jobs=jobs, max_shard_bytes=max_shard, overwrite=overwrite,
        progress=fmt == "human", executor=ex, resume=resume,
    )  # fmt: skip
    if fmt == "json":
        emit_json(res.to_json())
        return
    shards = [printable(f) for f in res.files if f.endswith(".safetensors")]
    where = shards[0] if len(shards) == 1 else f"{len(shards)} shards {shards[0]} .. {shards[-1]} + index"
    copied = ", ".join(printable(f) for f in res.side_files) or "no config/tokenizer files"
    say(
        f"checkpoint {printable(res.path)}\n"
        f"tensors    {res.tensors} ({_size(res.nbytes)}) in {where}\n"
        f"copied     {copied} (from the {res.side_files_from})\n"
        f"verified   {'every tensor matches its sha256' if res.verified else 'no (pass --verify)'}"
    )
