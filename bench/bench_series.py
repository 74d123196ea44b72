"""Benchmark: `subnetscope series` vs a raw read of the same checkpoints, and its peak memory.

Builds (once, cached under bench/_data) a synthetic training run of a Llama-shaped bf16 model (about 140M
parameters by default): INIT and K = 4 checkpoints, each in 2 shards. Every checkpoint moves a fresh 8 % of
every matrix by one bf16 step away from the previous one and puts 3 % back exactly to their initial value, so
the series has consecutive changes, a growing union and cancellations. Then, in one run and with the page
cache warm, it alternates (a) `cat` of all K + 1 checkpoints to /dev/null, (b) the `subnetscope series`
command (a fresh process: interpreter start and imports included), (c) the library call `series()` inside
one process (threads) and (d) with ``executor="auto"`` (the command's default), and prints the medians, the
ratios to (a) (target <= 1.5) and the peak RSS of (b) (from wait4's rusage). `--cold` (root) instead
empties the page cache before every raw read and every command.

    python bench/bench_series.py [--params 1.4e8] [--steps 4] [--repeats 5] [--jobs N] [--cold]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from synth import _bf16_bits, cold_runs, llama_shapes, write_st

DATA = Path(__file__).parent / "_data"


def shapes_for(params: float) -> dict[str, tuple[int, ...]]:
    """A small-Llama shape family (hidden 768, MLP 2048, vocab 32000) with about ``params`` parameters."""
    per_layer = sum(
        math.prod(v) for k, v in llama_shapes(768, 2048, 1, 32000, 256).items() if ".layers.0." in k
    )
    layers = max(1, round((params - 2 * 32000 * 768) / per_layer))
    return llama_shapes(768, 2048, layers, 32000, 256)


def write_ckpt(
    d: Path, tensors: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]], shards: int = 2
) -> None:
    d.mkdir(parents=True, exist_ok=True)
    names = list(tensors)
    per = math.ceil(len(names) / shards)
    wm = {}
    for k in range(shards):
        part = names[k * per : (k + 1) * per]
        fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        write_st(d / fname, {n: tensors[n] for n in part}, shapes)
        wm.update(dict.fromkeys(part, fname))
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    (d / "config.json").write_text(json.dumps({"model_type": "llama"}))


def make_series(
    root: Path, params: float, steps: int, seed: int = 0, shapes: dict[str, tuple[int, ...]] | None = None
) -> list[Path]:
    """INIT and ``steps`` checkpoints (reused when already written); ``shapes`` overrides ``params``."""
    tag = root / (
        f"series_p{params:.3g}_k{steps}_s{seed}" if shapes is None else f"series_toy_k{steps}_s{seed}"
    )
    dirs = [tag / "init"] + [tag / f"checkpoint-{100 * k}" for k in range(1, steps + 1)]
    if all((d / "model.safetensors.index.json").exists() for d in dirs):
        return dirs
    shapes = shapes or shapes_for(params)
    rng = np.random.default_rng(seed)
    init = {n: _bf16_bits(rng, math.prod(s), "norm" in n) for n, s in shapes.items()}
    write_ckpt(dirs[0], init, shapes)
    cur = {n: v.copy() for n, v in init.items()}
    for d in dirs[1:]:
        for n, v in cur.items():
            if "norm" in n:
                continue
            r = rng.random(v.size, dtype=np.float32)
            move = (r < 0.08) & ((v & 0x7FFF) != 0)  # never step a zero into a NaN code
            v[move] += np.where(rng.random(int(move.sum()), dtype=np.float32) < 0.5, 1, -1).astype(np.uint16)
            back = (r >= 0.08) & (r < 0.11)
            v[back] = init[n][back]
        write_ckpt(d, cur, shapes)
    return dirs


def files_of(dirs: list[Path]) -> list[str]:
    return [str(f) for d in dirs for f in sorted(d.glob("*.safetensors"))]


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int, float]:
    """Wall seconds, peak RSS (KiB) and CPU seconds (user + system) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env=env)
    _, status, ru = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}")
    return dt, ru.ru_maxrss, ru.ru_utime + ru.ru_stime


def library_time(dirs: list[Path], jobs: int | None, executor: str = "threads") -> float:
    """Seconds of a second ``series()`` call in one process (imports and first-call costs excluded)."""
    args = f"{str(dirs[0])!r}, {[str(d) for d in dirs[1:]]!r}, jobs={jobs!r}, executor={executor!r}"
    code = (
        "import time; from subnetscope.series import series; "
        f"series({args}); t = time.perf_counter(); series({args}); print(time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=float, default=1.4e8)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument(
        "--cold",
        action="store_true",
        help="empty the page cache before every run (root): models larger than RAM",
    )
    args = ap.parse_args()

    dirs = make_series(DATA, args.params, args.steps)
    files = files_of(dirs)
    nbytes = sum(os.path.getsize(f) for f in files)
    exe = str(Path(sys.executable).parent / "subnetscope")
    cmd = [exe, "series", *map(str, dirs), "--format", "json"]
    if args.jobs:
        cmd += ["-j", str(args.jobs)]
    env = dict(os.environ, SUBNETSCOPE_NO_PROGRESS="1")
    if args.cold:
        raw_c, cli_c = cold_runs(files, cmd, env, args.repeats)
        a, b = statistics.median(raw_c), statistics.median(cli_c)
        print(
            f"series: INIT + {args.steps} checkpoints, {len(files)} files, {nbytes / 1e9:.2f} GB, cold page cache"
        )
        print(
            f"(a) raw read (cat), cold:     median {a:.3f} s ({nbytes / a / 1e9:.2f} GB/s)  runs {[round(x, 3) for x in raw_c]}"
        )
        print(f"(b) subnetscope series, cold: median {b:.3f} s  runs {[round(x, 3) for x in cli_c]}")
        print(f"ratio (b)/(a) = {b / a:.2f}   (target <= 1.5)")
        return
    timed(["cat", *files])  # warm the page cache
    timed(cmd, env)  # a first run (numba's cache, when the C kernels are not built)
    tiny = [
        exe,
        "series",
        *map(str, make_series(DATA, 0, 1, shapes=llama_shapes(64, 128, 1, 256, 64))),
        "--format",
        "json",
    ]
    timed(tiny, env)
    raw, cli, lib, lib_auto, rss, cpu_a, cpu_b, start = [], [], [], [], [], [], [], []
    load0 = os.getloadavg()[0]
    for _ in range(args.repeats):
        t, _, c = timed(["cat", *files])
        raw.append(t)
        cpu_a.append(c)
        t, r, c = timed(cmd, env)
        cli.append(t)
        rss.append(r)
        cpu_b.append(c)
        lib.append(library_time(dirs, args.jobs))
        lib_auto.append(library_time(dirs, args.jobs, "auto"))
        start.append(timed(tiny, env)[0])
    load1 = os.getloadavg()[0]
    a, b, c = statistics.median(raw), statistics.median(cli), statistics.median(lib)
    numel = sum(math.prod(s) for s in shapes_for(args.params).values())
    print(
        f"series: INIT + {args.steps} checkpoints of {numel / 1e6:.0f}M bf16 parameters, {len(files)} files, "
        f"{nbytes / 1e9:.2f} GB, cpus={os.cpu_count()}"
    )
    print(f"(a) raw read of all checkpoints (cat > /dev/null): median {a:.3f} s ({nbytes / a / 1e9:.1f} GB/s)  "
          f"runs {[round(x, 3) for x in raw]}")  # fmt: skip
    print(
        f"(b) subnetscope series (CLI process):              median {b:.3f} s  runs {[round(x, 3) for x in cli]}"
    )
    print(
        f"(c) series() in-process, threads:                 median {c:.3f} s  runs {[round(x, 3) for x in lib]}"
    )
    d = statistics.median(lib_auto)
    print(
        f"(d) series(executor='auto') in-process:           median {d:.3f} s  runs {[round(x, 3) for x in lib_auto]}"
    )
    print(f"(e) startup (series on a 1-layer toy model):     median {statistics.median(start):.3f} s")
    print(f"ratio (b)/(a) = {b / a:.2f}   (c)/(a) = {c / a:.2f}   (d)/(a) = {d / a:.2f}   (target <= 1.5)")
    ca, cb = statistics.median(cpu_a), statistics.median(cpu_b)
    print(f"CPU seconds (user + sys): (a) {ca:.2f}  (b) {cb:.2f}; load average {load0:.1f} -> {load1:.1f}")
    print(f"peak RSS of (b): {max(rss) / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
