"""Tiny checkpoints with real Hugging Face tensor names, whose changed elements are known by construction."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file


def llama_names(
    layers: int = 2,
    hidden: int = 32,
    inter: int = 64,
    vocab: int = 128,
    kv: int | None = None,
    tied: bool = False,
) -> dict[str, tuple[int, ...]]:
    """Tensor name → shape of a Llama-style model (HF naming)."""
    kv = kv or hidden
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update(
            {
                p + "self_attn.q_proj.weight": (hidden, hidden),
                p + "self_attn.k_proj.weight": (kv, hidden),
                p + "self_attn.v_proj.weight": (kv, hidden),
                p + "self_attn.o_proj.weight": (hidden, hidden),
                p + "mlp.gate_proj.weight": (inter, hidden),
                p + "mlp.up_proj.weight": (inter, hidden),
                p + "mlp.down_proj.weight": (hidden, inter),
                p + "input_layernorm.weight": (hidden,),
                p + "post_attention_layernorm.weight": (hidden,),
            }
        )
    shapes["model.norm.weight"] = (hidden,)
    if not tied:
        shapes["lm_head.weight"] = (vocab, hidden)
    return shapes


def random_state(
    shapes: dict[str, tuple[int, ...]],
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 0,
    scale: float = 0.02,
) -> dict[str, torch.Tensor]:
    """Random weights (norms are ones, as in a real initialisation)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in shapes.items():
        if "norm" in name:
            out[name] = torch.ones(shape, dtype=dtype)
        else:
            out[name] = (torch.randn(shape, generator=g) * scale).to(dtype)
    return out


def perturb(
    state: dict[str, torch.Tensor],
    frac: float,
    seed: int = 1,
    names: list[str] | None = None,
    rel: float = 0.05,
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Copy of ``state`` with ``frac`` of the elements of ``names`` (default: non-norm tensors) changed by a
    relative step large enough that every changed element moves by many ULPs and by more than 1e-5 when
    |w| > 2e-4. Returns the new state and the exact number of changed elements per tensor."""
    g = torch.Generator().manual_seed(seed)
    out = {k: v.clone() for k, v in state.items()}
    changed: dict[str, int] = {}
    for name, t in state.items():
        if (names is None and "norm" in name) or (names is not None and name not in names):
            changed[name] = 0
            continue
        flat = out[name].view(-1)
        sel = torch.rand(flat.shape, generator=g) < frac
        new = (flat.float() * (1 + rel) + torch.sign(flat.float()) * 1e-3).to(t.dtype)
        flat[sel] = new[sel]
        diff = flat.view(torch.int16 if t.element_size() == 2 else torch.int32) != t.view(-1).view(
            torch.int16 if t.element_size() == 2 else torch.int32
        )
        changed[name] = int(diff.sum())
    return out, changed


def save_checkpoint(
    state: dict[str, torch.Tensor],
    root: Path,
    shards: int = 1,
    config: dict | None = None,
    order: list[str] | None = None,
) -> Path:
    """Write ``state`` as HF shards ``model-0000k-of-0000N.safetensors`` (+ index when N > 1) and a config."""
    root.mkdir(parents=True, exist_ok=True)
    names = order or list(state)
    per = math.ceil(len(names) / shards)
    if shards == 1:
        save_file(
            {n: state[n].contiguous() for n in names},
            str(root / "model.safetensors"),
            metadata={"format": "pt"},
        )
    else:
        weight_map = {}
        total = 0
        for k in range(shards):
            part = names[k * per : (k + 1) * per]
            fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
            save_file({n: state[n].contiguous() for n in part}, str(root / fname), metadata={"format": "pt"})
            for n in part:
                weight_map[n] = fname
                total += state[n].numel() * state[n].element_size()
        (root / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1)
        )
    (root / "config.json").write_text(
        json.dumps(config or {"model_type": "llama", "architectures": ["LlamaForCausalLM"]})
    )
    return root


def bits(t: torch.Tensor) -> np.ndarray:
    """Raw bits of a tensor as unsigned numpy integers."""
    view = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    arr = t.contiguous().view(view).numpy()
    return arr.view(f"u{t.element_size()}").reshape(-1)
