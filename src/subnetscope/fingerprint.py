"""Fingerprint of a model: names, shapes, dtypes, and a hash of sampled content.

Masks and deltas record the fingerprint of the base they were made against, so that they are never
applied to another model without a clear error. The structure hash covers every tensor's name, shape and
dtype; the content hash covers, for every tensor, a few fixed windows of its raw bits (the first, the last
and evenly spaced ones), which tells apart two checkpoints of the same architecture with overwhelming
probability while reading only a few KiB per tensor.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from .io.checkpoint import Checkpoint
from .io.reader import ChunkReader, FileHandles

WINDOW = 256  #: elements per sampled window
WINDOWS = 8  #: windows per tensor (evenly spaced, first and last included)

#: reads ``count`` raw-bit elements from ``start``
BitsReader = Callable[[int, int], np.ndarray]


@dataclass(frozen=True)
class Fingerprint:
    """Identity of a model's tensors."""

    structure: str  #: sha256 of the sorted (name, shape, dtype) list
    content: str  #: sha256 of sampled raw bits
    tensors: int
    numel: int

    def to_json(self) -> dict[str, object]:
        """JSON form."""
        return {
            "structure": self.structure,
            "content": self.content,
            "tensors": self.tensors,
            "numel": self.numel,
        }

    @classmethod
    def from_json(cls, obj: dict[str, object]) -> Fingerprint:
        """Inverse of :meth:`to_json`."""
        return cls(str(obj["structure"]), str(obj["content"]), int(obj["tensors"]), int(obj["numel"]))  # type: ignore[call-overload]

    def short(self) -> str:
        """Twelve hex digits for messages."""
        return hashlib.sha256((self.structure + self.content).encode()).hexdigest()[:12]


def windows(numel: int) -> list[tuple[int, int]]:
    """The (start, count) windows sampled from a tensor of ``numel`` elements."""
    if numel <= WINDOW * WINDOWS:
        return [(0, numel)] if numel else []
    last = numel - WINDOW
    starts = sorted({round(i * last / (WINDOWS - 1)) for i in range(WINDOWS)})
    return [(s, WINDOW) for s in starts]


def compute(entries: Iterable[tuple[str, tuple[int, ...], str, BitsReader]]) -> Fingerprint:
    """Fingerprint from ``(name, shape, dtype_code, read_bits)`` entries (any order)."""
    items = sorted(entries, key=lambda e: e[0])
    struct = hashlib.sha256()
    content = hashlib.sha256()
    numel = 0
    for name, shape, code, read in items:
        struct.update(json.dumps([name, list(shape), code]).encode())
        n = int(np.prod(shape, dtype=np.int64)) if shape else 1
        numel += n
        content.update(name.encode())
        for s, c in windows(n):
            content.update(np.ascontiguousarray(read(s, c)).tobytes())
    return Fingerprint(struct.hexdigest(), content.hexdigest(), len(items), numel)


def of_checkpoint(ck: Checkpoint, names: Iterable[str] | None = None) -> Fingerprint:
    """Fingerprint of the tensors of a checkpoint on disk (all, or the given names)."""
    chosen = list(ck.tensors) if names is None else list(names)
    with FileHandles() as h:
        reader = ChunkReader(h, WINDOW * 8)

        def entry(name: str) -> tuple[str, tuple[int, ...], str, BitsReader]:
            info = ck.tensors[name]
            return name, info.shape, info.dtype.code, lambda s, c: reader.read(info, s, c).copy()

        return compute(entry(n) for n in chosen)
