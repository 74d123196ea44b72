"""Benchmark: update rank per matrix, subnetscope (float64 Gram eigenvalues) vs torch.linalg.matrix_rank.

For the weight shapes of a 7B Llama/Mistral model (q/o 4096x4096, k/v 1024x4096, gate/up 14336x4096), one
float32 delta each: a random full-rank part (what finetuning deltas look like) plus a low-rank part, in
one run: the time of ``subnetscope.anatomy.rank.delta_rank`` (split into Gram matrix and eigenvalues), the
time of ``torch.linalg.matrix_rank`` on the same matrix, both ranks (they must agree) and the ratio.
``--quick`` uses shapes 4x smaller per side. On a GPU, ``--device cuda`` times both on the device.
``--threads N`` sets the BLAS/LAPACK threads of numpy (OpenBLAS) and torch alike (on a loaded machine,
spinning BLAS threads can make 2 threads several times slower than 1; pass 1 there).

    python bench/bench_rank.py [--quick] [--repeats 1] [--threads N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shapes 4x smaller per side")
    ap.add_argument("--repeats", type=int, default=1, help="alternating repeats per shape (medians)")
    ap.add_argument("--threads", type=int, default=None, help="BLAS threads for numpy and torch")
    ap.add_argument("--device", default="cpu")
    return ap.parse_args()


ARGS = _args()
if ARGS.threads:  # before numpy loads OpenBLAS
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from subnetscope.anatomy import rank as rk  # noqa: E402

if ARGS.threads:
    torch.set_num_threads(ARGS.threads)

FULL = [(4096, 4096, "q_proj/o_proj"), (1024, 4096, "k_proj/v_proj"), (14336, 4096, "gate_proj/up_proj")]
QUICK = [(1024, 1024, "q/o / 4"), (256, 1024, "k/v / 4"), (3584, 1024, "gate/up / 4")]


def make_delta(m: int, n: int, seed: int = 0) -> np.ndarray:
    """A float32 delta: Gaussian (full rank) at 1e-5 plus a rank-64 part 10x larger."""
    rng = np.random.default_rng(seed)
    d = rng.standard_normal((m, n), dtype=np.float32) * np.float32(1e-5)
    r = min(64, m, n)
    d += (
        rng.standard_normal((m, r), dtype=np.float32) @ rng.standard_normal((r, n), dtype=np.float32)
    ) * np.float32(1e-4 / np.sqrt(r))
    return d


def time_ours(d: np.ndarray, device: str) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    g = rk._gram_torch(d, device) if device != "cpu" else rk.gram(d)
    if device != "cpu":
        torch.cuda.synchronize()
    t1 = time.perf_counter()
    res = rk.rank_from_gram(g, d.shape[0], d.shape[1], device=device)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, res.rank


def time_torch(d: np.ndarray, device: str) -> tuple[float, int]:
    x = torch.from_numpy(d).to(device)
    if device != "cpu":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    r = int(torch.linalg.matrix_rank(x))
    return time.perf_counter() - t0, r


def main(args: Any = ARGS) -> None:
    shapes = QUICK if args.quick else FULL
    blas = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__} "
          f"(OpenBLAS threads: {blas}), {os.cpu_count()} CPUs, device {args.device}, "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    head = f"{'shape':>12} {'matrix':>18} {'gram s':>8} {'eig s':>8} {'ours s':>8} {'torch s':>8} {'ratio':>7}  ranks"
    print(head)
    for m, n, what in shapes:
        d = make_delta(m, n)
        ours, grams, eigs, theirs = [], [], [], []
        for _ in range(args.repeats):
            g, e, r_ours = time_ours(d, args.device)
            t, r_torch = time_torch(d, args.device)
            grams.append(g)
            eigs.append(e)
            ours.append(g + e)
            theirs.append(t)
        mo, mt = statistics.median(ours), statistics.median(theirs)
        same = "equal" if r_ours == r_torch else "DIFFER"
        print(f"{m:>5}x{n:<6} {what:>18} {statistics.median(grams):8.2f} {statistics.median(eigs):8.2f} "
              f"{mo:8.2f} {mt:8.2f} {mt / mo:6.1f}x  {r_ours} / {r_torch} ({same})")  # fmt: skip


if __name__ == "__main__":
    main()
