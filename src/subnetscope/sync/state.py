"""The tensors a sync side holds: names, tied names, and chunked access to their bits.

A model is an ``nn.Module`` (its ``state_dict``: parameters and persistent buffers, tied names included)
or a mapping of names to tensors. Names that share one tensor view (same storage, offset, shape and
strides: tied weights) are synced once, under the first name; the others are recorded as aliases.
Non-contiguous tensors are read and written through their own strides; tensors whose elements overlap
in memory (stride 0, e.g. ``expand``) are refused by name.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .bits import DTYPES, bits_view, wire_name
from .errors import SyncMismatchError, SyncStructureError

#: elements compared or copied per step (bounds the scratch buffers and the per-step cast)
CHUNK = 1 << 22


@dataclass(frozen=True)
class Layout:
    """What a state holds: canonical names → (dtype name, shape), and aliases → canonical name."""

    tensors: dict[str, tuple[str, tuple[int, ...]]]
    aliases: dict[str, str]

    def describe_difference(self, other: Layout) -> str:
        """A short message naming what differs from ``other``."""
        parts = []
        gone = sorted(set(self.tensors) - set(other.tensors))
        new = sorted(set(other.tensors) - set(self.tensors))
        moved = sorted(
            n for n in set(self.tensors) & set(other.tensors) if self.tensors[n] != other.tensors[n]
        )
        if gone:
            parts.append(f"{len(gone)} tensor(s) gone ({', '.join(gone[:3])})")
        if new:
            parts.append(f"{len(new)} new tensor(s) ({', '.join(new[:3])})")
        for n in moved[:3]:
            (d0, s0), (d1, s1) = self.tensors[n], other.tensors[n]
            parts.append(f"{n} changed from {d0}{list(s0)} to {d1}{list(s1)}")
        if self.aliases != other.aliases:
            parts.append("tied names differ")
        return "; ".join(parts) or "nothing"


def named_tensors(model: Any) -> dict[str, torch.Tensor]:
    """Name → tensor of an ``nn.Module`` (``state_dict``, sharing storage) or a mapping."""
    if isinstance(model, torch.nn.Module):
        return dict(model.state_dict())
    if isinstance(model, Mapping):
        out = {}
        for k, v in model.items():
            if not isinstance(k, str) or not isinstance(v, torch.Tensor):
                raise TypeError(f"a sync state maps names to tensors; {k!r} maps to {type(v).__name__}")
            out[k] = v
        return out
    raise TypeError(
        f"a sync model is an nn.Module or a mapping of names to tensors, not {type(model).__name__}"
    )


def _view_key(t: torch.Tensor) -> tuple[Any, ...]:
    return (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)


def canonical(named: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Split tied names off: ``(canonical name → tensor, alias → canonical name)``; refuses dtypes sync
    does not handle and tensors whose elements overlap."""
    first: dict[tuple[Any, ...], str] = {}
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for name, t in named.items():
        if t.dtype not in DTYPES:
            raise SyncStructureError(f"{name}: dtype {t.dtype} is not supported by sync", "cast or drop it")
        if any(st == 0 and sz > 1 for st, sz in zip(t.stride(), t.shape)):
            raise SyncStructureError(
                f"{name}: its elements overlap in memory (stride 0, e.g. from expand)",
                "sync a materialised copy (.contiguous()) or leave it out",
            )
        key = _view_key(t)
        if key in first and t.numel() > 0:
            aliases[name] = first[key]
        else:
            first[key] = name
            tensors[name] = t.detach()
    return tensors, aliases


def layout_of(
    tensors: Mapping[str, torch.Tensor], aliases: Mapping[str, str], dtype: torch.dtype | None
) -> Layout:
    """The :class:`Layout` of canonical tensors as sent in ``dtype`` (None: their own)."""
    return Layout(
        {n: (wire_name(dtype or t.dtype), tuple(t.shape)) for n, t in tensors.items()}, dict(aliases)
    )


def blocks(t: torch.Tensor, chunk: int = CHUNK) -> Iterator[tuple[int, torch.Tensor]]:
    """``(first flat position, contiguous 1-D block)`` covering ``t`` in row-major order: views of a
    contiguous tensor, copies of a few rows at a time of a non-contiguous one."""
    if t.dim() == 0:
        yield 0, t.reshape(1)
    elif t.is_contiguous():
        flat = t.view(-1)
        for a in range(0, flat.shape[0], chunk):
            yield a, flat[a : a + chunk]
    else:
        per_row = t[0].numel() if t.shape[0] else 0
        rows = max(1, chunk // max(1, per_row))
        for r in range(0, t.shape[0], rows):
            yield r * per_row, t[r : r + rows].contiguous().view(-1)


def gather(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The bits of ``t`` at flat positions ``idx`` (``idx`` on ``t``'s device)."""
    b = bits_view(t)
    if b.dim() == 0:
        return b.reshape(1)[idx]
    if b.is_contiguous():
        return b.view(-1)[idx]
    return b[torch.unravel_index(idx, b.shape)]


def scatter(t: torch.Tensor, idx: torch.Tensor, bits: torch.Tensor) -> None:
    """Write raw ``bits`` into ``t`` at flat positions ``idx``, in place (non-contiguous tensors too)."""
    b = bits_view(t)
    if b.dim() == 0:
        b.reshape(1)[idx] = bits
    elif b.is_contiguous():
        b.view(-1)[idx] = bits
    else:
        b[torch.unravel_index(idx, b.shape)] = bits


def check_layout(mine: Layout, theirs: Layout, where: str, side: str) -> None:
    """Raise :class:`SyncMismatchError` naming the tensors where ``mine`` (the receiver) cannot take
    ``theirs`` (the patch): every canonical tensor must exist with the same dtype and shape; a tied name
    of the patch must, where the receiver has it, be tied to the same tensor."""
    bad = []
    for n, spec in theirs.tensors.items():
        got = mine.tensors.get(n)
        if got is None:
            alias = mine.aliases.get(n)
            bad.append(
                f"{n} is missing" if alias is None else f"{n} is tied to {alias} here, not in the sender"
            )
        elif got != spec:
            bad.append(f"{n} is {got[0]}{list(got[1])} here, {spec[0]}{list(spec[1])} in the patch")
    for n in mine.tensors:
        if n not in theirs.tensors:
            alias = theirs.aliases.get(n)
            bad.append(
                f"{n} is not in the patch"
                if alias is None
                else f"{n} is tied to {alias} in the sender, not here"
            )
    for a, c in mine.aliases.items():
        if a in theirs.aliases and theirs.aliases[a] != c:
            bad.append(f"{a} is tied to {c} here, to {theirs.aliases[a]} in the sender")
    if bad:
        more = f" (+{len(bad) - 4} more)" if len(bad) > 4 else ""
        raise SyncMismatchError(
            f"{where}: the {side} does not hold the patch's tensors: {'; '.join(bad[:4])}{more}",
            "build the receiver on the same architecture (and dtype) as the sender",
        )
