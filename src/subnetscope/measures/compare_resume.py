"""``compare --resume`` on the engine's resume journal: what a compare run is keyed on, and its mask bits.

The journal (:mod:`subnetscope.engine.resume`) keeps each finished pair's :class:`~subnetscope.stats.TensorStats`
and, when a mask is written, its packed bits; a resumed run replays those bits into the new mask file, so
report and mask are byte-identical to an uninterrupted run's.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from .. import __version__
from ..engine.resume import ResumeState, open_resume
from ..fingerprint import of_checkpoint
from ..plan import Pair, Plan
from ..stats import TensorStats
from .compare import MaskSink, PassOptions


def _consumer_id(c: Any) -> list[Any]:
    ident: list[Any] = [f"{type(c).__module__}.{type(c).__qualname__}", getattr(c, "key", "")]
    desc = getattr(c, "describe", None)
    if callable(desc):
        with contextlib.suppress(TypeError, ValueError):
            ident.append(json.loads(json.dumps(desc(), sort_keys=True, default=str)))
    return ident


def run_identity(plan: Plan, opts: PassOptions, mask_tolerance: float | None) -> dict[str, Any]:
    """What a resumable compare run is keyed on (see :mod:`subnetscope.engine.resume`)."""
    return {
        "base": of_checkpoint(plan.base).to_json(),
        "target": of_checkpoint(plan.target).to_json(),
        "tolerances": [float(t) for t in opts.tolerances],
        "semantics": opts.semantics,
        "mask_tolerance": mask_tolerance,
        "consumers": [_consumer_id(c) for c in opts.consumers],
        "tool_version": __version__,
    }


class _Tee:
    """A mask sink that also keeps the bits in the journal's ``mask.bits``."""

    def __init__(self, inner: MaskSink, state: ResumeState) -> None:
        self.inner = inner
        self.state = state

    def write(self, pair: Pair, start: int, packed: np.ndarray) -> None:
        self.inner.write(pair, start, packed)
        self.state.store_bits(pair.name, start, packed)


class CompareResume:
    """An open resume directory of a compare run; use :func:`open_compare_resume` (and close it)."""

    def __init__(self, state: ResumeState, plan: Plan) -> None:
        self.state = state
        self.plan = plan

    @property
    def done(self) -> dict[str, TensorStats]:
        """Finished tensors' stats, by name."""
        return self.state.done

    def pending(self, pairs: Iterable[Pair]) -> list[Pair]:
        """The pairs not finished yet (in the order given)."""
        return [p for p in pairs if p.name not in self.state.done]

    def record(self, st: TensorStats) -> None:
        """Journal one finished tensor (``PassOptions.on_tensor_done``)."""
        self.state.record(st.name, st.to_json(), st)

    def tee(self, sink: MaskSink) -> MaskSink:
        """``sink`` plus a copy of every bit into the journal."""
        if not self.state.with_mask:
            raise ValueError("this resume state was opened without a mask")
        return _Tee(sink, self.state)

    def replay(self, sink: MaskSink) -> None:
        """Write the kept mask bits of every finished tensor to ``sink``."""
        for p in self.plan.pairs:
            if p.name in self.state.done:
                for start, packed in self.state.stored_bits(p.name):
                    sink.write(p, start, packed)

    def merged(self, fresh: list[TensorStats]) -> list[TensorStats]:
        """Finished and fresh stats together, in plan order."""
        new = {s.name: s for s in fresh}
        return [self.state.done.get(p.name) or new[p.name] for p in self.plan.pairs]

    def close(self) -> None:
        """Commit what is queued and close the journal."""
        self.state.close()

    def __enter__(self) -> CompareResume:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_compare_resume(
    directory: str | os.PathLike[str],
    plan: Plan,
    opts: PassOptions,
    mask_tolerance: float | None,
    sync_seconds: float = 1.0,
) -> CompareResume:
    """Open (or create) the resume directory of this compare run; ``mask_tolerance`` None: no mask."""
    state = open_resume(
        directory,
        run_identity(plan, opts, mask_tolerance),
        {p.name: p.numel for p in plan.pairs},
        TensorStats.from_json,
        with_bits=mask_tolerance is not None,
        sync_seconds=sync_seconds,
    )
    return CompareResume(state, plan)
