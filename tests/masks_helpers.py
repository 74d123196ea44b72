"""Checkpoints whose changed positions are chosen by the test (masks, overlap and series tests)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from factory import llama_names, random_state, save_checkpoint

#: a small Llama: 2 layers, every matrix type, norms
SHAPES = llama_names(layers=2, hidden=16, inter=32, vocab=48)


def base_state(seed: int = 0, specials: bool = True) -> dict[str, torch.Tensor]:
    """Random bf16 weights; with ``specials`` a few exact zeros and bf16 subnormals in the q projections
    (own magnitude bins) and tiny weights in the v projections (where a change can stay below 1e-5)."""
    st = random_state(SHAPES, seed=seed)
    if specials:
        for name, t in st.items():
            flat = t.view(-1)
            if "q_proj" in name:
                flat[:5] = 0.0
                flat[5:9] = 1e-40  # subnormal in bf16
            if "v_proj" in name:
                flat[:16] = 1e-6
    return st


def pick(state: dict[str, torch.Tensor], frac: float, seed: int) -> dict[str, np.ndarray]:
    """A random set of flat positions per non-norm tensor (sorted unique int arrays)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, t in state.items():
        n = t.numel()
        if "norm" in name:
            out[name] = np.zeros(0, dtype=np.int64)
        else:
            out[name] = np.flatnonzero(rng.random(n) < frac)
    return out


def moved(state: dict[str, torch.Tensor], positions: dict[str, np.ndarray], step: float = 0.25,
          signs_seed: int | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
    """Copy of ``state`` with the given positions moved by ``±step`` (far above any tolerance).

    With ``signs_seed`` the sign of each move is random, else it is +."""
    rng = np.random.default_rng(signs_seed) if signs_seed is not None else None
    out = {k: v.clone() for k, v in state.items()}
    for name, idx in positions.items():
        if idx.size == 0:
            continue
        flat = out[name].view(-1)
        sgn = rng.choice([-1.0, 1.0], idx.size) if rng is not None else np.ones(idx.size)
        mult = rng.uniform(0.5, 2.0, idx.size) if rng is not None else np.ones(idx.size)
        delta = torch.from_numpy(sgn * mult * step).float()
        ti = torch.from_numpy(idx)
        flat[ti] = (flat[ti].float() + delta).to(flat.dtype)
    return out


def save(state: dict[str, torch.Tensor], root: Path, shards: int = 1) -> Path:
    """Write a checkpoint (config says llama)."""
    return save_checkpoint(state, root, shards=shards)


def to_f64(t: torch.Tensor) -> np.ndarray:
    """Exact float64 values, flattened."""
    return t.double().reshape(-1).numpy()


def hypergeom_exact(n: int, c1: int, c2: int) -> tuple[float, float]:
    """Mean and variance of |I1 ∩ I2| for random sets of sizes c1, c2 out of n, by summing the pmf."""
    total = math.comb(n, c2)
    mean = 0.0
    second = 0.0
    for x in range(max(0, c1 + c2 - n), min(c1, c2) + 1):
        p = math.comb(c1, x) * math.comb(n - c1, c2 - x) / total
        mean += x * p
        second += x * x * p
    return mean, second - mean * mean
