"""One typed hierarchy of errors.

Every error the library raises on purpose is a :class:`SubnetscopeError`. Its message says what is wrong
(naming the file or tensor) and its ``hint`` says how to fix it; the CLI prints both on one line and exits
with :attr:`SubnetscopeError.exit_code`, without a traceback unless ``SUBNETSCOPE_DEBUG=1``.
"""

from __future__ import annotations

from typing import Any


class SubnetscopeError(Exception):
    """Base class of every deliberate subnetscope error."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message and the hint, as the single line the CLI prints."""
        if self.hint:
            return f"{self.message}; {self.hint}"
        return self.message

    def __str__(self) -> str:
        return self.one_line()


class InputNotFoundError(SubnetscopeError):
    """A path or hub id that does not resolve to anything."""


class HubError(SubnetscopeError):
    """A hub id that could not be resolved (offline, unknown, or unreachable)."""


class CheckpointFormatError(SubnetscopeError):
    """A checkpoint file or index that is not valid (corrupt header, bad offsets, truncated, ...)."""


class UnsupportedDtypeError(CheckpointFormatError):
    """A tensor dtype subnetscope does not know how to read."""


class MismatchError(SubnetscopeError):
    """Two inputs that should describe the same model do not (names, shapes, dtypes)."""


class StrictCheckError(SubnetscopeError):
    """``--strict`` was given and the comparison found mismatches; the report is still complete."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None, report: Any = None) -> None:
        super().__init__(message, hint)
        self.report = report  #: the complete report, so callers can still write it


class MaskFormatError(SubnetscopeError):
    """A mask file that is truncated, edited or otherwise not readable."""


class MaskMismatchError(MismatchError):
    """A mask that belongs to another model (its base fingerprint does not match)."""


class DeltaFormatError(SubnetscopeError):
    """A delta directory that is corrupt or incomplete."""


class UsageError(SubnetscopeError):
    """Arguments that do not make sense together."""


class OutputConflictError(UsageError):
    """An output path that is, holds or lies inside an input, names another output of the same run, is not a
    regular file (or directory) where one is written, or is an existing directory ``overwrite`` may not
    replace."""


class OutputWriteError(SubnetscopeError):
    """The operating system refused to write an output (read-only file system, full disk, no permission, a
    parent that is a file, ...); the message names the path and what the system said."""


class SyncError(SubnetscopeError):
    """A weight-sync patch that cannot be made or applied (the subclasses live in :mod:`subnetscope.sync`)."""
