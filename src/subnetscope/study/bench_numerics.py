"""What the reproducible numerics cost: the demo's DPO recipe trained in both numerics modes, interleaved.

    python -m subnetscope.study.bench_numerics [--steps 3] [--rounds 3] [--threads 1]
    python -m subnetscope.study.bench_numerics --same-bits [--steps 3] [--mode portable]

Each round trains ``--steps`` DPO steps of the demo's recipe (its pairs, sampled once into the cache if they
are not there yet) in a fresh worker of each mode (:mod:`.numerics`), ``portable`` and ``native`` in
alternating order, and prints the CPU seconds and wall seconds per step of each. CPU seconds are the number
to read on a shared machine: wall time there depends on the other processes. The first step of a run is
excluded (it includes the reference log-probabilities of DPO). Nothing is written but temporary directories.

``--same-bits`` instead trains the demo's DPO and SFT recipes for ``--steps`` steps on 1 and on 2 threads in
workers of ``--mode`` and prints whether the saved bf16 weights (sha256) and the losses are the same.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _train_timed(spec: Any, base: str, out: str, pairs: list[Any]) -> list[tuple[float, float]]:
    """(cpu, wall) seconds of every step after the first, measured in the worker."""
    import torch

    from .lm import load_for_training
    from .recipes import _STEPS

    torch.manual_seed(spec.seed)
    model, tok = load_for_training(base)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    step = _STEPS[spec.algo](model, tok, pairs, spec)
    times = []
    for k in range(1, spec.steps + 1):
        c, w = time.process_time(), time.perf_counter()
        loss, _ = step(k)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), spec.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append((time.process_time() - c, time.perf_counter() - w))
    return times[1:]


def main(argv: list[str] | None = None) -> None:
    """Run the interleaved comparison and print one line per round and mode, then the medians."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--same-bits", action="store_true", help="train on 1 and 2 threads and compare")
    ap.add_argument("--mode", default="portable", choices=["portable", "native"])
    args = ap.parse_args(argv)
    if args.same_bits:
        same_bits(args.steps, args.mode)
        return

    from ..demo import demo_config
    from .base import cache_dir, prepare_base
    from .config import parse_config
    from .numerics import NumericsWorker
    from .runs import base_identity, build_data

    cfg = parse_config(demo_config())
    spec = dataclasses.replace(cfg.run("dpo"), steps=args.steps + 1)
    base = prepare_base(cfg.base)
    with NumericsWorker("portable", args.threads) as w:
        data = build_data(cfg.data[spec.data], base, cache_dir(), base_identity(base), False, w)
    per: dict[str, list[float]] = {"portable": [], "native": []}
    for r in range(args.rounds):
        for mode in ("portable", "native") if r % 2 == 0 else ("native", "portable"):
            with NumericsWorker(mode, args.threads) as w, tempfile.TemporaryDirectory() as tmp:
                t = w.call(_train_timed, spec, str(base), str(Path(tmp)), data.items)
            cpu = statistics.mean(c for c, _ in t)
            wall = statistics.mean(x for _, x in t)
            per[mode].append(cpu)
            print(
                f"round {r + 1} {mode:8s} ({w.info.get('cpu_capability')}): "
                f"{cpu:.2f} CPU s/step, {wall:.2f} wall s/step",
                flush=True,
            )
    p, n = statistics.median(per["portable"]), statistics.median(per["native"])
    print(f"median CPU s/step: portable {p:.2f}, native {n:.2f}: portable costs {p / n:.2f}x", flush=True)


def same_bits(steps: int, mode: str) -> None:
    """Train the demo's DPO and SFT recipes on 1 and 2 threads; print whether weights and losses match."""
    from ..demo import demo_config
    from .base import cache_dir, prepare_base
    from .config import parse_config
    from .numerics import NumericsWorker
    from .recipes import train
    from .runs import base_identity, build_data

    cfg = parse_config(demo_config())
    base = prepare_base(cfg.base)
    for name in ("dpo", "sft"):
        spec = dataclasses.replace(cfg.run(name), steps=steps)
        with NumericsWorker("portable", 1) as w:
            data = build_data(cfg.data[spec.data], base, cache_dir(), base_identity(base), False, w)
        got = {}
        for threads in (1, 2):
            with NumericsWorker(mode, threads) as w, tempfile.TemporaryDirectory() as tmp:
                log = w.call(train, spec, str(base), tmp, data.items, progress=False)
                digest = hashlib.sha256((Path(tmp) / "model.safetensors").read_bytes()).hexdigest()[:16]
                got[threads] = (digest, log.losses)
        same = got[1] == got[2]
        print(
            f"{mode} {name}, {steps} steps: 1 thread {got[1][0]}, 2 threads {got[2][0]}: "
            + ("weights and losses identical" if same else "DIFFERENT"),
            flush=True,
        )


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
