"""The hooks that keep frozen entries byte-identical while a model trains.

Two mechanisms, because masking gradients alone is not enough:

1. a gradient hook on every partly frozen parameter zeroes the frozen entries of the gradient during
   ``backward`` (in place on ``.grad`` after each accumulation; under DDP, on the incoming gradient before
   accumulation and reduction), so gradient clipping (the norm is the masked one) and the optimizer see
   masked gradients only. A fully frozen parameter's ``.grad`` is set to ``None`` (under DDP: zero), so the
   optimizer skips it;
2. an optimizer step post-hook (registered first, so other post-hooks such as the
   :class:`~subnetscope.train.UpdateTracker` see the restored values) writes the saved frozen values back,
   because decoupled weight decay (AdamW), momentum, and Adam moments with history move entries whose
   gradient is zero.

Two storage layouts, chosen per parameter (``layout="auto"``: bitwise on CPU, compact elsewhere):

- ``"bitwise"``: an integer mask of the parameter's width (all ones where trainable) and the saved bits
  (zero where trainable); masking is ``grad_bits &= keep`` and the restore ``bits = bits & keep | saved``,
  plain vectorised integer passes (on CPU several times faster than boolean-mask kernels). Memory: twice the
  parameter's bytes;
- ``"compact"``: a boolean frozen mask and the frozen values only (``masked_fill_`` / ``masked_scatter_``).
  Memory: one byte per element plus ``itemsize`` per frozen element.

Fully trainable parameters cost nothing; a fully frozen one costs a copy of itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import UsageError
from .support import check_model, check_optimizer

if TYPE_CHECKING:
    import torch


class MaskSource(Protocol):
    """What the hooks need of a mask (a :class:`~subnetscope.train.mask.SubnetworkMask`): its tensor by name."""

    def get(self, name: str) -> torch.Tensor | None:
        """The mask of parameter ``name`` (nonzero = trainable), or None when the mask does not cover it."""
        ...


_INT_VIEW = {1: "uint8", 2: "int16", 4: "int32", 8: "int64"}
LAYOUTS = ("auto", "bitwise", "compact")


def int_dtype(t: torch.Tensor) -> torch.dtype:
    """The integer dtype of ``t``'s element width."""
    import torch

    dt: torch.dtype = getattr(torch, _INT_VIEW[t.element_size()])
    return dt


def bits_view(t: torch.Tensor) -> torch.Tensor:
    """``t`` viewed as integers of the same width (bitwise comparison, -0 ≠ +0, NaN = NaN of same bits)."""
    return t.view(int_dtype(t))


@dataclass
class _Entry:
    name: str
    param: torch.Tensor
    frozen_count: int
    #: fully frozen: a copy of the tensor; compact: the frozen values; bitwise: the bits, zero where trainable
    saved: torch.Tensor
    frozen: torch.Tensor | None = None  #: compact layout: bool, True = frozen
    keep: torch.Tensor | None = None  #: bitwise layout: integer mask, all ones where trainable

    @property
    def nbytes(self) -> int:
        extra = 0
        if self.frozen is not None:
            extra = self.frozen.numel()
        if self.keep is not None:
            extra = self.keep.numel() * self.keep.element_size()
        return self.saved.numel() * self.saved.element_size() + extra


class MaskHandle:
    """What :meth:`SubnetworkMask.attach` installed; ``remove()`` uninstalls it (also as a context manager)."""

    def __init__(self, mask: MaskSource, model: Any, optimizer: Any, layout: str = "auto") -> None:
        import torch

        if layout not in LAYOUTS:
            raise UsageError(
                f"layout={layout!r} is not one of {LAYOUTS}", "use 'auto', 'bitwise' or 'compact'"
            )
        check_model(model)
        self.optimizer = check_optimizer(optimizer, model.parameters())
        self.entries: list[_Entry] = []
        self._handles: list[Any] = []
        # Outside torch.distributed the mask is applied in place to the accumulated ``.grad``
        # (``register_post_accumulate_grad_hook``: no extra allocation, which on CPU costs more than the
        # masking itself). Under DDP the incoming gradient is masked out of place before accumulation
        # (``register_hook``), so the reducer, whose hooks run on accumulation too, only ever sees masked
        # gradients, and fully frozen parameters keep a zero gradient, as the reducer expects.
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        with torch.no_grad():
            for name, p in model.named_parameters():
                m = mask.get(name)
                if m is None or not p.requires_grad:
                    continue
                n_train = int(torch.count_nonzero(m))
                if n_train == m.numel():
                    continue
                if n_train == 0:
                    self.entries.append(_Entry(name, p, p.numel(), p.detach().clone()))
                    if distributed:
                        self._handles.append(p.register_hook(_zero_grad))
                    else:
                        self._handles.append(p.register_post_accumulate_grad_hook(_drop_grad))
                    continue
                frozen = ~m
                bitwise = layout == "bitwise" or (layout == "auto" and p.device.type == "cpu")
                if bitwise:
                    it = int_dtype(p)
                    keep = m.to(it).neg_()  # -1: every bit set
                    saved = bits_view(p.detach()) & ~keep
                    e = _Entry(name, p, m.numel() - n_train, saved, keep=keep)
                    pre, post = _and_bits(keep), _and_grad_bits(keep)
                else:
                    e = _Entry(name, p, m.numel() - n_train, p.detach()[frozen].clone(), frozen=frozen)
                    pre, post = _mul_by(m), _fill_frozen(frozen)
                self.entries.append(e)
                if distributed:
                    self._handles.append(p.register_hook(pre))
                else:
                    self._handles.append(p.register_post_accumulate_grad_hook(post))
        h = self.optimizer.register_step_post_hook(lambda opt, args, kwargs: self.restore())
        hooks = getattr(self.optimizer, "_optimizer_step_post_hooks", None)
        if hooks is not None and hasattr(hooks, "move_to_end"):
            hooks.move_to_end(h.id, last=False)
        self._handles.append(h)
        self.steps = 0

    @property
    def frozen(self) -> int:
        """Frozen elements (of parameters that require gradients)."""
        return sum(e.frozen_count for e in self.entries)

    @property
    def memory_bytes(self) -> int:
        """Extra memory held: saved frozen values and the masks in their layout."""
        return sum(e.nbytes for e in self.entries)

    def restore(self) -> None:
        """Write the saved values back into every frozen entry (what the step post-hook does)."""
        import torch

        with torch.no_grad():
            for e in self.entries:
                if e.keep is not None:
                    bits_view(e.param.detach()).bitwise_and_(e.keep).bitwise_or_(e.saved)
                elif e.frozen is not None:
                    e.param.masked_scatter_(e.frozen, e.saved)
                else:
                    e.param.copy_(e.saved)
        self.steps += 1

    def verify(self) -> int:
        """Number of frozen elements whose bits differ from the start (0 when the guarantee holds)."""
        import torch

        bad = 0
        with torch.no_grad():
            for e in self.entries:
                now = bits_view(e.param.detach())
                if e.keep is not None:
                    bad += int(torch.count_nonzero((now & ~e.keep) != e.saved))
                elif e.frozen is not None:
                    bad += int(torch.count_nonzero(now[e.frozen] != bits_view(e.saved)))
                else:
                    bad += int(torch.count_nonzero(now != bits_view(e.saved)))
        return bad

    def remove(self) -> None:
        """Uninstall every hook (parameters keep their current values)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __enter__(self) -> MaskHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def _and_bits(keep: torch.Tensor) -> Any:
    def hook(grad: torch.Tensor) -> torch.Tensor:
        return (bits_view(grad) & keep).view(grad.dtype)

    return hook


def _and_grad_bits(keep: torch.Tensor) -> Any:
    def hook(param: torch.Tensor) -> None:
        if param.grad is not None:
            bits_view(param.grad).bitwise_and_(keep)

    return hook


def _mul_by(mask: torch.Tensor) -> Any:
    def hook(grad: torch.Tensor) -> torch.Tensor:
        return grad * mask

    return hook


def _fill_frozen(frozen: torch.Tensor) -> Any:
    def hook(param: torch.Tensor) -> None:
        if param.grad is not None:
            param.grad.masked_fill_(frozen, 0)

    return hook


def _zero_grad(grad: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.zeros_like(grad)


def _drop_grad(param: torch.Tensor) -> None:
    param.grad = None
