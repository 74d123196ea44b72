"""Sparse weight sync: ship only what a training step changed, bit-exact and verified.

::

    from subnetscope import sync
    sender = sync.Sender(model)          # nn.Module or mapping of tensors; any float dtype, any device
    patch = sender.diff()                # what changed since the last diff: a sync.Patch
    blob = patch.to_bytes()              # wire format (sync.Patch.from_bytes, patch.save, sync.Patch.load)
    receiver = sync.Receiver(model2)     # same starting weights as the sender had
    receiver.apply(patch)                # in place, bit-exact, validated before the first write
    assert receiver.digest() == sender.digest()

Modules: :mod:`.bits` (value and position codes), :mod:`.hashing` (incremental per-tensor hashes),
:mod:`.state` (which tensors a side holds), :mod:`.patch` (the wire format), :mod:`.sender`,
:mod:`.receiver`, :mod:`.stream` (a directory of patches and its manifest), :mod:`.callback` (HF Trainer),
:mod:`.errors`.
"""

from __future__ import annotations

from . import stream
from .errors import (
    SyncChainError,
    SyncError,
    SyncFormatError,
    SyncGapError,
    SyncMismatchError,
    SyncParentError,
    SyncReplayError,
    SyncStructureError,
    SyncVerifyError,
)
from .hashing import Digest
from .patch import Patch, PatchStats, TensorEntry
from .receiver import Receiver
from .sender import Sender


def __getattr__(name: str) -> object:
    """``sync.SyncCallback`` imported on first use (it needs transformers)."""
    if name == "SyncCallback":
        from .callback import SyncCallback

        return SyncCallback
    raise AttributeError(name)


__all__ = [
    "Digest",
    "Patch",
    "PatchStats",
    "Receiver",
    "Sender",
    "SyncCallback",
    "SyncChainError",
    "SyncError",
    "SyncFormatError",
    "SyncGapError",
    "SyncMismatchError",
    "SyncParentError",
    "SyncReplayError",
    "SyncStructureError",
    "SyncVerifyError",
    "TensorEntry",
    "stream",
]
