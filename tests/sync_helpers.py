"""Helpers for the sync tests: states with known changes, bit-level equality."""

from __future__ import annotations

import torch

from subnetscope import sync

VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bits of ``t`` (a contiguous integer copy)."""
    t = t.contiguous()
    return t.view(torch.uint8) if t.dtype == torch.bool else t.view(VIEW[t.element_size()])


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two tensors hold identical bits (NaN payloads and signed zeros included)."""
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(bits(a), bits(b))


def n_differ(a: torch.Tensor, b: torch.Tensor) -> int:
    """How many elements differ in any bit."""
    return int((bits(a) != bits(b)).sum())


def clone_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Independent copies (same strides for non-contiguous tensors, ties kept)."""
    out: dict[str, torch.Tensor] = {}
    seen: dict[int, torch.Tensor] = {}
    for k, v in state.items():
        key = id(v)
        if key in seen:
            out[k] = seen[key]
            continue
        c = (
            torch.empty_strided(v.shape, v.stride(), dtype=v.dtype)
            if v.dim()
            else torch.empty((), dtype=v.dtype)
        )
        c.copy_(v)
        seen[key] = out[k] = c
    return out


def special_bf16(n: int, g: torch.Generator) -> torch.Tensor:
    """bf16 values mixing normals, ±0, subnormals, ±inf and NaNs with several payloads."""
    pool = torch.tensor(
        [
            0x0000,
            0x8000,
            0x0001,
            0x8001,
            0x007F,
            0x807F,
            0x7F80,
            0xFF80,
            0x7FC0,
            0xFFC1,
            0x7F81,
            0x7FFF,
            0x3F80,
            0xBF80,
        ],
        dtype=torch.int32,
    ).to(torch.int16)
    rnd = torch.randint(-32768, 32767, (n,), generator=g, dtype=torch.int32).to(torch.int16)
    pick = torch.randint(0, pool.numel(), (n,), generator=g)
    use_pool = torch.rand(n, generator=g) < 0.5
    return torch.where(use_pool, pool[pick], rnd).view(torch.bfloat16)


def sync_once(sender: sync.Sender, receiver: sync.Receiver, **kw) -> sync.Patch:
    """diff → bytes → parse → apply; returns the parsed patch."""
    patch = sync.Patch.from_bytes(sender.diff().to_bytes())
    receiver.apply(patch, **kw)
    return patch
