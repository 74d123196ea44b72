"""A checkpoint as a name → :class:`TensorInfo` index, built from headers only.

Accepted layouts: a directory with ``model.safetensors.index.json`` (sharded), a directory with one or more
``*.safetensors`` files and no index, or a single ``.safetensors`` file. Legacy ``pytorch_model.bin``
checkpoints (a single file, or shards with ``pytorch_model.bin.index.json``) are indexed by
:mod:`subnetscope.io.legacy` into the same :class:`TensorInfo` form; safetensors files win when a directory
holds both.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import CheckpointFormatError, InputNotFoundError
from .assemble import Checkpoint, load_index, merge_headers
from .safetensors_header import read_header, require_regular

INDEX_NAME = "model.safetensors.index.json"


def open_checkpoint(path: str | os.PathLike[str], ref: str | None = None) -> Checkpoint:
    """Index a local checkpoint (directory, index file, or single ``.safetensors`` file) from headers only."""
    p = Path(path)
    r = ref if ref is not None else str(path)
    if not p.exists():
        raise InputNotFoundError(
            f"{p}: no such file or directory", "give a checkpoint directory, a .safetensors file or a hub id"
        )
    if not p.is_dir():
        require_regular(p, "checkpoint file")
        from . import legacy

        if legacy.is_legacy_file(p):
            return legacy.open_legacy(p, r)
        if p.name.endswith(".index.json"):
            return load_index(p, r)
        if p.suffix != ".safetensors":
            raise CheckpointFormatError(
                f"{p}: not a .safetensors file",
                "give a .safetensors file, its directory, or model.safetensors.index.json",
            )
        return merge_headers([read_header(p)], p, r)
    index = p / INDEX_NAME
    if index.exists():  # a FIFO or a directory under this name is refused, not skipped
        return load_index(index, r)
    files = sorted(p.glob("*.safetensors"))
    if not files:
        from . import legacy

        found = legacy.find_legacy(p)
        if found is not None:
            return legacy.open_legacy(found, r)
        raise InputNotFoundError(
            f"{p}: no .safetensors files in this directory",
            "the directory must hold model.safetensors, shards with model.safetensors.index.json, "
            "or a legacy pytorch_model.bin (sharded with pytorch_model.bin.index.json)",
        )
    return merge_headers([read_header(f) for f in files], p, r)


__all__ = ["INDEX_NAME", "Checkpoint", "open_checkpoint"]
