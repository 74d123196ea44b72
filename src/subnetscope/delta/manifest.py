"""The data model of a delta directory's ``delta.json``: its constants, :class:`Manifest` and its entries,
the seal digest and writing it. Reading and validating one is :mod:`subnetscope.delta.format`."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..dtypes import DTYPES
from ..fingerprint import Fingerprint

FORMAT = "subnetscope.delta"
FORMAT_VERSION = "1"
MANIFEST_NAME = "delta.json"

ENCODINGS = ("unchanged", "sparse", "dense", "whole")
#: encodings whose rebuild reads the base tensor
FROM_BASE = ("unchanged", "sparse")
POSITIONS = ("bitmap", "gaps", "all")
CODECS = ("raw", "zstd")
#: the columns of one chunk record in the manifest
CHUNK_FIELDS = (
    "index",
    "changed",
    "positions",
    "pos_codec",
    "pos_bytes",
    "val_codec",
    "val_bytes",
    "file",
    "offset",
)

HEX64 = re.compile(r"^[0-9a-f]{64}$")
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")

#: the config and tokenizer files a delta carries beside the weights (``config.json``, ``tokenizer.json``, ...)
SIDE_PATTERNS = ("*.json", "tokenizer.model", "*.tiktoken", "merges.txt", "vocab.txt", "*.jinja")
#: never a side file: weight files and their indexes (a side file of that name would replace what the
#: rebuild writes), the delta manifest and ``delta apply``'s record of its output
NOT_SIDE_FILES = (
    "*.safetensors",
    "*.safetensors.index.json",
    "*.bin",
    "*.bin.index.json",
    MANIFEST_NAME,
    ".subnetscope-apply.json",
)


def is_side_file_name(name: str) -> bool:
    """Whether a file of this name travels with the weights as a config or tokenizer file."""
    if any(fnmatch.fnmatchcase(name.lower(), s) for s in NOT_SIDE_FILES):  # case-blind file systems too
        return False
    return any(fnmatch.fnmatchcase(name, p) for p in SIDE_PATTERNS)


REDO_HINT = "re-export it with `subnetscope delta export BASE TARGET -o DIR`"


@dataclass(frozen=True)
class ChunkRecord:
    """One stored chunk of a tensor."""

    index: int  #: chunk number: elements ``[index * chunk_elements, ...)``
    changed: int  #: elements whose bits differ from the base (all of them for ``all``)
    positions: str  #: ``bitmap`` | ``gaps`` | ``all``
    pos_codec: str
    pos_bytes: int
    val_codec: str
    val_bytes: int
    file: int  #: index into :attr:`Manifest.files`
    offset: int  #: byte offset of the positions blob (the values blob follows it)

    def to_json(self) -> list[Any]:
        """The record as a row of :data:`CHUNK_FIELDS`."""
        return [getattr(self, f) for f in CHUNK_FIELDS]


@dataclass
class TensorEntry:
    """One tensor of TARGET, and how to rebuild it."""

    name: str
    shape: tuple[int, ...]
    dtype: str  #: safetensors code
    sha256: str  #: of the rebuilt raw bytes
    encoding: str  #: one of :data:`ENCODINGS`
    changed: int  #: elements that differ from the base (all of them for ``whole``)
    reason: str | None = None  #: for ``whole``: ``new``, ``shape`` or ``dtype``
    chunks: list[ChunkRecord] = field(default_factory=list)

    @property
    def numel(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        """Bytes per element."""
        return DTYPES[self.dtype].itemsize

    @property
    def nbytes(self) -> int:
        """Bytes of the rebuilt tensor."""
        return self.numel * self.itemsize

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        out: dict[str, Any] = {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "sha256": self.sha256,
            "encoding": self.encoding,
            "changed": self.changed,
        }
        if self.reason is not None:
            out["reason"] = self.reason
        out["chunks"] = [c.to_json() for c in self.chunks]
        return out


@dataclass(frozen=True)
class StoredFile:
    """A data or side file of the delta directory."""

    name: str
    bytes: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {"name": self.name, "bytes": self.bytes, "sha256": self.sha256}


@dataclass
class Manifest:
    """The parsed ``delta.json``."""

    tool_version: str
    base_fingerprint: Fingerprint  #: of every base tensor (what ``apply`` checks)
    patch_fingerprint: (
        Fingerprint  #: of the base tensors the rebuild reads (what ``patch_state_dict`` checks)
    )
    chunk_elements: int
    zstd_level: int
    files: list[StoredFile]
    side_files: list[StoredFile]
    tensors: list[TensorEntry]
    removed: list[dict[str, Any]]  #: ``{"name", "shape", "dtype"}`` of tensors only BASE has
    base_ref: str = ""
    target_ref: str = ""
    path: Path | None = None  #: the delta directory it was read from

    def nchunks(self, entry: TensorEntry) -> int:
        """Chunks of one tensor (at least one, even when empty)."""
        return max(1, -(-entry.numel // self.chunk_elements))

    def chunk_span(self, entry: TensorEntry, index: int) -> tuple[int, int]:
        """``(start, count)`` of chunk ``index`` of ``entry``."""
        start = index * self.chunk_elements
        return start, max(0, min(self.chunk_elements, entry.numel - start))

    @property
    def data_bytes(self) -> int:
        """Bytes of all data files."""
        return sum(f.bytes for f in self.files)

    @property
    def target_bytes(self) -> int:
        """Bytes of all rebuilt tensors."""
        return sum(t.nbytes for t in self.tensors)

    def to_json(self) -> dict[str, Any]:
        """JSON form, sealed with ``manifest_sha256``."""
        body: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "tool_version": self.tool_version,
            "base": {
                "ref": self.base_ref,
                "fingerprint": self.base_fingerprint.to_json(),
                "patch_fingerprint": self.patch_fingerprint.to_json(),
            },
            "target": {
                "ref": self.target_ref,
                "tensors": len(self.tensors),
                "numel": sum(t.numel for t in self.tensors),
                "nbytes": self.target_bytes,
                "changed": sum(t.changed for t in self.tensors),
            },
            "chunk_elements": self.chunk_elements,
            "zstd_level": self.zstd_level,
            "files": [f.to_json() for f in self.files],
            "side_files": [f.to_json() for f in self.side_files],
            "chunk_fields": list(CHUNK_FIELDS),
            "tensors": [t.to_json() for t in self.tensors],
            "removed": self.removed,
        }
        body["manifest_sha256"] = seal_digest(body)
        return body


def seal_digest(body: dict[str, Any]) -> str:
    """sha256 of a manifest's canonical JSON, without its ``manifest_sha256`` key."""
    rest = {k: v for k, v in body.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_manifest(manifest: Manifest, directory: Path) -> None:
    """Write ``delta.json`` into ``directory`` (a directory that is itself written atomically)."""
    text = json.dumps(manifest.to_json(), separators=(",", ":"))
    (directory / MANIFEST_NAME).write_text(text + "\n")
