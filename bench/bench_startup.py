"""Benchmark: start-up of every pass command, i.e. the whole command on a toy model (target < 0.2 s).

Writes (into a temporary directory) a 1-layer toy Llama base, two finetunes and their masks, then runs
each command in a fresh process ``--repeats`` times and prints the fastest run: interpreter start, imports
and the (negligible) pass. With ``--against SRC`` (another tree's ``src/``), each run is alternated with the
same command on that tree, so the two columns come from one session.

    python bench/bench_startup.py [--repeats 7] [--against /path/to/old/src]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from synth import _bf16_bits, llama_shapes, write_st

SRC = str(Path(__file__).resolve().parent.parent / "src")


def toy(root: Path) -> None:
    """base, t1, t2 (a tenth of every matrix moved by one bf16 step, other seeds) and masks m1, m2."""
    shapes = llama_shapes(hidden=64, inter=128, layers=1, vocab=256, kv=64)
    rng = np.random.default_rng(0)
    base = {n: _bf16_bits(rng, int(np.prod(s)), "norm" in n) for n, s in shapes.items()}
    for name, seed in (("base", None), ("t1", 1), ("t2", 2)):
        d = root / name
        d.mkdir()
        tensors = base
        if seed is not None:
            r = np.random.default_rng(seed)
            tensors = {
                n: np.where(r.random(a.shape) < 0.1, a + 1, a).astype(np.uint16) for n, a in base.items()
            }
        write_st(d / "model.safetensors", tensors, shapes)
    for m, t in (("m1", "t1"), ("m2", "t2")):
        subprocess.run([sys.executable, "-m", "subnetscope", "mask", "base", t, "-o", m, "--format", "json"],
                       cwd=root, env=dict(os.environ, PYTHONPATH=SRC), check=True, capture_output=True)  # fmt: skip


COMMANDS = {
    "compare": ["compare", "base", "t1", "--format", "json"],
    "mask": ["mask", "base", "t1", "-o", "out.mask", "--format", "json"],
    "series": ["series", "base", "t1", "t2", "--format", "json"],
    "overlap": ["overlap", "m1", "m2", "--format", "json"],
    "delta export": ["delta", "export", "base", "t1", "-o", "out.delta", "--overwrite", "--format", "json"],
    "--help": ["--help"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--against", default=None, help="another tree's src/ to time in the same session")
    args = ap.parse_args()
    trees = {"this tree": SRC, **({"against": args.against} if args.against else {})}
    best: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        toy(root)
        for _ in range(args.repeats):
            for name, argv in COMMANDS.items():
                for label, src in trees.items():
                    t0 = time.perf_counter()
                    subprocess.run([sys.executable, "-m", "subnetscope", *argv], cwd=root, check=False,
                                   env=dict(os.environ, PYTHONPATH=src), capture_output=True)  # fmt: skip
                    dt = time.perf_counter() - t0
                    best[name, label] = min(best.get((name, label), dt), dt)
    for name in COMMANDS:
        cols = "  ".join(f"{label} {best[name, label]:.3f} s" for label in trees)
        print(f"{name:14s} {cols}   (fastest of {args.repeats}; target < 0.2 s)")


if __name__ == "__main__":
    main()
