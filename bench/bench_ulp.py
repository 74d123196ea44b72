"""Benchmark: cost of the ULP / |Δ| histograms (``compare --ulp``) relative to plain ``compare``.

Uses the synthetic Llama-shaped bf16 pair of bench/synth.py (cached under bench/_data; 20 % of every matrix
moved by one bf16 step, norms untouched). In one process with the page cache warm it alternates
(a) ``compare()`` and (b) ``compare()`` with :class:`~subnetscope.anatomy.ulp.ULPHistograms` in the same
pass (and (c) the same with ``--step-size``), and prints medians and the ratios (b)/(a), (c)/(a).

    python bench/bench_ulp.py [--params 2.5e8] [--repeats 5] [--frac 0.2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from subnetscope.anatomy.ulp import ULPHistograms
from subnetscope.comparison import DEFAULT_TOLERANCES, compare
from synth import make_pair

DATA = Path(__file__).parent / "_data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=float, default=2.5e8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--frac", type=float, default=0.2, help="share of each matrix changed")
    ap.add_argument("--jobs", type=int, default=None)
    args = ap.parse_args()
    base, target = make_pair(DATA, args.params, frac=args.frac)
    tols = list(DEFAULT_TOLERANCES)

    def run(consumers: list[ULPHistograms]) -> float:
        t0 = time.perf_counter()
        compare(base, target, tols, jobs=args.jobs, consumers=consumers)
        return time.perf_counter() - t0

    run([])  # warm the page cache and numba
    run([ULPHistograms(tols)])
    plain, ulp, step = [], [], []
    for _ in range(args.repeats):
        plain.append(run([]))
        ulp.append(run([ULPHistograms(tols)]))
        step.append(run([ULPHistograms(tols, step_size=1e-5)]))
    a, b, c = (statistics.median(x) for x in (plain, ulp, step))
    print(f"pair {base.name}: {args.params:.3g} params, {args.frac:.0%} of matrix entries changed")
    print(f"(a) compare:                    median {a:.3f} s  runs {[round(x, 3) for x in plain]}")
    print(f"(b) compare + ULP histograms:   median {b:.3f} s  runs {[round(x, 3) for x in ulp]}")
    print(f"(c) (b) with --step-size 1e-5:  median {c:.3f} s  runs {[round(x, 3) for x in step]}")
    print(f"ratio (b)/(a) = {b / a:.2f}   ratio (c)/(a) = {c / a:.2f}")


if __name__ == "__main__":
    main()
