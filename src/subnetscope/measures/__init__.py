"""Measures: each a plan of rows and the consumers that compute it on the engine's one read loop.

- :mod:`.compare`: counts per tolerance, bit identity, non-finite values and mask bits of tensor pairs
  (``compare``, ``mask``; the extra per-pair consumers ULP histograms and FP8 dequantized counts ride it);
- :mod:`.series`: the dynamics counters of one run's checkpoints (``series``).
"""
