"""A directory of patches: one file per version and a ``manifest.json`` listing them.

Layout::

    DIR/manifest.json        {"format": 1, "stream": ..., "patches": [{"file", "version", "parent",
                              "kind", "bytes", "changed", "numel", "tensors", "meta"}, ...]}
    DIR/00000001.patch       the patch of version 1 (wire format of :mod:`subnetscope.sync.patch`)
    ...

Patch files and the manifest are written atomically (the manifest after its patch), so a reader never
sees a half-written file and every patch the manifest lists is complete. :func:`replay` rebuilds any
version from the starting weights by applying the listed patches in order (starting from the last
anchor at or before it, when there is one).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputNotFoundError
from ..io.atomic import write_text_atomic
from .errors import SyncFormatError, SyncGapError
from .patch import Patch
from .receiver import Receiver

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class StreamEntry:
    """One patch of a stream directory, as its manifest lists it."""

    file: str
    version: int
    parent: int | None
    kind: str
    bytes: int
    changed: int
    numel: int
    tensors: int
    meta: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return dict(self.__dict__)


def _entry(name: str, p: Patch) -> StreamEntry:
    st = p.stats
    return StreamEntry(
        name, p.version, p.parent, p.kind, st.bytes, st.changed, st.numel, st.tensors, dict(p.meta)
    )


class PatchWriter:
    """Writes the patches of one sender into ``directory`` (created if missing) and keeps its manifest."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.entries: list[StreamEntry] = []
        self.stream: str | None = None
        if (self.directory / MANIFEST).exists():
            stream, self.entries = read_manifest(self.directory)
            self.stream = stream

    def write(self, patch: Patch) -> Path:
        """Save ``patch`` as ``{version:08d}.patch`` and list it in the manifest; returns its path."""
        if self.stream is not None and patch.stream != self.stream:
            raise SyncFormatError(
                f"{self.directory}: holds sync stream {self.stream}, not {patch.stream}",
                "write each sender's patches into its own directory",
            )
        name = f"{patch.version:08d}.patch"
        path = patch.save(self.directory / name)
        self.stream = patch.stream
        self.entries = [e for e in self.entries if e.version < patch.version] + [_entry(name, patch)]
        doc = {"format": 1, "stream": self.stream, "patches": [e.to_json() for e in self.entries]}
        write_text_atomic(self.directory / MANIFEST, json.dumps(doc, indent=1) + "\n")
        return path


def read_manifest(directory: str | os.PathLike[str]) -> tuple[str, list[StreamEntry]]:
    """``(stream id, entries in version order)`` of a stream directory."""
    d = Path(directory)
    path = d / MANIFEST
    if not path.is_file():
        raise InputNotFoundError(
            f"{d}: no {MANIFEST} (not a sync stream directory)", "give the directory the callback wrote"
        )
    try:
        doc = json.loads(path.read_text())
        stream = str(doc["stream"])
        entries = [StreamEntry(**e) for e in doc["patches"]]
    except (ValueError, KeyError, TypeError) as e:
        raise SyncFormatError(f"{path}: is not a valid sync manifest ({e})", "re-write the stream") from None
    versions = [e.version for e in entries]
    if versions != sorted(set(versions)):
        raise SyncFormatError(f"{path}: lists versions out of order or twice", "re-write the stream")
    return stream, entries


def patches(directory: str | os.PathLike[str], to: int | None = None) -> Iterator[Patch]:
    """The patches a receiver at version 0 applies to reach version ``to`` (default: the last), loaded
    one at a time: from the last anchor at or before ``to`` if any, else from the first patch."""
    d = Path(directory)
    _, entries = read_manifest(d)
    if to is not None:
        if not any(e.version == to for e in entries) and to != 0:
            have = f"{entries[0].version}..{entries[-1].version}" if entries else "none"
            raise SyncGapError(
                f"{d}: has no version {to} (versions {have})", "pick a listed version (sync inspect DIR)"
            )
        entries = [e for e in entries if e.version <= to]
    start = max((i for i, e in enumerate(entries) if e.kind == "full"), default=0)
    for e in entries[start:]:
        yield Patch.load(d / e.file)


def replay(
    receiver: Receiver, directory: str | os.PathLike[str], to: int | None = None, verify: bool = False
) -> list[int]:
    """Apply the patches of ``directory`` onto ``receiver`` (holding version 0, the sender's start) up to
    version ``to``; returns the versions applied. Every chain rule of :meth:`Receiver.apply` holds."""
    done = []
    for p in patches(directory, to):
        receiver.apply(p, verify=verify, where=f"{Path(directory) / f'{p.version:08d}.patch'}")
        done.append(p.version)
    return done
