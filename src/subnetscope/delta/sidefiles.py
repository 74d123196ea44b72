"""Config and tokenizer files that travel with the weights (``config.json``, ``tokenizer.json``, ...)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from ..io.checkpoint import Checkpoint
from .format import SIDE_PATTERNS, StoredFile, is_side_file_name

#: files copied beside the weights (weight files, their indexes and the delta manifest never are)
PATTERNS = SIDE_PATTERNS


def side_files(ck: Checkpoint) -> list[Path]:
    """The config and tokenizer files beside a checkpoint's weights, sorted by name."""
    d = ck.root if ck.root.is_dir() else ck.root.parent
    return sorted(p for p in d.iterdir() if p.is_file() and is_side_file_name(p.name))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def copy_side_files(files: list[Path], dest: Path) -> list[StoredFile]:
    """Copy ``files`` into ``dest``; their names, sizes and digests."""
    out = []
    for p in files:
        shutil.copyfile(p, dest / p.name)
        out.append(StoredFile(p.name, p.stat().st_size, _sha256(dest / p.name)))
    return out
