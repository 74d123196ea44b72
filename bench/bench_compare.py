"""Benchmark: `subnetscope compare` vs a raw read of the same files, and its peak memory.

Builds (once, cached under bench/_data) a synthetic Llama-shaped bf16 pair of about 1B parameters (2 x 2 GB,
4 and 3 shards, 20 % of every matrix moved by one bf16 step, norms untouched), then, in one run and with the
page cache warm, alternates: (a) `cat` of all shards to /dev/null, (b) the `subnetscope compare` command with
the four default tolerances (a fresh process: interpreter start and imports included), (c) the library call
`compare()` inside one process (default executor, threads) and (d) with ``executor="auto"`` (the command's
default: forked processes for a pass of 1 GiB or more). Prints medians, the ratios to (a), and the peak RSS
of (b); `--double` repeats the RSS measurement on a pair twice as large. `--cold` (root) instead empties
the page cache before every raw read and every command: the case of checkpoints larger than RAM.

    python bench/bench_compare.py [--params 1.03e9] [--repeats 5] [--jobs N] [--double] [--cold]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from synth import cold_runs

DATA = Path(__file__).parent / "_data"


def files_of(*dirs: Path) -> list[str]:
    return [str(f) for d in dirs for f in sorted(d.glob("*.safetensors"))]


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env=env)
    _, status, ru = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}")
    return dt, ru.ru_maxrss


def library_time(base: Path, target: Path, executor: str = "threads") -> float:
    call = f"compare({str(base)!r}, {str(target)!r}, executor={executor!r})"
    code = (
        "import time, subnetscope; from subnetscope.comparison import compare; "
        f"{call}; t=time.perf_counter(); {call}; print(time.perf_counter()-t)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def make_pair_subprocess(params: float) -> tuple[Path, Path]:
    """Build (or reuse) the pair in a child process, so this process stays small: Linux carries a parent's
    peak RSS over fork+exec into the child's ru_maxrss, which would spoil the memory measurement."""
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); from synth import make_pair; from pathlib import Path; b, t = make_pair(Path({str(DATA)!r}), {params!r}); print(b); print(t)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    return Path(out[-2]), Path(out[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=float, default=1.03e9)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--double", action="store_true", help="also measure peak RSS on a pair twice as large")
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument(
        "--cold",
        action="store_true",
        help="empty the page cache before every run (root): the case of models larger than RAM",
    )
    args = ap.parse_args()
    if args.cold:
        cold(args)
        return

    base, target, shards, nbytes, exe, cmd, env = setup(args)
    timed(["cat", *shards])  # warm the page cache
    timed(cmd, env)  # a first run (numba's cache, when the C kernels are not built)
    raw, cli, lib, lib_auto, rss = [], [], [], [], []
    for _ in range(args.repeats):
        raw.append(timed(["cat", *shards])[0])
        t, r = timed(cmd, env)
        cli.append(t)
        rss.append(r)
        lib.append(library_time(base, target))
        lib_auto.append(library_time(base, target, "auto"))
    a, b, c = statistics.median(raw), statistics.median(cli), statistics.median(lib)
    d = statistics.median(lib_auto)
    print(
        f"pair: {base.name} / {target.name}: {len(shards)} shards, {nbytes / 1e9:.2f} GB, cpus={os.cpu_count()}"
    )
    print(
        f"(a) raw read (cat > /dev/null):        median {a:.3f} s  ({nbytes / a / 1e9:.1f} GB/s)  runs {[round(x, 3) for x in raw]}"
    )
    print(f"(b) subnetscope compare (CLI process): median {b:.3f} s  runs {[round(x, 3) for x in cli]}")
    print(f"(c) compare() in-process, threads:     median {c:.3f} s  runs {[round(x, 3) for x in lib]}")
    print(f"(d) compare(executor='auto'):          median {d:.3f} s  runs {[round(x, 3) for x in lib_auto]}")
    print(
        f"ratio (b)/(a) = {b / a:.2f}   (c)/(a) = {c / a:.2f}   (d)/(a) = {d / a:.2f}   (target <= 2, aim 1.2)"
    )
    print(f"peak RSS of (b): {max(rss) / 1024:.0f} MiB (target <= 256 MiB)")
    if args.double:
        b2, t2 = make_pair_subprocess(2 * args.params)
        files2 = files_of(b2, t2)
        timed(["cat", *files2])
        raw2, cli2, rss2 = [], [], []
        for _ in range(max(1, args.repeats // 2)):
            raw2.append(timed(["cat", *files2])[0])
            t, r = timed([exe, "compare", str(b2), str(t2), "--format", "json"], env)
            cli2.append(t)
            rss2.append(r)
        a2, b2t = statistics.median(raw2), statistics.median(cli2)
        print(
            f"2x pair ({2 * args.params:.3g} params): raw read {a2:.3f} s, compare (CLI) {b2t:.3f} s, "
            f"ratio {b2t / a2:.2f}, peak RSS {max(rss2) / 1024:.0f} MiB"
        )


def setup(args: argparse.Namespace) -> tuple[Path, Path, list[str], int, str, list[str], dict[str, str]]:
    """The pair (built once), its shards and size, the command to time and its environment."""
    base, target = make_pair_subprocess(args.params)
    shards = files_of(base, target)
    nbytes = sum(os.path.getsize(f) for f in shards)
    exe = str(Path(sys.executable).parent / "subnetscope")
    cmd = [exe, "compare", str(base), str(target), "--format", "json"]
    if args.jobs:
        cmd += ["-j", str(args.jobs)]
    return base, target, shards, nbytes, exe, cmd, dict(os.environ, SUBNETSCOPE_NO_PROGRESS="1")


def cold(args: argparse.Namespace) -> None:
    """Raw read and the command, each from an empty page cache (alternating, medians)."""
    base, target, shards, nbytes, _exe, cmd, env = setup(args)
    raw, cli = cold_runs(shards, cmd, env, args.repeats)
    a, b = statistics.median(raw), statistics.median(cli)
    print(f"pair: {base.name} / {target.name}: {len(shards)} shards, {nbytes / 1e9:.2f} GB, cold page cache")
    print(
        f"(a) raw read (cat), cold:      median {a:.3f} s  ({nbytes / a / 1e9:.2f} GB/s)  runs {[round(x, 3) for x in raw]}"
    )
    print(f"(b) subnetscope compare, cold: median {b:.3f} s  runs {[round(x, 3) for x in cli]}")
    print(f"ratio (b)/(a) = {b / a:.2f}")


if __name__ == "__main__":
    main()
