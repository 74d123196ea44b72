"""Overlap of two subnetworks (two sets of updated parameters) against random baselines (paper §5, App. E).

For updated sets I1 and I2 over the same n parameters:

- ``o1 = |I1 ∩ I2| / |I1|``, ``o2 = |I1 ∩ I2| / |I2|``, Jaccard ``|I1 ∩ I2| / |I1 ∪ I2|``;
- uniform baselines ``o1_random = |I2| / n``, ``o2_random = |I1| / n`` (App. E), and ``z``: how many standard
  deviations the observed intersection lies above that of two random sets of the same sizes (the
  intersection is then hypergeometric: mean ``|I1| |I2| / n``);
- with the base weights, the *magnitude-matched* baseline (:mod:`subnetscope.magnitude_bins`): the same
  quantities if each run's updated set were drawn at random within each bin of |w|, keeping its count;
- from deltas (:func:`overlap_deltas`), also the sign agreement and the cosine of the two updates on the
  shared coordinates, and the cosine of the whole update vectors (float64 accumulation).

Everything is computed per tensor, chunk by chunk of packed bits (popcount of AND), and merged per matrix
type, per layer and overall; no whole mask or model is ever held in memory.
"""

from __future__ import annotations

from .kernels.popcount import popcount
from .measures.overlap import DEFAULT_CHUNK_ELEMENTS, changed_packed, overlap, overlap_deltas
from .results.overlap import (
    REPORT_KIND,
    DeltaSums,
    OverlapCounts,
    OverlapReport,
    TensorOverlap,
    hypergeometric,
)

__all__ = [
    "DEFAULT_CHUNK_ELEMENTS",
    "REPORT_KIND",
    "DeltaSums",
    "OverlapCounts",
    "OverlapReport",
    "TensorOverlap",
    "changed_packed",
    "hypergeometric",
    "overlap",
    "overlap_deltas",
    "popcount",
]
