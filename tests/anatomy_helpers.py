"""Helpers for the update-anatomy tests (rank, ULP, plots, HTML): bf16 bit pairs whose ULP distances are
known, matrices of known rank, and checkpoint pairs with an Adam-like bf16 update.

Run as a script to build the example pair used in docs/anatomy.md::

    python tests/anatomy_helpers.py /tmp/anatomy-demo
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from factory import llama_names, random_state, save_checkpoint


def bf16_bits(values: list[float] | np.ndarray) -> np.ndarray:
    """bf16 bit codes (uint16) of values that are exactly representable in bf16 (checked)."""
    t = torch.tensor(np.asarray(values, dtype=np.float32)).to(torch.bfloat16)
    back = t.float().numpy()
    v = np.asarray(values, dtype=np.float32)
    same = (back == v) | (np.isnan(back) & np.isnan(v))
    assert same.all(), f"not bf16-exact: {v[~same]}"
    return t.view(torch.int16).numpy().view(np.uint16).copy()


def code(c: int) -> int:
    """A raw bf16 code (identity; for readability in tables of cases)."""
    return c


def low_rank_plus_noise(
    rng: np.random.Generator, m: int, n: int, r: int, noise: float = 1e-7, spread: float = 3.0
) -> np.ndarray:
    """A float32 ``m × n`` matrix of numerical rank exactly ``r``: singular values spread over
    ``10^-spread .. 1`` (far above the rank tolerance), plus Gaussian noise whose singular values stay
    about 100× below the tolerance."""
    u, _ = np.linalg.qr(rng.standard_normal((m, r)))
    v, _ = np.linalg.qr(rng.standard_normal((n, r)))
    s = 10.0 ** -rng.uniform(0, spread, r)
    s[0] = 1.0
    a = (u * s) @ v.T
    # noise singular values ~ noise * (sqrt(m) + sqrt(n)); tolerance = max(m, n) * eps32 ~ 1e-7 * max(m,n)
    a += rng.standard_normal((m, n)) * noise / (np.sqrt(m) + np.sqrt(n))
    return a.astype(np.float32)


def adam_like_target(base: dict[str, torch.Tensor], lr: float, seed: int = 1) -> dict[str, torch.Tensor]:
    """``bf16(w + lr · ±1)`` for every non-norm tensor: a step of size lr that bf16 rounds away wherever
    |w| is more than about 256 · lr (the update-sparsity mechanism the issue describes)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, w in base.items():
        if "norm" in name:
            out[name] = w.clone()
            continue
        sign = torch.where(torch.rand(w.shape, generator=g) < 0.5, -1.0, 1.0)
        out[name] = (w.float() + lr * sign).to(torch.bfloat16)
    return out


def adam_like_pair(root: Path, lr: float = 1e-5, layers: int = 3, hidden: int = 64, inter: int = 128,
                   vocab: int = 256, seed: int = 0) -> tuple[Path, Path]:  # fmt: skip
    """A base/target bf16 Llama pair (sharded 2 and 1) with :func:`adam_like_target`'s update."""
    shapes = llama_names(layers=layers, hidden=hidden, inter=inter, vocab=vocab)
    base = random_state(shapes, seed=seed)
    target = adam_like_target(base, lr, seed + 1)
    b = save_checkpoint(base, root / "base", shards=2)
    t = save_checkpoint(target, root / "target", shards=1)
    return b, t


def f32_known_rank_pair(root: Path, ranks: dict[str, int], seed: int = 0) -> tuple[Path, Path]:
    """F32 Llama-named pair whose updates have the given ranks (tensor name → rank; others unchanged).

    The update is added in float64 and rounded once to float32; its size (σ ≥ 1e-3 · 0.5) dwarfs the
    rounding (≤ 2^-24 · |w| ≈ 1e-9), so the float32 delta keeps rank r.
    """
    rng = np.random.default_rng(seed)
    shapes = llama_names(layers=2, hidden=48, inter=80, vocab=64)
    base = {n: (rng.standard_normal(s) * 0.02).astype(np.float32) for n, s in shapes.items()}
    target = {n: v.copy() for n, v in base.items()}
    for name, r in ranks.items():
        m, n = shapes[name]
        upd = low_rank_plus_noise(rng, m, n, r, noise=0.0, spread=1.0).astype(np.float64) * 0.5
        target[name] = (base[name].astype(np.float64) + upd).astype(np.float32)
    b = save_checkpoint({k: torch.from_numpy(v) for k, v in base.items()}, root / "base")
    t = save_checkpoint({k: torch.from_numpy(v) for k, v in target.items()}, root / "target")
    return b, t


def run_main(args: list[str], capsys: Any) -> tuple[int, str, str]:
    """Run the real entry point (its error handling included); (exit code, stdout, stderr)."""
    from subnetscope.cli import main

    code = 0
    try:
        main(args)
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/anatomy-demo")
    b, t = adam_like_pair(out, lr=1e-5, layers=4, hidden=256, inter=512, vocab=1024)
    b2, t2 = adam_like_pair(out / "lr3e-5", lr=3e-5, layers=4, hidden=256, inter=512, vocab=1024)
    print(b, t, t2, sep="\n")
