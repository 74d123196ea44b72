"""Benchmark: executors (serial, threads, processes, Ray), resume overhead and FP8 dequantisation, in one run.

Uses the 1B bf16 pair of bench_compare.py (built once under bench/_data) and, for FP8, a block-scaled
e4m3 pair of about 0.5B parameters (DeepSeek naming, 128x128 blocks; built once). With the page cache warm
it measures, alternating the runs ``--repeats`` times and taking medians:

- (a) raw read: ``cat`` of every shard to /dev/null;
- the ``subnetscope compare`` command (fresh process, imports included) with ``--executor serial``,
  ``-j 2`` (the default executor, auto: forked processes for this 4 GB pass), ``-j 2 --executor threads``,
  ``-j 2 --executor processes``, and ``--resume`` on a fresh directory; the peak RSS of each, and of the
  largest worker process;
- Ray with two local workers: the command with ``--executor ray -j 2`` (starting and stopping a local Ray
  inside: all overhead included), and in one process with Ray already up: the pass on cold workers, then
  on warm ones, against the serial pass in the same process;
- FP8: raw read vs compare (stored codes + dequantized values + scales, threads), CPU ns per element.

Prints each target with the measured ratio: peak RSS < 1 GiB per worker, ``-j 2`` compare <= 1.2 x raw
read, Ray (two local workers) within 2 x the serial run.

    python bench/bench_scale.py [--repeats 3] [--no-ray] [--no-fp8]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_compare import library_time
from synth import make_pair

DATA = Path(__file__).parent / "_data"
GIB = 1024**3


def shards_of(*dirs: Path) -> list[str]:
    return [str(f) for d in dirs for f in sorted(d.glob("*.safetensors"))]


def timed(cmd: list[str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (KiB) and stderr of one child process."""
    env = dict(os.environ, SUBNETSCOPE_NO_PROGRESS="1")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    _, status, ru = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t0
    err = proc.stderr.read() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}\n{err}")
    return dt, ru.ru_maxrss, err


def worker_rss(stderr: str) -> float | None:
    m = re.search(r"max_worker_rss_mib ([\d.]+)", stderr)
    return float(m.group(1)) if m else None


# -- an FP8 block-scaled pair ---------------------------------------------------------------------------------


def _write(path: Path, tensors: dict[str, tuple[str, tuple[int, ...], np.ndarray]]) -> None:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    off = 0
    for name, (code, shape, arr) in tensors.items():
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [off, off + arr.nbytes]}
        off += arr.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for _code, _shape, arr in tensors.values():
            f.write(arr.tobytes())


def make_fp8_pair(layers: int = 8, hidden: int = 2048, inter: int = 8192) -> tuple[Path, Path]:
    """gate/up/down of ``layers`` layers as e4m3 codes + 128x128 F32 scales; 20 % of codes moved by one
    code step, one scale block in 50 doubled."""
    bdir, tdir = DATA / f"fp8_l{layers}_base", DATA / f"fp8_l{layers}_target"
    if (tdir / "model.safetensors.index.json").exists():
        return bdir, tdir
    rng = np.random.default_rng(0)
    shapes = {}
    for i in range(layers):
        p = f"model.layers.{i}.mlp."
        shapes[p + "gate_proj.weight"] = (inter, hidden)
        shapes[p + "up_proj.weight"] = (inter, hidden)
        shapes[p + "down_proj.weight"] = (hidden, inter)
    for d in (bdir, tdir):
        d.mkdir(parents=True, exist_ok=True)
    wm: dict[str, str] = {}
    for i in range(layers):
        fname = f"model-{i + 1:05d}-of-{layers:05d}.safetensors"
        side: list[dict[str, tuple[str, tuple[int, ...], np.ndarray]]] = [{}, {}]
        for name, shape in shapes.items():
            if not name.startswith(f"model.layers.{i}."):
                continue
            n = math.prod(shape)
            codes = rng.integers(0, 0x7F, n, dtype=np.uint8) | (rng.integers(0, 2, n, dtype=np.uint8) << 7)
            moved = codes.copy()
            sel = rng.random(n, dtype=np.float32) < 0.2
            moved[sel] = np.where((moved[sel] & 0x7F) > 1, moved[sel] - 1, moved[sel] + 1)
            grid = (math.ceil(shape[0] / 128), math.ceil(shape[1] / 128))
            s = (rng.random(grid, dtype=np.float32) * 1e-3 + 1e-4).astype(np.float32)
            s2 = s.copy()
            s2.reshape(-1)[::50] *= 2
            side[0][name] = ("F8_E4M3", shape, codes)
            side[1][name] = ("F8_E4M3", shape, moved)
            side[0][name + "_scale_inv"] = ("F32", grid, s)
            side[1][name + "_scale_inv"] = ("F32", grid, s2)
            wm[name] = wm[name + "_scale_inv"] = fname
        _write(bdir / fname, side[0])
        _write(tdir / fname, side[1])
    cfg = {
        "model_type": "deepseek_v3",
        "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]},
    }
    for d in (bdir, tdir):
        (d / "config.json").write_text(json.dumps(cfg))
        (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    return bdir, tdir


# -- Ray in one process ----------------------------------------------------------------------------------------


def ray_in_process(base: Path, target: Path) -> dict[str, float]:
    """Serial pass, then Ray (2 local CPUs) started here: init, pass on cold workers, pass on warm ones."""
    code = f"""
import json, time
from subnetscope.comparison import compare
from subnetscope.engine.executors import RayExecutor
b, t = {str(base)!r}, {str(target)!r}
compare(b, t, executor="serial")  # warm the kernels' cache
t0 = time.perf_counter(); compare(b, t, executor="serial"); serial = time.perf_counter() - t0
import ray
t0 = time.perf_counter()
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=256 * 2**20)
init = time.perf_counter() - t0
ex = RayExecutor()
t0 = time.perf_counter(); compare(b, t, executor=ex); cold = time.perf_counter() - t0
t0 = time.perf_counter(); compare(b, t, executor=ex); warm = time.perf_counter() - t0
info = ex.last_run
t0 = time.perf_counter(); ray.shutdown(); down = time.perf_counter() - t0
print(json.dumps({{"serial": serial, "init": init, "cold": cold, "warm": warm, "shutdown": down,
                  "tasks": info["tasks"], "worker_rss_mib": info["max_worker_rss_mib"]}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, SUBNETSCOPE_NO_PROGRESS="1"))  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--no-fp8", action="store_true")
    args = ap.parse_args()

    base, target = make_pair(DATA)
    files = shards_of(base, target)
    nbytes = sum(os.path.getsize(f) for f in files)
    exe = str(Path(sys.executable).parent / "subnetscope")
    cmd = [exe, "compare", str(base), str(target), "--format", "json"]
    runs = {
        "serial": [*cmd, "--executor", "serial"],
        "-j 2 (auto: processes)": [*cmd, "-j", "2"],
        "threads -j 2": [*cmd, "-j", "2", "--executor", "threads"],
        "processes -j 2": [*cmd, "-j", "2", "--executor", "processes"],
        "-j 2 --resume": [*cmd, "-j", "2", "--resume"],
    }
    timed(["cat", *files])
    timed(runs["-j 2 (auto: processes)"])  # a first run (numba's cache, when the C kernels are not built)
    res: dict[str, list[tuple[float, int, float | None]]] = {k: [] for k in runs}
    raw = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    try:
        for r in range(args.repeats):
            raw.append(timed(["cat", *files])[0])
            for name, c in runs.items():
                if name.endswith("--resume"):
                    c = [*c, str(tmp / f"resume{r}")]
                t, rss, err = timed(c)
                res[name].append((t, rss, worker_rss(err)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    a = statistics.median(raw)
    print(
        f"pair: {base.name} / {target.name}: {len(files)} shards, {nbytes / 1e9:.2f} GB, cpus={os.cpu_count()}"
    )
    print(
        f"(a) raw read (cat > /dev/null):   median {a:.3f} s ({nbytes / a / 1e9:.1f} GB/s)  runs {[round(x, 3) for x in raw]}"
    )
    med = {}
    for name, rows in res.items():
        t = statistics.median(x[0] for x in rows)
        med[name] = t
        rss = max(x[1] for x in rows) / 1024
        w = [x[2] for x in rows if x[2] is not None]
        wtxt = f", largest worker {max(w):.0f} MiB" if w else ""
        print(f"compare {name:24s} median {t:6.3f} s = {t / a:4.2f} x raw read; peak RSS {rss:.0f} MiB{wtxt}"
              f"  runs {[round(x[0], 3) for x in rows]}")  # fmt: skip
    lib = [library_time(base, target, "auto") for _ in range(args.repeats)]
    med["library"] = statistics.median(lib)
    print(f"compare() in one process, executor='auto', 2 jobs (imports excluded): median {med['library']:.3f} s = "
          f"{med['library'] / a:.2f} x raw read  runs {[round(x, 3) for x in lib]}")  # fmt: skip
    print(
        f"resume journal overhead (-j 2, auto): {med['-j 2 --resume'] / med['-j 2 (auto: processes)']:.2f} x"
    )
    worst_rss = max(max(x[1] for x in rows) / 1024 for rows in res.values())
    worst_w = max((x[2] for rows in res.values() for x in rows if x[2] is not None), default=0.0)

    ray = None
    if not args.no_ray:
        t_cli, rss_cli, err = timed([*cmd, "-j", "2", "--executor", "ray"])
        ray = ray_in_process(base, target)
        worst_w = max(worst_w, ray["worker_rss_mib"], worker_rss(err) or 0.0)
        print(f"ray, 2 local workers, {ray['tasks']} tasks; in one process: serial pass {ray['serial']:.3f} s; "
              f"ray.init {ray['init']:.2f} s, pass on cold workers {ray['cold']:.3f} s, on warm workers "
              f"{ray['warm']:.3f} s, shutdown {ray['shutdown']:.2f} s; largest worker {ray['worker_rss_mib']:.0f} MiB")  # fmt: skip
        print(f"ray CLI (--executor ray -j 2, local Ray started and stopped inside): {t_cli:.2f} s, driver peak RSS "
              f"{rss_cli / 1024:.0f} MiB = {t_cli / med['serial']:.2f} x the serial CLI")  # fmt: skip

    if not args.no_fp8:
        fb, ft = make_fp8_pair()
        ffiles = shards_of(fb, ft)
        fbytes = sum(os.path.getsize(f) for f in ffiles)
        fcmd = [exe, "compare", str(fb), str(ft), "--format", "json", "-j", "2"]
        timed(["cat", *ffiles])
        timed(fcmd)
        fraw, fcmp, fser = [], [], []
        for _ in range(args.repeats):
            fraw.append(timed(["cat", *ffiles])[0])
            fcmp.append(timed(fcmd)[0])
            fser.append(timed([*fcmd[:-2], "--executor", "serial"])[0])
        fa, fc, fs = statistics.median(fraw), statistics.median(fcmp), statistics.median(fser)
        numel = fbytes // 2
        print(f"fp8 pair: {len(ffiles)} shards, {fbytes / 1e9:.2f} GB, {numel / 1e9:.2f}B params per side: raw read "
              f"{fa:.3f} s; compare (codes + dequantized + scales) -j 2 {fc:.3f} s = {fc / fa:.2f} x raw, serial "
              f"{fs:.3f} s = {fs * 1e9 / numel:.1f} ns per parameter on one core")  # fmt: skip

    print("targets:")
    print(f"  peak RSS per worker < 1 GiB: driver max {worst_rss:.0f} MiB, worker max {worst_w:.0f} MiB -> "
          f"{'ok' if max(worst_rss, worst_w) < 1024 else 'MISSED'}")  # fmt: skip
    for name in ("-j 2 (auto: processes)", "threads -j 2", "processes -j 2", "library"):
        r = med[name] / a
        label = "compare() in-process, auto, 2 jobs" if name == "library" else f"compare {name}"
        print(f"  {label} <= 1.2 x raw read: {r:.2f} x -> {'ok' if r <= 1.2 else 'MISSED'}")
    if ray is not None:
        r = ray["warm"] / ray["serial"]
        r_cold = ray["cold"] / ray["serial"]
        print(f"  ray (2 local workers) within 2 x serial: warm {r:.2f} x, cold workers {r_cold:.2f} x -> "
              f"{'ok' if r <= 2 else 'MISSED'} (cluster start-up not included: ray.init {ray['init']:.1f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
