"""Checkpoints as sync states: load a checkpoint's tensors (the replay base) and write one atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..delta.sidefiles import copy_side_files, side_files
from ..io.atomic import atomic_dir
from ..io.reader import read_tensor_bits
from ..refs import load_checkpoint

#: safetensors dtype code → torch dtype
TORCH_DTYPES = {
    "BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "I8": torch.int8, "U8": torch.uint8,
    "I16": torch.int16, "I32": torch.int32, "I64": torch.int64, "BOOL": torch.bool,
}  # fmt: skip
_SIGNED = {1: np.uint8, 2: np.int16, 4: np.int32, 8: np.int64}


def load_state(ref: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], Any]:
    """``(name → tensor, checkpoint)`` of a checkpoint directory, file or hub id, every tensor read in full."""
    ck = load_checkpoint(ref)
    out: dict[str, torch.Tensor] = {}
    for name, info in ck.tensors.items():
        dt = TORCH_DTYPES[info.dtype.code]
        b = read_tensor_bits(info)
        b = b.view(_SIGNED[b.dtype.itemsize])
        out[name] = torch.from_numpy(b).view(dt).reshape(info.shape)
    return out, ck


def write_state(
    state: dict[str, torch.Tensor], out: str | os.PathLike[str], base: Any = None, overwrite: bool = False
) -> Path:
    """Write ``state`` as ``OUT/model.safetensors`` (plus the base's config and tokenizer files), atomically:
    OUT appears complete or not at all."""
    from safetensors.torch import save_file

    with atomic_dir(out, overwrite=overwrite) as tmp:
        save_file(
            {k: v.contiguous() for k, v in state.items()},
            str(tmp / "model.safetensors"),
            metadata={"format": "pt"},
        )
        if base is not None:
            copy_side_files(side_files(base), tmp)
    return Path(out)
