"""Errors of weight sync (subclasses of :class:`subnetscope.errors.SyncError`).

Every refusal leaves the receiver untouched: :meth:`~subnetscope.sync.Receiver.apply` validates the whole
patch (checksum, chain, tensor names, shapes and dtypes, positions, values and the resulting hashes)
before it writes the first element.
"""

from __future__ import annotations

from ..errors import SyncError

__all__ = [
    "SyncChainError",
    "SyncError",
    "SyncFormatError",
    "SyncGapError",
    "SyncMismatchError",
    "SyncParentError",
    "SyncReplayError",
    "SyncStructureError",
    "SyncVerifyError",
]


class SyncFormatError(SyncError):
    """Bytes that are not a valid patch: wrong magic, truncated, bit-flipped (checksum), malformed."""


class SyncChainError(SyncError):
    """A valid patch that does not follow the receiver's version."""


class SyncParentError(SyncChainError):
    """The patch applies on another state: another sender's stream, or other weights than the receiver's."""


class SyncReplayError(SyncChainError):
    """The patch's version is not newer than the receiver's (applied already, or older)."""


class SyncGapError(SyncChainError):
    """The patch applies on a later version than the receiver holds: patches in between are missing."""


class SyncMismatchError(SyncError):
    """The receiver's tensors (names, shapes, dtypes, ties) are not the ones the patch describes."""


class SyncStructureError(SyncError):
    """The sender's model changed structure (a tensor appeared, vanished, or changed shape or dtype)."""


class SyncVerifyError(SyncError):
    """``apply(verify=True)`` recomputed a tensor hash that is not the sender's (the receiver is restored)."""
