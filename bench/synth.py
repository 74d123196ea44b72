"""Synthetic Llama-shaped bf16 checkpoint pairs for the benchmarks (written straight from numpy bits)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
from pathlib import Path

import numpy as np


def llama_shapes(
    hidden: int = 2048, inter: int = 5632, layers: int = 22, vocab: int = 32000, kv: int = 256
) -> dict[str, tuple[int, ...]]:
    """TinyLlama-1.1B-like shapes (the defaults give 1.03B parameters with an untied lm_head)."""
    s: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        s[p + "self_attn.q_proj.weight"] = (hidden, hidden)
        s[p + "self_attn.k_proj.weight"] = (kv, hidden)
        s[p + "self_attn.v_proj.weight"] = (kv, hidden)
        s[p + "self_attn.o_proj.weight"] = (hidden, hidden)
        s[p + "mlp.gate_proj.weight"] = (inter, hidden)
        s[p + "mlp.up_proj.weight"] = (inter, hidden)
        s[p + "mlp.down_proj.weight"] = (hidden, inter)
        s[p + "input_layernorm.weight"] = (hidden,)
        s[p + "post_attention_layernorm.weight"] = (hidden,)
    s["model.norm.weight"] = (hidden,)
    s["lm_head.weight"] = (vocab, hidden)
    return s


def scaled_shapes(params: float) -> dict[str, tuple[int, ...]]:
    """Shapes with about ``params`` parameters (layers scaled from the 1.03B default)."""
    base = llama_shapes()
    per_layer = sum(math.prod(v) for k, v in base.items() if ".layers.0." in k)
    other = 2 * 32000 * 2048 + 2048
    layers = max(1, round((params - other) / per_layer))
    return llama_shapes(layers=layers)


def _bf16_bits(rng: np.random.Generator, n: int, norm: bool) -> np.ndarray:
    if norm:
        return np.full(n, 0x3F80, dtype=np.uint16)  # 1.0
    w = (rng.standard_normal(n, dtype=np.float32) * np.float32(0.02)).view(np.uint32)
    return ((w + 0x8000) >> 16).astype(np.uint16)  # round to nearest (ties away; fine for data)


def write_st(path: Path, tensors: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]]) -> int:
    """Write bf16 bit arrays as a safetensors file (header built by hand); returns bytes written."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    off = 0
    for name, arr in tensors.items():
        header[name] = {"dtype": "BF16", "shape": list(shapes[name]), "data_offsets": [off, off + arr.nbytes]}
        off += arr.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for arr in tensors.values():
            f.write(arr.tobytes())
    return 8 + len(raw) + off


def make_pair(
    root: Path, params: float = 1.03e9, frac: float = 0.2, shards: tuple[int, int] = (4, 3), seed: int = 0
) -> tuple[Path, Path]:
    """Write base and target (``frac`` of every matrix moved by one bf16 step, norms untouched), sharded
    differently; reuses an existing pair with the same parameters."""
    tag = f"p{params:.3g}_f{frac}_s{seed}"
    bdir, tdir = root / f"{tag}_base", root / f"{tag}_target"
    if (bdir / "model.safetensors.index.json").exists() and (tdir / "model.safetensors.index.json").exists():
        return bdir, tdir
    shapes = scaled_shapes(params)
    names = list(shapes)
    rng = np.random.default_rng(seed)
    maps: list[dict[str, str]] = [{}, {}]
    bufs: list[dict[str, np.ndarray]] = [{}, {}]
    sizes = [0, 0]
    total = sum(math.prod(s) for s in shapes.values()) * 2
    shard_no = [1, 1]
    for d in (bdir, tdir):
        d.mkdir(parents=True, exist_ok=True)

    def flush(side: int, last: bool = False) -> None:
        d = (bdir, tdir)[side]
        if not bufs[side]:
            return
        fname = f"model-{shard_no[side]:05d}-of-{shards[side]:05d}.safetensors"
        write_st(d / fname, bufs[side], shapes)
        for n in bufs[side]:
            maps[side][n] = fname
        bufs[side] = {}
        sizes[side] = 0
        shard_no[side] += 1

    for name in names:
        n = math.prod(shapes[name])
        a = _bf16_bits(rng, n, "norm" in name)
        b = a.copy()
        if "norm" not in name:
            sel = rng.random(n, dtype=np.float32) < frac
            b[sel] += np.uint16(1)
        for side, arr in ((0, a), (1, b)):
            bufs[side][name] = arr
            sizes[side] += arr.nbytes
            if sizes[side] >= total / shards[side] and shard_no[side] < shards[side]:
                flush(side)
    for side in (0, 1):
        flush(side, last=True)
    for side, d in ((0, bdir), (1, tdir)):
        # rename shards to the real count
        files = sorted(d.glob("model-*.safetensors"))
        count = len(files)
        rename = {}
        for i, f in enumerate(files, 1):
            new = f"model-{i:05d}-of-{count:05d}.safetensors"
            f.rename(d / new)
            rename[f.name] = new
        wm = {k: rename[v] for k, v in maps[side].items()}
        (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
        (d / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return bdir, tdir


def cold_runs(
    files: list[str], cmd: list[str], env: dict[str, str], repeats: int
) -> tuple[list[float], list[float]]:
    """Wall seconds of ``cat FILES`` and of ``cmd``, alternating, each run from an empty page cache (root)."""
    raw: list[float] = []
    cli: list[float] = []
    for _ in range(repeats):
        for runs, c, e in ((raw, ["cat", *files], None), (cli, cmd, env)):
            drop_caches()
            t0 = time.perf_counter()
            subprocess.run(c, stdout=subprocess.DEVNULL, env=e, check=True)
            runs.append(time.perf_counter() - t0)
    return raw, cli


def drop_caches() -> None:
    """Empty the page cache (root only), so that the next run reads from the disk."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    except OSError as e:
        raise SystemExit(f"--cold needs root to drop the page cache ({e})") from None
