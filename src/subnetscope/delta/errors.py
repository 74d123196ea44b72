"""Errors of the delta package (subclasses of the hierarchy in :mod:`subnetscope.errors`)."""

from __future__ import annotations

from ..errors import DeltaFormatError, MismatchError
from ..fingerprint import Fingerprint


class DeltaBaseMismatchError(MismatchError):
    """The base given to ``apply`` (or the state dict given to ``patch_state_dict``) is not the delta's base."""


class DeltaVerifyError(DeltaFormatError):
    """``--verify`` found a rebuilt tensor whose sha256 is not the one the delta recorded."""


_HINT = (
    "give the base the delta was exported against (see `base.ref` in its delta.json), or re-export the delta"
)


def check_fingerprint(
    expected: Fingerprint, got: Fingerprint, delta: str, what: str, detail: str = "", hint: str = _HINT
) -> None:
    """Raise :class:`DeltaBaseMismatchError` unless ``got`` (of ``what``) is ``expected``."""
    if got.structure != expected.structure:
        counts = (
            f"the delta's base has {expected.tensors} tensors and {expected.numel:,} elements, "
            f"this one {got.tensors} and {got.numel:,}"
        )
        more = f": {detail}" if detail else f" ({counts})"
        raise DeltaBaseMismatchError(
            f"{delta}: was made against another model; tensor names/shapes/dtypes of {what} differ{more}",
            hint,
        )
    if got.content != expected.content:
        raise DeltaBaseMismatchError(
            f"{delta}: was made against a base with other weights than {what} "
            f"(fingerprint {expected.short()} expected, {got.short()} found)",
            hint,
        )
