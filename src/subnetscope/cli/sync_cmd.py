"""``subnetscope sync inspect`` and ``subnetscope sync replay``."""

from __future__ import annotations

from pathlib import Path

import click

from .common import emit_json, format_option


@click.group("sync")
def sync() -> None:
    """Inspect or replay sparse weight-sync patches (what SyncCallback / sync.Sender write)."""


def _size(n: int) -> str:
    for unit, div in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n} B"


@sync.command("inspect")
@click.argument("path", type=click.Path(exists=True))
@click.option("--tensors", "show", type=click.IntRange(0), default=5, show_default=True,
              help="For one patch: list this many of its most changed tensors.")  # fmt: skip
@format_option
def inspect(path: str, show: int, fmt: str) -> None:
    """Versions, density, bytes and tensors of a patch file or a stream directory PATH."""
    from ..sync import Patch
    from ..sync.stream import read_manifest

    p = Path(path)
    if p.is_dir():
        stream, entries = read_manifest(p)
        if fmt == "json":
            emit_json({"stream": stream, "patches": [e.to_json() for e in entries]})
            return
        click.echo(f"stream {stream}: {len(entries)} patch(es) in {p}")
        click.echo(
            f"{'version':>8} {'parent':>6} {'kind':>4} {'changed':>12} {'density':>8} {'bytes':>11} {'B/changed':>9}  meta"
        )
        for e in entries:
            per = f"{e.bytes / e.changed:.3f}" if e.changed else "-"
            parent = "-" if e.parent is None else str(e.parent)
            click.echo(f"{e.version:>8} {parent:>6} {e.kind:>4} {e.changed:>12,} {100 * e.changed / max(e.numel, 1):>7.3f}% "
                       f"{_size(e.bytes):>11} {per:>9}  {e.meta}")  # fmt: skip
        return
    patch = Patch.load(p)
    st = patch.stats
    if fmt == "json":
        emit_json({"kind": patch.kind, "stream": patch.stream, "version": patch.version, "parent": patch.parent,
                   "digest": patch.digest, "meta": patch.meta, **st.to_json(),
                   "tensors_changed": {t.name: t.changed for t in patch.tensors if t.changed}})  # fmt: skip
        return
    parent = "none (an anchor)" if patch.parent is None else str(patch.parent)
    click.echo(
        f"patch      {p}: {patch.kind}, version {patch.version}, parent {parent}, stream {patch.stream}"
    )
    click.echo(
        f"changed    {st.changed:,} of {st.numel:,} elements ({100 * st.density:.3f} %) in {st.tensors} of {len(patch.tensors)} tensors"
    )
    per = f" = {st.bytes_per_changed:.3f} B per changed element" if st.changed else ""
    click.echo(f"size       {_size(st.bytes)}{per}")
    click.echo(f"digest     {patch.digest}  meta {patch.meta}")
    for t in sorted(patch.tensors, key=lambda t: -t.changed)[:show]:
        if t.changed:
            click.echo(f"  {t.name}: {t.changed:,} of {t.numel:,} ({100 * t.changed / t.numel:.2f} %)")


@sync.command("replay")
@click.argument("base")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False),
              help="Checkpoint directory to write (model.safetensors + BASE's config and tokenizer files).")  # fmt: skip
@click.option(
    "--to", "to", type=click.IntRange(0), default=None, help="Stop at this version (default: the last)."
)
@click.option("--verify", is_flag=True, help="Re-hash every tensor after each patch (a full pass each).")
@click.option(
    "--overwrite", is_flag=True, help="Replace OUTPUT if it exists (only once the new one is complete)."
)
@format_option
def replay(
    base: str, directory: str, output: str, to: int | None, verify: bool, overwrite: bool, fmt: str
) -> None:
    """Rebuild a version of a sync stream DIRECTORY from the starting weights BASE into OUTPUT.

    BASE: the checkpoint the sender started from (directory, .safetensors file, index, hub id), in the
    dtype the patches carry. Every patch is checked (chain, checksum, hashes) before it is applied.
    """
    from ..sync import Receiver
    from ..sync.checkpoint import load_state, write_state
    from ..sync.stream import replay as run

    state, ck = load_state(base)
    receiver = Receiver(state)
    done = run(receiver, directory, to=to, verify=verify)
    dest = write_state(state, output, base=ck, overwrite=overwrite)
    d = receiver.digest()
    if fmt == "json":
        emit_json({"output": str(dest), "version": receiver.version, "applied": done, "digest": d.model})
        return
    click.echo(f"checkpoint {dest}")
    click.echo(
        f"version    {receiver.version} ({len(done)} patch(es) applied: {done[0] if done else '-'}..{done[-1] if done else '-'})"
    )
    click.echo(f"digest     {d.model}")
