"""Counting set bits of packed masks (uint8, little bit order), as the overlap of two subnetworks needs."""

from __future__ import annotations

import numpy as np

_POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def popcount(packed: np.ndarray) -> int:
    """Number of set bits in a uint8 array (``np.bitwise_count`` where numpy has it, else a table)."""
    if packed.size == 0:
        return 0
    if hasattr(np, "bitwise_count"):
        return int(np.bitwise_count(packed).sum(dtype=np.int64))
    return int(_POP8[packed].sum(dtype=np.int64))  # pragma: no cover - numpy < 2


def clear_tail(packed: np.ndarray, nbits: int) -> np.ndarray:
    """``packed`` with the bits past ``nbits`` cleared (a copy only when needed)."""
    rem = nbits & 7
    if rem and packed.size:
        packed = packed.copy()
        packed[-1] &= np.uint8((1 << rem) - 1)
    return packed
