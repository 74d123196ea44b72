"""Microbenchmark: the bf16 series kernel with and without its float32 tie test, interleaved in one process.

Five rows of 64 Ki bf16 values (INIT and 4 checkpoints, 8 % of the elements moved one bf16 step per
checkpoint) stay in cache; ``kernels.native.series_chunk`` runs on them with ``bf16_ties_possible`` forced True (the
tie test on) and as it is (1e-5 is never a gap between two bf16 values: the test is skipped). Prints the
median ns per element of the 4-step series for each, and their ratio.

    python bench/bench_series_kernel.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from subnetscope.dtypes import get_dtype
from subnetscope.kernels import native


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    if not native.AVAILABLE:
        raise SystemExit("the C extension is not built")
    bf16 = get_dtype("BF16")
    rng = np.random.default_rng(0)
    n = 1 << 16
    init = ((rng.standard_normal(n).astype(np.float32) * 0.02).view(np.uint32) >> 16).astype(np.uint16)
    rows = [init]
    for _ in range(4):
        r = rows[-1].copy()
        r[rng.random(n) < 0.08] += 1
        rows.append(r)
    out, split = np.zeros((4, 8), np.int64), np.zeros(4, np.int64)
    search = native.bf16_ties_possible
    times: dict[str, list[float]] = {"tie test on": [], "tie test skipped": []}
    try:
        for _ in range(args.repeats):
            for mode, got in times.items():
                native.bf16_ties_possible = (lambda r: True) if mode == "tie test on" else search  # type: ignore[assignment]
                t = time.perf_counter()
                for _ in range(20):
                    native.series_chunk(rows, bf16, False, 1e-5, 4, 4, out, split)
                got.append((time.perf_counter() - t) / 20 / n * 1e9)
    finally:
        native.bf16_ties_possible = search
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"AVX-512 level {native.avx512_level()}; 5 rows of {n} bf16 in cache, 4 steps, tol 1e-5")
    for k, v in med.items():
        print(f"{k:17s} median {v:.3f} ns per element  (min {min(times[k]):.3f})")
    print(f"skipped / on = {med['tie test skipped'] / med['tie test on']:.2f}")


if __name__ == "__main__":
    main()
