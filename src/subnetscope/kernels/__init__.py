"""The kernel seam: every hot loop of subnetscope, behind one choice of backend.

The bottom layer: modules here import only each other, :mod:`subnetscope.dtypes` and
:mod:`subnetscope.errors` (``tests/test_layers.py`` checks it). Each works on raw bits of chunks, never
on files or reports.

- :mod:`.env`: the ``SUBNETSCOPE_NO_NATIVE`` / ``_NO_NUMBA`` / ``_NO_AVX512`` switches, read once;
- :mod:`.registry`: the backends (C, numba, numpy) and :func:`~.registry.pick_backend`;
- :mod:`.jit`: the one lazy numba helper; :mod:`.native`: the one ctypes boundary to the C extension
  (``csrc/``), with its argument checks; :mod:`.thresholds`: any number of tolerances, four at a time;
- the kernels: :mod:`.compare` (counts and mask bits of a base/target chunk), :mod:`.series` (K
  checkpoints in one pass), :mod:`.fp8` (block-scaled FP8 by dequantized value), :mod:`.ulp` (ULP and
  |Δ| histograms), :mod:`.delta` (gather and scatter of changed values) with :mod:`.varint`,
  :mod:`.magnitude` (magnitude bins), :mod:`.popcount` (packed bits).

``BACKENDS``, ``pick_backend`` and ``backends_for`` are importable from here (loaded on first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .registry import BACKENDS, backends_for, pick_backend

__all__ = ["BACKENDS", "backends_for", "pick_backend"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'subnetscope.kernels' has no attribute {name!r}")
