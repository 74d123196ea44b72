"""Helpers for the delta tests: bit-level perturbations known by construction, reading a checkpoint back,
and editing a delta's manifest while keeping (or breaking) its seal."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from factory import bits, llama_names, save_checkpoint
from subnetscope.delta.format import MANIFEST_NAME, seal_digest
from subnetscope.io.checkpoint import open_checkpoint
from subnetscope.io.reader import read_tensor_bits

_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def random_weights(
    shapes: dict[str, tuple[int, ...]], dtype: torch.dtype, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random weights of any float dtype (fp8 included: drawn in float32, then cast)."""
    g = torch.Generator().manual_seed(seed)
    return {n: (torch.randn(s, generator=g) * 0.5).to(dtype) for n, s in shapes.items()}


def flip_bits(t: torch.Tensor, positions: np.ndarray, seed: int = 0) -> torch.Tensor:
    """A copy of ``t`` with the raw bits at ``positions`` (flat) XORed with a random non-zero pattern."""
    out = t.clone().contiguous()
    raw = out.view(-1).view(_INT[t.element_size()]).numpy().view(f"u{t.element_size()}")
    rng = np.random.default_rng(seed)
    width = 8 * t.element_size()
    pattern = rng.integers(1, 1 << min(width, 16), size=positions.size, dtype=np.uint64)
    raw[positions] ^= pattern.astype(raw.dtype)
    return out


def perturb_bits(
    state: dict[str, torch.Tensor], frac: float, seed: int = 1, names: list[str] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Copy of ``state`` with exactly the elements drawn with probability ``frac`` changed at bit level in
    ``names`` (default: all); the exact number of changed elements per tensor."""
    rng = np.random.default_rng(seed)
    out, changed = {}, {}
    for i, (name, t) in enumerate(state.items()):
        if names is not None and name not in names:
            out[name], changed[name] = t.clone(), 0
            continue
        pos = np.flatnonzero(rng.random(t.numel()) < frac)
        out[name] = flip_bits(t, pos, seed + i)
        changed[name] = int(pos.size)
    return out, changed


def load_dir(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint directory as raw bits, read through subnetscope's own reader."""
    ck = open_checkpoint(path)
    return {n: read_tensor_bits(info) for n, info in ck.tensors.items()}


def assert_same_bits(got: dict[str, np.ndarray], want: dict[str, torch.Tensor]) -> None:
    """``got`` (raw bits by name) holds exactly the tensors of ``want``, bit for bit."""
    assert sorted(got) == sorted(want)
    for name, t in want.items():
        np.testing.assert_array_equal(got[name], bits(t), err_msg=name)


def edit_manifest(delta_dir: Path, edit: Callable[[dict[str, Any]], None], reseal: bool = True) -> None:
    """Change ``delta.json`` in place; with ``reseal`` its ``manifest_sha256`` is updated to match."""
    path = delta_dir / MANIFEST_NAME
    obj = json.loads(path.read_text())
    edit(obj)
    if reseal:
        obj["manifest_sha256"] = seal_digest(obj)
    path.write_text(json.dumps(obj))


def tensor_entry(obj: dict[str, Any], name: str) -> dict[str, Any]:
    """The manifest entry of tensor ``name``."""
    return next(t for t in obj["tensors"] if t["name"] == name)


def small_shapes() -> dict[str, tuple[int, ...]]:
    """A tiny Llama layout (2 layers) whose tensors span several 256-element chunks."""
    return llama_names(layers=2, hidden=32, inter=48, vocab=80)


def write_pair(
    root: Path,
    base: dict[str, torch.Tensor],
    target: dict[str, torch.Tensor],
    base_shards: int = 3,
    target_shards: int = 2,
) -> tuple[Path, Path]:
    """Save base and target, sharded differently (target in reverse name order)."""
    b = save_checkpoint(base, root / "base", shards=base_shards)
    t = save_checkpoint(target, root / "target", shards=target_shards, order=sorted(target, reverse=True))
    return b, t
