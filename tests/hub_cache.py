"""A Hugging Face hub cache laid out exactly as ``huggingface_hub`` (2.x) writes one when it downloads.

    <cache>/models--org--name/
        blobs/<etag>                      the file's bytes; etag = sha256 of the content for LFS files
                                          (``*.safetensors``, ``*.bin``), the git blob sha1 for the others
        refs/<revision>                   the commit hash, no newline
        snapshots/<commit>/<path>         relative symlink ../../blobs/<etag> (one ../ more per directory)
        trees/<commit>.json               the cached tree listing that lets an offline snapshot_download
                                          check the snapshot is complete

With ``xet=True`` the LFS files go through the cache-wide shared blob store as a Xet download does:
``<cache>/blobs/.huggingface-shared-blobs`` marks it, the bytes live in ``<cache>/blobs/<xx>/<xet hash>``
(with its ``.refs`` manifest) and the repository's ``blobs/<etag>`` is a relative symlink to them. The real
Xet hash is a Merkle hash of content-defined chunks; here it is a sha256 of the content, of the same form.
Tests run ``huggingface_hub.snapshot_download`` itself on this cache with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

#: patterns git-lfs tracks in a new hub repository's default .gitattributes (the subset used here)
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".npz", ".zst")


def git_blob_sha1(data: bytes) -> str:
    """``git hash-object`` of ``data``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    """The git-lfs pointer file git stores instead of an LFS file."""
    oid = hashlib.sha256(data).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(data)}\n".encode()


def repo_dir(cache: Path, repo_id: str) -> Path:
    """``<cache>/models--org--name``."""
    return cache / ("models--" + repo_id.replace("/", "--"))


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(target, link.parent), link)


def add_snapshot(
    cache: Path,
    repo_id: str,
    files: dict[str, bytes],
    commit: str,
    revisions: tuple[str, ...] = ("main",),
    xet: bool = False,
) -> Path:
    """Store ``files`` (repo path → bytes) as commit ``commit`` of ``repo_id``; returns the snapshot dir."""
    repo = repo_dir(cache, repo_id)
    snap = repo / "snapshots" / commit
    tree: dict[str, dict[str, object]] = {}
    for rel, data in sorted(files.items()):
        lfs = rel.endswith(LFS_SUFFIXES)
        sha256 = hashlib.sha256(data).hexdigest()
        etag = sha256 if lfs else git_blob_sha1(data)
        blob = repo / "blobs" / etag
        blob.parent.mkdir(parents=True, exist_ok=True)
        entry: dict[str, object] = {
            "size": len(data),
            "blob_id": git_blob_sha1(lfs_pointer(data) if lfs else data),
        }
        if lfs:
            entry.update(lfs_sha256=sha256, lfs_size=len(data))
        if lfs and xet:
            xet_hash = hashlib.sha256(b"xet\0" + data).hexdigest()
            store = cache / "blobs"
            store.mkdir(exist_ok=True)
            (store / ".huggingface-shared-blobs").write_text("1\n")
            payload = store / xet_hash[:2] / xet_hash
            payload.parent.mkdir(exist_ok=True)
            payload.write_bytes(data)
            with open(payload.with_name(xet_hash + ".refs"), "a") as f:
                f.write(f"{repo.name}/blobs/{etag}\n")
            if not blob.is_symlink():
                _link(payload, blob)
            entry["xet_hash"] = xet_hash
        elif not blob.exists():
            blob.write_bytes(data)
        _link(blob, snap / rel)
        tree[rel] = entry
    for rev in revisions:
        ref = repo / "refs" / rev
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit)
    (repo / "trees").mkdir(exist_ok=True)
    (repo / "trees" / f"{commit}.json").write_text(
        json.dumps({"format_version": 1, "files": {k: tree[k] for k in sorted(tree)}}, indent=1)
    )
    return snap


def add_checkpoint(
    cache: Path,
    repo_id: str,
    local: Path,
    commit: str,
    revisions: tuple[str, ...] = ("main",),
    xet: bool = False,
    under: str = "",
) -> Path:
    """Store every file of the local checkpoint directory ``local`` (optionally ``under`` a subfolder)."""
    files = {f"{under}{f.name}": f.read_bytes() for f in sorted(local.iterdir()) if f.is_file()}
    return add_snapshot(cache, repo_id, files, commit, revisions, xet)


def hub_env(cache: Path) -> dict[str, str]:
    """Environment for a subprocess that must resolve hub ids from ``cache`` only."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache))
    env.pop("HF_HOME", None)
    env.pop("HUGGINGFACE_HUB_CACHE", None)
    return env
