"""Which files an index (``model.safetensors.index.json``, ``pytorch_model.bin.index.json``) may name.

The rule judges the *name* the index gives, not where symlinks finally lead: a shard name is a relative
path without ``..`` and without a symlinked directory that leads out of the checkpoint directory. The file
it names may itself be a symlink only

- to a file inside the checkpoint directory, or
- the way the Hugging Face cache lays out a snapshot: ``<cache>/models--org--name/snapshots/<commit>/<file>``
  is a relative symlink to ``../../blobs/<etag>`` (one ``../`` more per directory level inside the
  snapshot) in the *same* repository's ``blobs/``; that blob is a regular file, or, for Xet files in the
  cache-wide shared store of ``huggingface_hub`` (a ``<cache>/blobs/`` holding the marker file
  ``.huggingface-shared-blobs``), a symlink to ``<cache>/blobs/<2 hex>/<xet hash>``.

A shard symlinked anywhere else (another repository's blobs, ``/tmp``, ...) is refused.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from ..errors import CheckpointFormatError

_REPO_DIR = re.compile(r"(?:models|datasets|spaces|kernels)--.+")
_STORE_MARKER = ".huggingface-shared-blobs"
_HEX = re.compile(r"[0-9a-f]+")


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _outside(index: Path, name: str, why: str) -> CheckpointFormatError:
    return CheckpointFormatError(
        f"{index}: shard {name!r} points outside the checkpoint directory ({why})",
        "an index may only name files inside its own directory; fix the index",
    )


def _snapshot_repo(directory: Path) -> Path | None:
    """The ``models--org--name`` directory if ``directory`` (resolved) lies in one of its snapshots."""
    for d in (directory, *directory.parents):
        if d.parent.name == "snapshots" and _REPO_DIR.fullmatch(d.parent.parent.name):
            return d.parent.parent
    return None


def _hop(link: Path) -> Path:
    """Where the symlink ``link`` points, one step, made absolute from its (resolved) directory."""
    return Path(os.path.normpath(link.parent.resolve() / os.readlink(link)))


def is_hub_blob_link(path: Path) -> bool:
    """True if ``path`` is a snapshot file symlinked into its own repository's blobs, as huggingface_hub does."""
    repo = _snapshot_repo(path.parent.resolve())
    if repo is None or not path.is_symlink():
        return False
    blobs = repo / "blobs"
    if blobs.is_symlink() or not blobs.is_dir():
        return False
    blob = _hop(path)
    if blob.parent != blobs:
        return False
    if not blob.is_symlink():
        return blob.is_file()
    # a Xet blob moved into the cache-wide shared store: blobs/<etag> -> ../../blobs/<xx>/<xet hash>
    store = repo.parent / "blobs"
    entry = _hop(blob)
    return (
        (store / _STORE_MARKER).is_file()
        and not store.is_symlink()
        and entry.parent.parent == store
        and len(entry.name) == 64
        and _HEX.fullmatch(entry.name) is not None
        and entry.parent.name == entry.name[:2]
        and not entry.is_symlink()
        and entry.is_file()
    )


def shard_path(index: Path, name: str) -> Path:
    """The path of shard ``name`` of ``index``, refusing a name that leads outside the index's directory.

    The returned path is ``<directory>/<name>`` itself (not the symlink target), so messages and file names
    stay the ones the index gives.
    """
    root = index.parent
    pure = PurePosixPath(name)
    if not name or "\x00" in name or "\\" in name:
        raise _outside(index, name, "not a plain relative file name")
    if pure.is_absolute() or os.path.isabs(name):
        raise _outside(index, name, "an absolute path")
    if ".." in pure.parts:
        raise _outside(index, name, "it climbs out with '..'")
    if not pure.parts or pure.parts == (".",):
        raise _outside(index, name, "not a file name")
    root_res = root.resolve()
    d = root
    for part in pure.parts[:-1]:
        d = d / part
        if d.is_symlink() and not _inside(d.resolve(), root_res):
            raise _outside(index, name, f"its directory {part!r} is a symlink to {d.resolve()}")
    path = root.joinpath(*pure.parts)
    if path.is_symlink() and path.exists():  # a dangling link is a missing shard, reported by the caller
        target = path.resolve()
        if not _inside(target, root_res) and not is_hub_blob_link(path):
            raise _outside(index, name, f"a symlink to {target}")
    return path
