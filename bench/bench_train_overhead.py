"""Step-time overhead of the subnetwork mask (and of the UpdateTracker) on a small Llama on CPU.

Three copies of the same randomly initialised Llama train side by side on the same batches, one step each in
turn (the order rotates every round, so background load hits every mode alike): plain, with a
SubnetworkMask attached (random 30 % trainable), and with the mask plus an UpdateTracker. Prints each mode's
median step time and the median of the per-round ratios to the plain step, both in wall time and in the
process's CPU time (which a busy machine disturbs much less), and, measured inside the hooks themselves,
the share of the plain step that the mask's gradient hooks and restore take.

    python bench/bench_train_overhead.py [--hidden 256 --layers 8 --vocab 8192 --batch 8 --seq 128 --rounds 30 --layout auto]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def build(args: argparse.Namespace, seed: int = 0) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=int(args.hidden * 8 / 3) // 64 * 64,
        num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64, num_key_value_heads=args.hidden // 64,
        max_position_embeddings=args.seq, tie_word_embeddings=False,
    )  # fmt: skip
    return LlamaForCausalLM(cfg).float()


def adamw_zero_effect(n: int, density: float, reps: int = 7) -> tuple[float, float]:
    """Median CPU ms of one AdamW step on ``n`` elements: dense gradients, then a share ``1 - density`` zero."""
    out = []
    g = torch.Generator().manual_seed(2)
    for zero in (False, True):
        p = torch.nn.Parameter(torch.randn(n, generator=g) * 0.02)
        opt = torch.optim.AdamW([p], lr=1e-4, weight_decay=0.01)
        grad = torch.randn(n, generator=g) * 1e-3
        if zero:
            grad = torch.where(torch.rand(n, generator=g) < density, grad, 0.0)
        ts = []
        for _ in range(reps):
            p.grad = grad.clone()
            c0 = time.process_time()
            opt.step()
            ts.append(time.process_time() - c0)
        out.append(statistics.median(ts) * 1e3)
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--density", type=float, default=0.3)
    ap.add_argument(
        "--layout", choices=["auto", "bitwise", "compact"], default="auto", help="mask storage layout"
    )
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: CPU time is not inflated by spinning)"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from subnetscope.train import SubnetworkMask, UpdateTracker, hooks

    hook_time = [0.0]  # seconds spent inside the mask's hooks (the "mask" mode only)
    fill_name = "_fill_frozen" if args.layout == "compact" else "_and_grad_bits"  # the layout's gradient hook
    plain_fill = getattr(hooks, fill_name)

    def timed_fill(frozen: torch.Tensor) -> object:
        inner = plain_fill(frozen)

        def hook(param: torch.Tensor) -> None:
            t0 = time.process_time()
            inner(param)
            hook_time[0] += time.process_time() - t0

        return hook

    modes = ["plain", "mask", "mask+tracker"]
    models = {m: build(args) for m in modes}
    opts = {m: torch.optim.AdamW(models[m].parameters(), lr=1e-4, weight_decay=0.01) for m in modes}
    g = torch.Generator().manual_seed(1)
    trainable = {
        n: torch.rand(p.shape, generator=g) < args.density for n, p in models["plain"].named_parameters()
    }
    handles = {}
    setattr(hooks, fill_name, timed_fill)
    handles["mask"] = SubnetworkMask(models["mask"], trainable).attach(
        models["mask"], opts["mask"], layout=args.layout
    )
    setattr(hooks, fill_name, plain_fill)
    handles["mask+tracker"] = SubnetworkMask(models["mask+tracker"], trainable).attach(
        models["mask+tracker"], opts["mask+tracker"], layout=args.layout
    )
    plain_restore = handles["mask"].restore

    def timed_restore() -> None:
        t0 = time.process_time()
        plain_restore()
        hook_time[0] += time.process_time() - t0

    handles["mask"].restore = timed_restore  # type: ignore[method-assign]
    tracker = UpdateTracker(every=10).attach(models["mask+tracker"], opts["mask+tracker"])
    nparams = sum(p.numel() for p in models["plain"].parameters())
    print(
        f"Llama {nparams / 1e6:.1f}M params (hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}), "
        f"batch {args.batch}x{args.seq} tokens, AdamW wd=0.01, clip 1.0, fp32, {torch.get_num_threads()} threads; "
        f"mask density {args.density}, layout {args.layout}; mask memory {handles['mask'].memory_bytes / 2**20:.1f} MiB "
        f"(model {nparams * 4 / 2**20:.1f} MiB)"
    )

    def step(m: str, ids: torch.Tensor) -> tuple[float, float, float]:
        model, opt = models[m], opts[m]
        h0 = hook_time[0]
        t0, c0 = time.perf_counter(), time.process_time()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0, time.process_time() - c0, hook_time[0] - h0

    wall: dict[str, list[float]] = {m: [] for m in modes}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    in_hooks: list[float] = []
    for r in range(args.warmup + args.rounds):
        ids = torch.randint(0, args.vocab, (args.batch, args.seq), generator=g)
        order = modes[r % 3 :] + modes[: r % 3]
        got = {m: step(m, ids) for m in order}
        if r < args.warmup:
            continue
        for m in modes:
            wall[m].append(got[m][0])
            cpu[m].append(got[m][1])
        in_hooks.append(got["mask"][2] / got["plain"][1])
    med = statistics.median
    for m in modes:
        print(f"{m:13s} median step: wall {med(wall[m]) * 1e3:8.1f} ms, cpu {med(cpu[m]) * 1e3:8.1f} ms")
    for m in modes[1:]:
        for label, t in (("wall", wall), ("cpu", cpu)):
            rs = sorted(a / b for a, b in zip(t[m], t["plain"]))
            best = min(t[m]) / min(t["plain"])
            print(f"{m:13s} / plain ({label:4s}): median ratio {med(rs):.3f} ({100 * (med(rs) - 1):+.1f}%), "
                  f"range {rs[0]:.3f}..{rs[-1]:.3f} over {len(rs)} rounds; ratio of fastest steps {best:.3f}")  # fmt: skip
    print(f"CPU time inside the mask's hooks (gradient masking + restore): median {100 * med(in_hooks):.1f}% "
          "of the plain step's CPU time")  # fmt: skip
    # the optimizer's own share of the overhead: AdamW is slower on gradients that are exactly zero
    dense, sparse = adamw_zero_effect(nparams, args.density)
    print(f"AdamW step alone on {nparams / 1e6:.1f}M elements: {dense:.1f} ms with dense gradients, "
          f"{sparse:.1f} ms with {100 * (1 - args.density):.0f}% of them zero (as inside the mask)")  # fmt: skip
    assert handles["mask"].verify() == 0 and handles["mask+tracker"].verify() == 0
    print(f"frozen entries verified byte-identical after {args.warmup + args.rounds} steps; "
          f"tracker ever-changed share {sum(int(v.sum()) for v in tracker.sets()['ever_changed'].values()) / tracker.numel:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
