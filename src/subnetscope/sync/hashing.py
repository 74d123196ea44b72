"""Per-tensor hashes that a patch updates in O(changed elements), and the whole-model digest.

A tensor's hash is ``sum_i mix(bits_i + i * GOLDEN) mod 2**64`` over its elements in row-major order,
``mix`` being the splitmix64 finaliser: a position-keyed sum (an additive multiset hash), so replacing
``k`` values moves the hash by ``sum mix(new) - sum mix(old)`` over those ``k`` positions alone. That lets
the sender stamp every patch with the hashes of its new state and the receiver check a patch's result
before writing it, both without reading the unchanged elements. A full pass (:func:`tensor_hash`) is
what :meth:`~subnetscope.sync.Receiver.digest` and ``apply(verify=True)`` use to prove what a receiver
holds. It is a checksum against bugs, damage and mix-ups, not a cryptographic MAC; the whole-model digest
is a sha256 over every tensor's name, dtype, shape and hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..kernels.jit import AVAILABLE as _NUMBA
from ..kernels.jit import LazyJit
from .bits import bits_view
from .state import blocks

GOLDEN = 0x9E3779B97F4A7C15
_C1 = 0xBF58476D1CE4E5B9
_C2 = 0x94D049BB133111EB
#: elements hashed per step of the torch path (bounds its int64 temporaries)
CHUNK = 1 << 20


def mix_np(i: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``mix(u + i * GOLDEN)`` for positions ``i`` (int64) and bit patterns ``u`` (uint64)."""
    with np.errstate(over="ignore"):
        z = u.astype(np.uint64) + i.astype(np.uint64) * np.uint64(GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_C1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_C2)
        out: np.ndarray = z ^ (z >> np.uint64(31))
    return out


def delta(i: np.ndarray, old: np.ndarray, new: np.ndarray) -> int:
    """How a tensor's hash moves when the values at positions ``i`` go from ``old`` to ``new``."""
    with np.errstate(over="ignore"):
        d = np.sum(mix_np(i, new), dtype=np.uint64) - np.sum(mix_np(i, old), dtype=np.uint64)
    return int(d)


def add(h: int, d: int) -> int:
    """``h + d`` modulo ``2**64``."""
    return (h + d) & 0xFFFFFFFFFFFFFFFF


def _signed(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


def _srl(z: torch.Tensor, s: int) -> torch.Tensor:
    return (z >> s) & ((1 << (64 - s)) - 1)


def _hash_torch(flat: torch.Tensor, start: int) -> int:
    """The hash of a contiguous 1-D bits tensor (any device) whose first element has position ``start``."""
    total = torch.zeros((), dtype=torch.int64, device=flat.device)
    mask = (1 << (8 * flat.element_size())) - 1
    for a in range(0, flat.shape[0], CHUNK):
        part = flat[a : a + CHUNK].to(torch.int64) & mask
        pos = torch.arange(start + a, start + a + part.shape[0], dtype=torch.int64, device=flat.device)
        z = part + pos * _signed(GOLDEN)
        z = (z ^ _srl(z, 30)) * _signed(_C1)
        z = (z ^ _srl(z, 27)) * _signed(_C2)
        z = z ^ _srl(z, 31)
        total += z.sum()
    return int(total.item()) & 0xFFFFFFFFFFFFFFFF


def _hash_nb(u: Any, start: int) -> int:  # pragma: no cover - jitted
    h = np.uint64(0)
    g = np.uint64(GOLDEN)
    c1 = np.uint64(_C1)
    c2 = np.uint64(_C2)
    for j in range(u.shape[0]):
        z = np.uint64(u[j]) + np.uint64(start + j) * g
        z = (z ^ (z >> np.uint64(30))) * c1
        z = (z ^ (z >> np.uint64(27))) * c2
        h += z ^ (z >> np.uint64(31))
    return h


_jit = LazyJit(globals(), kernels={"hash": _hash_nb})


_UNSIGNED = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _hash_flat(flat: torch.Tensor, start: int) -> int:
    if flat.device.type == "cpu" and _NUMBA:
        u = flat.numpy().view(_UNSIGNED[flat.element_size()])
        return int(_jit().hash(u, start))
    return _hash_torch(flat, start)


def tensor_hash(t: torch.Tensor, dtype: torch.dtype | None = None) -> int:
    """The hash of a tensor's bits, or of its cast to ``dtype``: a full pass, a block at a time (so
    non-contiguous tensors and casts need no full-size copy)."""
    h = 0
    src = t.detach()
    for start, blk in blocks(src):
        b = blk if dtype is None or blk.dtype == dtype else blk.to(dtype)
        h = add(h, _hash_flat(bits_view(b), start))
    return h


def hex64(h: int) -> str:
    """Sixteen hex digits."""
    return f"{h:016x}"


def model_digest(entries: Mapping[str, tuple[str, tuple[int, ...], int]]) -> str:
    """sha256 (32 hex digits) over every tensor's ``(name, dtype, shape, hash)``, sorted by name."""
    rows = [[n, d, list(s), hex64(h)] for n, (d, s, h) in sorted(entries.items())]
    return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Digest:
    """What a model holds: a whole-model digest and every tensor's hash (16 hex digits), by name.

    Two digests are equal exactly when every tensor has the same name, dtype, shape and hash.
    """

    model: str
    tensors: Mapping[str, str]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Digest):
            return NotImplemented
        return self.model == other.model and dict(self.tensors) == dict(other.tensors)

    def __hash__(self) -> int:
        return hash(self.model)

    def differing(self, other: Digest) -> list[str]:
        """Names whose hashes differ (or that only one side has), sorted."""
        names = set(self.tensors) | set(other.tensors)
        return sorted(n for n in names if self.tensors.get(n) != other.tensors.get(n))
