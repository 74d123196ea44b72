"""Helpers for the scale tests: FP8 block-scaled checkpoints with known changes, legacy .bin writers, and
consumers that crash, interrupt or record a run."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

E4M3 = torch.float8_e4m3fn


def comparable(obj: dict[str, Any]) -> dict[str, Any]:
    """A report's JSON without fields that may differ between equal runs (timings, the mask's path)."""
    out = json.loads(json.dumps(obj))
    for k in ("timing", "elapsed_s", "seconds"):
        out.pop(k, None)
    if "mask" in out:
        out["mask"].pop("path", None)
    return out


def without_inputs(obj: dict[str, Any]) -> dict[str, Any]:
    """A report's JSON without the base/target blocks (paths and formats differ between layouts)."""
    out = comparable(obj)
    out.pop("base")
    out.pop("target")
    return out


# -- FP8 ---------------------------------------------------------------------------------------------------


def fp8_codes(t: torch.Tensor) -> torch.Tensor:
    """The uint8 codes of a float8 tensor."""
    return t.view(torch.uint8)


def random_fp8(shape: tuple[int, int], g: torch.Generator) -> torch.Tensor:
    """Random e4m3 weights (no NaN codes)."""
    return (torch.randn(shape, generator=g) * 2).clamp(-400, 400).to(E4M3)


def expand_scale(scale: torch.Tensor, shape: tuple[int, int], block: tuple[int, int]) -> torch.Tensor:
    """A per-block scale grid expanded to one value per element (brute force)."""
    s = scale.repeat_interleave(block[0], 0).repeat_interleave(block[1], 1)
    return s[: shape[0], : shape[1]]


def dequant_exact(w: torch.Tensor, scale: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """code × scale in float64 (exact)."""
    return w.to(torch.float64) * expand_scale(scale, tuple(w.shape), block).to(torch.float64)


def dequant_bf16(w: torch.Tensor, scale: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """DeepSeek's fp8_cast_bf16: float32 product rounded to bf16."""
    return (w.to(torch.float32) * expand_scale(scale, tuple(w.shape), block).to(torch.float32)).to(
        torch.bfloat16
    )


BLOCK = (8, 8)
FP8_WEIGHTS = {  # name -> shape; grids of 8x8 blocks with ragged edges
    "model.layers.0.mlp.experts.0.gate_proj.weight": (20, 12),
    "model.layers.0.mlp.experts.1.gate_proj.weight": (20, 12),
    "model.layers.0.mlp.experts.0.up_proj.weight": (16, 24),
    "model.layers.0.self_attn.o_proj.weight": (24, 16),
    "model.layers.1.mlp.experts.0.down_proj.weight": (12, 20),
}


def fp8_pair(
    seed: int = 0, scale_mag: float = 1e-6
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
    """Base and target DeepSeek-style states with FP8 weights, block scales and known changes.

    - experts.0.gate_proj: 30 codes changed by one code step (scales unchanged);
    - experts.1.gate_proj: block (1, 0) of its scale doubled (codes unchanged);
    - experts.0.up_proj: block (0, 1) re-encoded: every code's exponent +1 and the block's scale halved, so
      every code there changes and no value does;
    - o_proj and down_proj: unchanged; one norm element changed (bf16).
    Returns (base, target, known) with the known numbers of changed codes and scale blocks per tensor.
    """
    g = torch.Generator().manual_seed(seed)
    base: dict[str, torch.Tensor] = {}
    for name, shape in FP8_WEIGHTS.items():
        base[name] = random_fp8(shape, g)
        grid = (math.ceil(shape[0] / BLOCK[0]), math.ceil(shape[1] / BLOCK[1]))
        base[name + "_scale_inv"] = (torch.rand(grid, generator=g) + 0.5) * scale_mag
    base["model.embed_tokens.weight"] = (torch.randn(10, 16, generator=g) * 0.02).to(torch.bfloat16)
    base["model.layers.0.input_layernorm.weight"] = torch.ones(16, dtype=torch.bfloat16)
    target = {k: v.clone() for k, v in base.items()}
    known: dict[str, Any] = {
        "codes": dict.fromkeys(FP8_WEIGHTS, 0),
        "scale_blocks": dict.fromkeys(FP8_WEIGHTS, 0),
    }

    a = "model.layers.0.mlp.experts.0.gate_proj.weight"
    codes = fp8_codes(target[a]).view(-1)
    sel = torch.randperm(codes.numel(), generator=g)[:30]
    c = codes[sel].to(torch.int32)
    # one code step towards zero magnitude-wise, never onto a NaN code or across zero
    step = torch.where((c & 0x7F) > 1, -1, 1)
    codes[sel] = (c + step).to(torch.uint8)
    known["codes"][a] = 30

    b = "model.layers.0.mlp.experts.1.gate_proj.weight"
    target[b + "_scale_inv"][1, 0] *= 2
    known["scale_blocks"][b] = 1

    u = "model.layers.0.mlp.experts.0.up_proj.weight"
    blk = fp8_codes(target[u])[0:8, 8:16]
    # normal codes with exponent field 1..13 so that +1 stays a normal, non-NaN code and doubles the value
    exp_field = torch.randint(1, 14, blk.shape, generator=g)
    mant = torch.randint(0, 8, blk.shape, generator=g)
    sign = torch.randint(0, 2, blk.shape, generator=g)
    new_base = (sign << 7 | exp_field << 3 | mant).to(torch.uint8)
    fp8_codes(base[u])[0:8, 8:16] = new_base
    fp8_codes(target[u])[0:8, 8:16] = new_base + 8
    target[u + "_scale_inv"][0, 1] = base[u + "_scale_inv"][0, 1] / 2
    known["codes"][u] = 64
    known["scale_blocks"][u] = 1

    target["model.layers.0.input_layernorm.weight"][3] = 1.5
    return base, target, known


def save_fp8(
    state: dict[str, torch.Tensor], root: Path, block: list[int] | None = BLOCK, shards: int = 1
) -> Path:
    """Write a DeepSeek-style checkpoint (config with quantization_config when ``block`` is given)."""
    root.mkdir(parents=True, exist_ok=True)
    names = list(state)
    per = math.ceil(len(names) / shards)
    wm = {}
    for k in range(shards):
        part = names[k * per : (k + 1) * per]
        fname = "model.safetensors" if shards == 1 else f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: state[n].contiguous() for n in part}, str(root / fname), metadata={"format": "pt"})
        wm.update(dict.fromkeys(part, fname))
    if shards > 1:
        (root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    cfg: dict[str, Any] = {"model_type": "deepseek_v3"}
    if block is not None:
        cfg["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": list(block)}
    (root / "config.json").write_text(json.dumps(cfg))
    return root


# -- legacy .bin ---------------------------------------------------------------------------------------------


def save_bin(state: dict[str, torch.Tensor], root: Path, shards: int = 1, config: dict | None = None) -> Path:
    """Write ``state`` with torch.save as ``pytorch_model.bin`` or N shards + ``pytorch_model.bin.index.json``."""
    root.mkdir(parents=True, exist_ok=True)
    names = list(state)
    if shards == 1:
        torch.save(dict(state), root / "pytorch_model.bin")
    else:
        per = math.ceil(len(names) / shards)
        wm = {}
        for k in range(shards):
            part = names[k * per : (k + 1) * per]
            fname = f"pytorch_model-{k + 1:05d}-of-{shards:05d}.bin"
            torch.save({n: state[n] for n in part}, root / fname)
            wm.update(dict.fromkeys(part, fname))
        (root / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    (root / "config.json").write_text(json.dumps(config or {"model_type": "llama"}))
    return root


class NotAWeight:
    """A custom class: a pickle holding it is not weights-only."""

    def __init__(self) -> None:
        self.x = 1


# -- consumers for executor / resume tests --------------------------------------------------------------------


class CrashOnce:
    """A consumer whose first chunk of ``victim`` kills its worker process (``os._exit``) unless ``marker``
    exists; it creates the marker first, so the retry succeeds. Adds nothing to the report."""

    key = "crash_probe"

    def __init__(self, marker: str, victim: str, always: bool = False) -> None:
        self.marker = marker
        self.victim = victim
        self.always = always

    def chunk(self, pair: Any, start: int, base_bits: Any, target_bits: Any) -> None:
        if pair.name == self.victim and start == 0 and (self.always or not os.path.exists(self.marker)):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(17)

    def merge(self, pair: Any, state: Any, partial: Any) -> None:
        return None

    def finish(self, pair: Any, state: Any) -> None:
        return None


class Probe:
    """Records which tensors the pass read (chunk calls happen on worker threads)."""

    key = "probe"

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def chunk(self, pair: Any, start: int, base_bits: Any, target_bits: Any) -> None:
        self.seen.add(pair.name)

    def merge(self, pair: Any, state: Any, partial: Any) -> None:
        return None

    def finish(self, pair: Any, state: Any) -> None:
        return None
