"""Counting any number of tolerances with kernels that count four at a time.

The compare and FP8 kernels (C and numba) count ``|Δ| <= t`` for four thresholds per pass over a chunk and
return seven numbers: the four counts, then identical, non-finite base and non-finite target elements.
:func:`count_by_fours` runs such a kernel over groups of four (the last group padded by repeating the
largest index) and adds the results into the ``len(thr) + 3`` counters of the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

#: a four-threshold kernel: thresholds (float64, 4) -> 7 counts
Count4 = Callable[[np.ndarray], "Sequence[int] | np.ndarray"]


def count_by_fours(thr: np.ndarray, out: np.ndarray, count4: Count4) -> None:
    """Add to ``out`` (``len(thr) + 3`` int64): per threshold ``k`` its count, then the three per-element
    counts (taken from the first group only: they do not depend on the thresholds)."""
    k = thr.shape[0]
    for g in range(0, k, 4):
        t4 = np.array([thr[min(g + i, k - 1)] for i in range(4)], dtype=np.float64)
        res = np.asarray(count4(t4), dtype=np.int64)
        m = min(4, k - g)
        out[g : g + m] += res[:m]
        if g == 0:
            out[k : k + 3] += res[4:7]
