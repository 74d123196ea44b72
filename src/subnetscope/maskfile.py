"""The mask file: one bit per parameter (1 = updated), bit-packed per tensor, in a safetensors file.

Layout: one ``U8`` tensor per model tensor, same name, ``ceil(numel / 8)`` bytes, bit ``i % 8`` (little bit
order, as ``numpy.packbits(..., bitorder="little")``) of byte ``i // 8`` is element ``i`` of the flattened
parameter. The ``__metadata__`` records the format, tool version, tolerance, semantics, the base's
fingerprint, every parameter's shape and a sha256 per packed tensor, so a truncated or hand-edited file
and a mask for another model are refused with a clear error.

Format version 2 adds ``header_sha256``: the sha256 of the whole header (every other ``__metadata__``
field, the per-tensor digests included, and every tensor's dtype, shape and offsets; see
:func:`header_digest`), so that a header edited by hand (a tolerance, the semantics) is refused like edited
bits. Version 1 files (written before) are still read: their fields are validated one by one, but an edit
that leaves a valid value cannot be detected in them. The digests detect edits and damage, they do not
authenticate: whoever can write the file can recompute them.

:class:`MaskWriter` writes such a file in one streaming pass: the header is known before the pass (shapes
and fingerprint), parts arrive from worker threads in any order and go to their offsets with ``pwrite``,
and the digests are filled into the reserved header space at the end; the file appears atomically.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import validate
from .errors import CheckpointFormatError, MaskFormatError, MaskMismatchError
from .fingerprint import Fingerprint
from .io.safetensors_header import read_header
from .mask_writer import (
    FORMAT,
    FORMAT_VERSION,
    READABLE_VERSIONS,
    MaskWriter,
    header_digest,
    packed_size,
)

_HEX = frozenset("0123456789abcdef")

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "READABLE_VERSIONS",
    "MaskFile",
    "MaskWriter",
    "header_digest",
    "packed_size",
]


class MaskFile(Mapping[str, np.ndarray]):
    """A mask file opened lazily: a read-only mapping from tensor name to a boolean array of its shape."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise MaskFormatError(
                f"{self.path}: no such mask file", "create one with `subnetscope mask BASE TARGET -o FILE`"
            )
        try:
            header = read_header(self.path)
        except CheckpointFormatError as e:
            raise MaskFormatError(
                f"{self.path}: not a readable mask file ({e.message})",
                "regenerate it with `subnetscope mask`",
            ) from None
        meta = header.metadata
        if meta.get("format") != FORMAT:
            raise MaskFormatError(
                f"{self.path}: not a subnetscope mask (format {meta.get('format')!r})",
                "give a file written by `MaskFile` or `compare(mask_out=...)`",
            )
        version = meta.get("format_version")
        if version not in READABLE_VERSIONS:
            raise MaskFormatError(
                f"{self.path}: mask format version {version!r} is not supported",
                "regenerate the mask with this version of subnetscope",
            )
        self.format_version: str = str(version)
        fields = _MetaFields(self.path, meta)
        self.shapes: dict[str, tuple[int, ...]] = fields.shapes()
        self.digests: dict[str, str] = fields.digests(self.shapes)
        self.fingerprint = fields.fingerprint()
        self.tolerance: float = fields.tolerance()
        self.semantics: str = fields.semantics()
        #: base dtype code per tensor (as stored in the base checkpoint)
        self.dtypes: dict[str, str] = fields.dtypes(self.shapes)
        fields.check_constants()
        self.metadata = meta
        self._infos = header.tensors
        extra = sorted(set(self._infos) - set(self.shapes))
        if extra:
            raise MaskFormatError(
                f"{self.path}: tensor {extra[0]!r} is not listed in the mask's shapes",
                "the file was edited or damaged: regenerate the mask",
            )
        for name, shape in self.shapes.items():
            info = self._infos.get(name)
            if info is None or info.dtype.code != "U8" or info.nbytes != packed_size(math.prod(shape)):
                raise MaskFormatError(
                    f"{self.path}: tensor {name!r} is missing or has the wrong size for shape {list(shape)}",
                    "the file was edited or damaged: regenerate the mask",
                )
        if self.format_version == "1":
            if "header_sha256" in meta:  # version 1 never wrote one: the version was edited down
                raise MaskFormatError(
                    f"{self.path}: mask metadata is damaged (format_version: '1' but the header has a "
                    "header_sha256, which version 1 never wrote)",
                    "regenerate the mask",
                )
        else:
            entries = {
                n: (
                    i.dtype.code,
                    i.shape,
                    i.start - header.data_start,
                    i.start - header.data_start + i.nbytes,
                )
                for n, i in self._infos.items()
            }
            if meta.get("header_sha256") != header_digest(meta, entries):
                raise MaskFormatError(
                    f"{self.path}: the mask header does not match its recorded sha256 (edited or damaged)",
                    "regenerate the mask",
                )

    # Mapping interface -----------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> np.ndarray:
        shape = self.shapes[name]
        bits = np.unpackbits(self.packed(name), count=math.prod(shape), bitorder="little")
        return bits.view(bool).reshape(shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)

    # extras -----------------------------------------------------------------------------------------------
    def packed(self, name: str, verify: bool = True) -> np.ndarray:
        """The packed bytes of one tensor (checked against the recorded sha256)."""
        info = self._infos[name]
        with open(self.path, "rb") as f:
            f.seek(info.start)
            raw = f.read(info.nbytes)
        if len(raw) != info.nbytes:
            raise MaskFormatError(f"{self.path}: truncated inside tensor {name!r}", "regenerate the mask")
        if verify and hashlib.sha256(raw).hexdigest() != self.digests.get(name):
            raise MaskFormatError(
                f"{self.path}: the bits of tensor {name!r} do not match their recorded sha256 (edited or damaged)",
                "regenerate the mask",
            )
        return np.frombuffer(raw, dtype=np.uint8)

    def torch(self, name: str) -> Any:
        """One tensor's mask as a ``torch.bool`` tensor of the parameter's shape."""
        import torch

        return torch.from_numpy(self[name].copy())

    def count(self, name: str) -> int:
        """Number of updated elements in one tensor."""
        return int(
            np.unpackbits(self.packed(name), count=math.prod(self.shapes[name]), bitorder="little").sum()
        )

    @property
    def numel(self) -> int:
        """Parameters covered by the mask."""
        return sum(math.prod(s) for s in self.shapes.values())

    def check_base(self, fp: Fingerprint, what: str = "the given model") -> None:
        """Refuse when ``fp`` is not the fingerprint of the mask's base."""
        if fp.structure != self.fingerprint.structure:
            raise MaskMismatchError(
                f"{self.path}: mask was made for another model (tensor names/shapes/dtypes differ from {what})",
                "use the mask made against this base, or recompute it with `subnetscope mask`",
            )
        if fp.content != self.fingerprint.content:
            raise MaskMismatchError(
                f"{self.path}: mask was made against a base with other weights than {what} "
                f"(fingerprint {self.fingerprint.short()} vs {fp.short()})",
                "use the mask made against this base, or recompute it with `subnetscope mask`",
            )

    def check_compatible(self, other: MaskFile) -> None:
        """Refuse to combine two masks made over different bases."""
        if self.fingerprint != other.fingerprint:
            raise MaskMismatchError(
                f"{self.path} and {other.path} were made over different bases "
                f"({self.fingerprint.short()} vs {other.fingerprint.short()})",
                "compare masks computed against the same base model",
            )


class _MetaFields:
    """Parses and checks the ``__metadata__`` fields of a mask, one error naming the field if one is bad."""

    def __init__(self, path: Path, meta: Mapping[str, str]) -> None:
        self.path = path
        self.meta = meta

    def _bad(self, key: str, why: str) -> MaskFormatError:
        return MaskFormatError(f"{self.path}: mask metadata is damaged ({key}: {why})", "regenerate the mask")

    def _get(self, key: str) -> str:
        value = self.meta.get(key)
        if value is None:
            raise self._bad(key, "missing")
        return value

    def _json(self, key: str) -> Any:
        try:
            return json.loads(self._get(key))
        except (ValueError, RecursionError):
            raise self._bad(key, "not valid JSON") from None

    def _object(self, key: str) -> dict[str, Any]:
        obj = self._json(key)
        if not isinstance(obj, dict):
            raise self._bad(key, "not a JSON object")
        return obj

    def shapes(self) -> dict[str, tuple[int, ...]]:
        out = {}
        for name, shape in self._object("shapes").items():
            if not (isinstance(shape, list) and all(type(x) is int and x >= 0 for x in shape)):
                raise self._bad("shapes", f"tensor {name!r} has an invalid shape {json.dumps(shape)}")
            out[name] = tuple(shape)
        return out

    def digests(self, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, str]:
        obj = self._object("sha256")
        if set(obj) != set(shapes):
            raise self._bad("sha256", "does not list exactly the tensors of 'shapes'")
        for name, d in obj.items():
            if not (isinstance(d, str) and len(d) == 64 and set(d) <= _HEX):
                raise self._bad("sha256", f"the digest of {name!r} is not 64 lowercase hex digits")
        return dict(obj)

    def fingerprint(self) -> Fingerprint:
        obj = self._object("base_fingerprint")
        if set(obj) != {"structure", "content", "tensors", "numel"}:
            raise self._bad("base_fingerprint", "needs exactly structure, content, tensors, numel")
        s, c, t, n = obj["structure"], obj["content"], obj["tensors"], obj["numel"]
        if not all(isinstance(x, str) and len(x) == 64 and set(x) <= _HEX for x in (s, c)):
            raise self._bad("base_fingerprint", "structure and content must be sha256 digests")
        if not all(type(x) is int and x >= 0 for x in (t, n)):
            raise self._bad("base_fingerprint", "tensors and numel must be non-negative integers")
        return Fingerprint(s, c, t, n)

    def tolerance(self) -> float:
        text = self._get("tolerance")
        try:
            t = float(text)
        except ValueError:
            raise self._bad("tolerance", f"{text!r} is not a number") from None
        if not (t >= 0 and math.isfinite(t)):
            raise self._bad("tolerance", f"{text!r} is not a finite non-negative number")
        return t

    def semantics(self) -> str:
        value = self._get("semantics")
        if value not in validate.SEMANTICS:
            raise self._bad("semantics", f"{value!r} is neither 'exact' nor 'reference'")
        return value

    def dtypes(self, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, str]:
        if "dtypes" not in self.meta:
            return {}
        obj = self._object("dtypes")
        for name, code in obj.items():
            if name not in shapes or not isinstance(code, str):
                raise self._bad("dtypes", f"entry {name!r} is not a tensor of the mask with a dtype code")
        return dict(obj)

    def check_constants(self) -> None:
        if self.meta.get("bitorder") != "little":
            raise self._bad("bitorder", f"{self.meta.get('bitorder')!r} is not 'little'")
        tool = self.meta.get("tool_version")
        if not tool:
            raise self._bad("tool_version", "missing")
