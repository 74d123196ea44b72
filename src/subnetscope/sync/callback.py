"""``SyncCallback``: write a sync patch per optimizer step (or every N) from any HF ``Trainer`` / TRL trainer.

The Trainer fires ``on_step_end`` after ``optimizer.step()`` (and the scheduler) of every optimizer step,
with the model in its keyword arguments; the callback diffs the model there, cast to the dtype the
rollout engines serve (bf16 by default, while the trainer keeps fp32 masters), and writes the patch and the
manifest into a directory (:mod:`subnetscope.sync.stream`). A rollout side follows the directory with
:func:`subnetscope.sync.stream.patches` or rebuilds any step with ``subnetscope sync replay``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from ..errors import UsageError
from .patch import LEVEL, Patch
from .sender import Sender
from .stream import PatchWriter


class SyncCallback(TrainerCallback):
    """``callbacks=[SyncCallback("sync_out")]``: one patch per ``every`` optimizer steps.

    Args:
        directory: where the patches and ``manifest.json`` go.
        every: write a patch every this many optimizer steps (and at the end of training).
        dtype: the dtype the receivers hold (None: the model's own dtypes).
        anchor: also write a full patch (version 1) at the start of training, so receivers can start
            from the directory alone.
        level: zstd level.

    ``sender`` is the :class:`Sender` (after ``on_train_begin``); ``last`` the last patch written.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        every: int = 1,
        dtype: torch.dtype | None = torch.bfloat16,
        anchor: bool = False,
        level: int = LEVEL,
    ) -> None:
        if every < 1:
            raise UsageError(
                f"SyncCallback: every must be at least 1, not {every}", "pass every=1 for every step"
            )
        self.directory = Path(directory)
        self.every = every
        self.dtype = dtype
        self.anchor = anchor
        self.level = level
        self.sender: Sender | None = None
        self.writer: PatchWriter | None = None
        self.last: Patch | None = None
        self._pending = False

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Snapshot the model as version 0 (and write an anchor if asked)."""
        model = kwargs.get("model")
        if model is None:
            raise UsageError(
                "the trainer passed no model to SyncCallback.on_train_begin",
                "use a transformers Trainer, or drive a sync.Sender yourself",
            )
        if not getattr(state, "is_world_process_zero", True):
            return
        self.sender = Sender(model, dtype=self.dtype, level=self.level)
        self.writer = PatchWriter(self.directory)
        if self.anchor:
            self._write(self.sender.full(meta={"step": int(state.global_step)}))

    def _write(self, patch: Patch) -> None:
        assert self.writer is not None
        self.writer.write(patch)
        self.last = patch
        self._pending = False

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """After an optimizer step: write a patch every ``every`` steps."""
        if self.sender is None:
            return
        self._pending = True
        if int(state.global_step) % self.every == 0:
            self._write(self.sender.diff(meta={"step": int(state.global_step)}))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Write the steps since the last patch, if any."""
        if self.sender is not None and self._pending:
            self._write(self.sender.diff(meta={"step": int(state.global_step)}))
