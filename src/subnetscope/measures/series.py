"""The series pass on the engine: INIT, K checkpoints (and the final one) read together, chunk by chunk.

Each row is one tensor across all of them; :class:`SeriesCounter` runs the fused series kernel
(:mod:`subnetscope.kernels.series`) on every chunk and returns the per-checkpoint counters ``(K, NSTEP)``
and the never / cancelled / final split ``(NSPLIT,)``, which add up over chunks. See
:mod:`subnetscope.series` for what the counters mean.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..engine.job import Row
from ..kernels.series import NSPLIT, NSTEP, scratch, series_chunk, series_chunk_np

#: elements per chunk (per checkpoint): 2 Mi maps and unmaps a fifth less often than 1 Mi (0.62 against
#: 0.76-0.81 ns per element of a 5-checkpoint bf16 series here) and costs the kernel nothing
DEFAULT_CHUNK_ELEMENTS = 1 << 21
#: with many checkpoints the default chunk shrinks so that one worker's rows stay within this many bytes
ROW_BUDGET_BYTES = 64 << 20


def chunk_elements(rows: Sequence[Row], given: int | None) -> int:
    """Elements per read: ``given``, else large (reads are zero-copy maps) but within the row budget."""
    if given:
        return given
    width = max((i.dtype.itemsize for r in rows for i in r.infos), default=2)
    inputs = max((len(r.infos) for r in rows), default=2)
    return max(1 << 16, min(DEFAULT_CHUNK_ELEMENTS, ROW_BUDGET_BYTES // (width * inputs)))


class SeriesCounter:
    """The series kernel as an engine consumer: per chunk ``(steps (K, NSTEP), split (NSPLIT,))``."""

    def __init__(self, tolerance: float, semantics: str, nsteps: int, fin_row: int) -> None:
        self.tolerance = tolerance
        self.semantics = semantics
        self.nsteps = nsteps
        self.fin_row = fin_row
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_local"]  # per-thread scratch is rebuilt where the consumer runs
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def chunk(
        self, row: Row, start: int, count: int, arrays: Sequence[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Counters of one chunk."""
        out = np.zeros((self.nsteps, NSTEP), np.int64)
        split = np.zeros(NSPLIT, np.int64)
        n = count
        if n == 0:
            return out, split
        d = row.infos[0].dtype
        if d.is_float and all(i.dtype == d for i in row.infos):
            st = getattr(self._local, "state", None)
            if st is None or st.shape[0] < n:
                st = self._local.state = scratch(n)
            series_chunk(list(arrays), d, self.tolerance, self.semantics, self.nsteps, self.fin_row, out, split,
                         state=st)  # fmt: skip
        else:
            dts = [i.dtype for i in row.infos]
            series_chunk_np(
                list(arrays), dts, self.tolerance, self.semantics, self.nsteps, self.fin_row, out, split
            )
        return out, split

    def merge(self, row: Row, state: Any, partial: Any) -> tuple[np.ndarray, np.ndarray]:
        """Add counters."""
        if state is None:
            return partial[0].copy(), partial[1].copy()
        state[0][...] += partial[0]
        state[1][...] += partial[1]
        return state

    def finish(self, row: Row, state: Any) -> tuple[np.ndarray, np.ndarray]:
        """The row's counters."""
        return state
