"""The per-parameter sets an :class:`~subnetscope.train.tracker.UpdateTracker` keeps (ever changed, ever
given a gradient) and how they add up into the never updated / cancelled / final split."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass
class Tracked:
    """One tracked parameter: its tensor, its initial and previous values, and its two running sets."""

    name: str  #: canonical (checkpoint) name
    param: torch.Tensor
    init: torch.Tensor
    prev: torch.Tensor
    ever_grad: torch.Tensor
    ever_changed: torch.Tensor


_SPLIT_KEYS = ("never_updated", "cancelled", "final_subnetwork", "never_grad", "grad_cancelled",
               "final_without_grad")  # fmt: skip


def split_of(t: Tracked, final: torch.Tensor) -> dict[str, int]:
    """The split of one parameter, given its final-subnetwork set."""
    import torch

    nf = ~final
    return {
        "never_updated": int(torch.count_nonzero(~t.ever_changed & nf)),
        "cancelled": int(torch.count_nonzero(t.ever_changed & nf)),
        "final_subnetwork": int(torch.count_nonzero(final)),
        "never_grad": int(torch.count_nonzero(~t.ever_grad & nf)),
        "grad_cancelled": int(torch.count_nonzero(t.ever_grad & nf)),
        "final_without_grad": int(torch.count_nonzero(~t.ever_grad & final)),
        "numel": int(final.numel()),
    }


def add_splits(parts: Any) -> dict[str, int]:
    """The sum of several splits."""
    out = dict.fromkeys((*_SPLIT_KEYS, "numel"), 0)
    for p in parts:
        for k in out:
            out[k] += p[k]
    return out


def with_shares(sp: dict[str, int]) -> dict[str, Any]:
    """A split with each count's share of ``numel``."""
    n = sp["numel"]
    return {**sp, "shares": {k: sp[k] / n if n else None for k in _SPLIT_KEYS}}


def code_for(dtype: Any) -> str | None:
    """The safetensors dtype code of a torch dtype (None for None)."""
    if dtype is None:
        return None
    from ..dtypes import TORCH_TO_CODE

    return TORCH_TO_CODE[str(dtype).removeprefix("torch.")]


def total_count(parts: list[Any]) -> int:
    """Sum of 0-d count tensors, with one device sync per device."""
    if not parts:
        return 0
    import torch

    by_dev: dict[Any, list[Any]] = {}
    for x in parts:
        by_dev.setdefault(x.device, []).append(x)
    return sum(int(torch.stack(v).sum()) for v in by_dev.values())
