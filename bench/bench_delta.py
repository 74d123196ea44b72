"""Benchmark: sparse delta size and speed on a synthetic Llama-shaped bf16 pair, ratios measured in one run.

Builds (once, cached under bench/_data/delta, git-ignored) base/target pairs of about ``--params`` parameters
with bench/synth.py: for each density, that fraction of every matrix's elements moved by one bf16 step at
uniformly random positions (the worst case for position coding), norms untouched, the two sides sharded
differently. Then, with the page cache warm and repeats alternating between the measurements:

- size: the delta directory against TARGET's shards, and against plain zstd (zstandard, default level 3,
  one frame per shard) of TARGET's shards;
- export: ``export_delta`` (library call, default threads) against ``cat`` of BASE + TARGET to /dev/null
  (the bytes it must read), and the floor its per-tensor sha256 sets: hashlib's sha256 of TARGET's files on
  one thread;
- apply: ``apply_delta`` against ``cat`` of BASE + the delta, and (since apply writes TARGET's bytes) against
  ``cp`` of TARGET's shards to a new directory; and ``apply_delta(verify=True)``;
- peak RSS of ``subnetscope delta export`` / ``apply`` in a fresh process (once, after the timings).

    python bench/bench_delta.py [--params 1.03e9] [--densities 0.2,0.02] [--repeats 3] [--clean]
"""

from __future__ import annotations

import argparse
import hashlib
import mmap
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import zstandard

sys.path.insert(0, str(Path(__file__).parent))
from subnetscope.delta import apply_delta, export_delta
from synth import make_pair

DATA = Path(__file__).parent / "_data" / "delta"


def shards(d: Path) -> list[Path]:
    return sorted(d.glob("*.safetensors"))


def dir_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.iterdir() if p.is_file())


def cat(files: list[Path]) -> tuple[float, float]:
    """Wall and CPU seconds of ``cat FILES > /dev/null``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(["cat", *map(str, files)], stdout=subprocess.DEVNULL)
    _, status, ru = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("cat failed")
    return time.perf_counter() - t0, ru.ru_utime + ru.ru_stime


def timed(fn: Callable[..., object], *args: object, **kw: object) -> tuple[float, float]:
    """Wall and CPU seconds (this process, all threads) of ``fn(*args, **kw)``."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn(*args, **kw)
    return time.perf_counter() - t0, time.process_time() - c0


def sha256_target(files: list[Path]) -> tuple[float, float]:
    """Wall and CPU seconds of hashlib's sha256 over ``files`` on one thread (from the page cache): the part
    of an export that the per-tensor sha256 of the manifest makes unavoidable."""
    t0, c0 = time.perf_counter(), time.process_time()
    for f in files:
        with open(f, "rb") as src, mmap.mmap(src.fileno(), 0, access=mmap.ACCESS_READ) as m:
            hashlib.sha256(m).digest()
    return time.perf_counter() - t0, time.process_time() - c0


def zstd_size(files: list[Path]) -> tuple[int, float]:
    """Bytes of plain zstd (default level, one frame per shard) of ``files``, and the seconds it took."""
    total = 0
    t0 = time.perf_counter()
    for f in files:
        c = zstandard.ZstdCompressor()
        with open(f, "rb") as src:
            reader = c.stream_reader(src, size=f.stat().st_size)
            while chunk := reader.read(1 << 24):
                total += len(chunk)
    return total, time.perf_counter() - t0


def peak_rss_mib(cmd: list[str]) -> float:
    """Peak RSS of a fresh process, from its own ``VmHWM`` (the rusage of a child also counts the pages of
    the parent it was forked from, which here is this large benchmark process)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env=dict(os.environ, SUBNETSCOPE_NO_PROGRESS="1"))
    peak = 0
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.02)
    if proc.returncode != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}")
    return peak / 1024


def cp(files: list[Path], dest: Path) -> tuple[float, float]:
    """Wall and CPU seconds of ``cp FILES DEST/`` (a plain copy: the same bytes read and written)."""
    dest.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(["cp", *map(str, files), str(dest)])
    _, status, ru = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("cp failed")
    dt = time.perf_counter() - t0
    shutil.rmtree(dest)
    return dt, ru.ru_utime + ru.ru_stime


def gib(n: float) -> str:
    return f"{n / (1 << 30):.3f} GiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=float, default=1.03e9)
    ap.add_argument("--densities", default="0.2,0.02")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--clean", action="store_true", help="remove the generated pairs afterwards")
    args = ap.parse_args()
    densities = [float(x) for x in args.densities.split(",")]
    exe = str(Path(sys.executable).parent / "subnetscope")

    t0 = time.perf_counter()
    pairs = {p: make_pair(DATA, args.params, frac=p) for p in densities}
    print(f"# data ready in {time.perf_counter() - t0:.0f} s under {DATA}", flush=True)
    work = DATA / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    deltas = {p: work / f"delta_{p}" for p in densities}
    out = work / "out"

    for p, (b, t) in pairs.items():  # warm-up: page cache, first export (also the delta kept for apply)
        cat(shards(b) + shards(t))
        export_delta(b, t, deltas[p], jobs=args.jobs)
        apply_delta(b, deltas[p], out, jobs=args.jobs)
        shutil.rmtree(out)

    wall: dict[tuple[float, str], list[float]] = {}
    cpu: dict[tuple[float, str], list[float]] = {}

    def record(p: float, key: str, t: tuple[float, float]) -> None:
        wall.setdefault((p, key), []).append(t[0])
        cpu.setdefault((p, key), []).append(t[1])

    for _ in range(args.repeats):
        for p, (b, t) in pairs.items():
            record(p, "raw_export", cat(shards(b) + shards(t)))
            record(p, "sha_target", sha256_target(shards(t)))
            record(p, "export", timed(export_delta, b, t, deltas[p], jobs=args.jobs, overwrite=True))
            record(p, "raw_apply", cat(shards(b) + sorted(deltas[p].iterdir())))
            record(p, "cp_target", cp(shards(t), work / "cp"))
            for key, verify in (("apply", False), ("apply_verify", True)):
                record(p, key, timed(apply_delta, b, deltas[p], out, jobs=args.jobs, verify=verify))
                shutil.rmtree(out)

    mw = {k: statistics.median(v) for k, v in wall.items()}
    mc = {k: statistics.median(v) for k, v in cpu.items()}
    print(
        f"# params {args.params:.3g}, {args.repeats} alternating repeats, medians; {os.cpu_count()} CPUs; "
        f"load average now {os.getloadavg()[0]:.1f}"
    )
    print("# wall = elapsed seconds; cpu = CPU seconds of all threads (less sensitive to other load)")
    for p, (b, t) in pairs.items():
        tbytes = sum(f.stat().st_size for f in shards(t))
        dbytes = dir_bytes(deltas[p])
        zbytes, zsec = zstd_size(shards(t))
        rss_e = peak_rss_mib(
            [exe, "delta", "export", str(b), str(t), "-o", str(work / "rss"), "--format", "json"]
        )
        rss_a = peak_rss_mib(
            [exe, "delta", "apply", str(b), str(work / "rss"), "-o", str(out), "--format", "json"]
        )
        shutil.rmtree(work / "rss")
        shutil.rmtree(out)
        print(f"\ndensity {100 * p:g} %: TARGET {gib(tbytes)} in {len(shards(t))} shards")
        print(f"  delta size        {gib(dbytes)} = {dbytes / tbytes:.4f} x TARGET")
        print(f"  zstd of TARGET    {gib(zbytes)} = {zbytes / tbytes:.4f} x TARGET ({zsec:.1f} s); "
              f"delta = {dbytes / zbytes:.3f} x zstd")  # fmt: skip
        for key, raw, what in (
            ("export", "raw_export", "cat of BASE+TARGET"),
            ("apply", "raw_apply", "cat of BASE+delta"),
            ("apply", "cp_target", "cp of TARGET"),
            ("apply_verify", "raw_apply", "cat of BASE+delta"),
        ):
            w, c, rw, rc = mw[(p, key)], mc[(p, key)], mw[(p, raw)], mc[(p, raw)]
            print(f"  {key.replace('_', ' --'):17s} wall {w:6.2f} s = {w / rw:5.2f} x {what} ({rw:.2f} s); "
                  f"cpu {c:6.2f} s = {c / rc:5.2f} x ({rc:.2f} s)")  # fmt: skip
        sw, rw = mw[(p, "sha_target")], mw[(p, "raw_export")]
        ncpu = os.cpu_count() or 1
        print(f"  floor of export   sha256 of TARGET alone, one thread: {sw:.2f} s = {sw / rw:.2f} x cat of "
              f"BASE+TARGET; spread over {ncpu} CPUs at best {sw / ncpu / rw:.2f} x")  # fmt: skip
        print(f"  peak RSS          export {rss_e:.0f} MiB, apply {rss_a:.0f} MiB (fresh CLI process)")
        for key in ("export", "raw_export", "sha_target", "apply", "raw_apply", "cp_target"):
            print(f"  runs {key:12s} wall {_fmt(wall[(p, key)])}")
    shutil.rmtree(work, ignore_errors=True)
    if args.clean:
        for b, t in pairs.values():
            shutil.rmtree(b, ignore_errors=True)
            shutil.rmtree(t, ignore_errors=True)


def _fmt(v: list[float]) -> str:
    return " ".join(f"{x:.2f}" for x in v)


if __name__ == "__main__":
    main()
