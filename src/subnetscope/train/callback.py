"""``SubnetworkCallback``: subnetwork finetuning in any HF ``Trainer`` / TRL trainer.

The Trainer creates and wraps the optimizer (accelerate) before it fires ``on_train_begin``, whose keyword
arguments carry ``model`` and ``optimizer``; the callback loads the mask there and attaches it. Gradients are
then masked inside ``backward`` (before ``Trainer._clip_grad_norm``, which runs after the last micro-batch's
backward and before ``optimizer.step()``), and frozen entries are restored by an optimizer step post-hook
inside ``optimizer.step()``, so every later callback, save and evaluation sees the frozen entries unchanged.
At ``on_train_end`` the callback checks that every frozen element still has its initial bits.
"""

from __future__ import annotations

import os
from typing import Any

from transformers import TrainerCallback

from ..errors import SubnetscopeError, UsageError
from .hooks import MaskHandle
from .mask import SubnetworkMask
from .support import check_trainer_args


class FrozenEntriesChangedError(SubnetscopeError):
    """Frozen entries no longer hold their initial bits (something outside the optimizer wrote them)."""


class SubnetworkCallback(TrainerCallback):
    """Train only the mask's subnetwork: ``callbacks=[SubnetworkCallback("run1.mask")]``.

    Args:
        mask: a mask file path (True = trainable), or an already loaded :class:`SubnetworkMask`.
        check_content: verify that the trainer's model holds the mask's base weights (see
            :meth:`SubnetworkMask.load`).
        uncovered: what to do with trainable parameters the mask does not cover (``"error"``, ``"freeze"``,
            ``"train"``).
        verify: at the end of training, raise :class:`FrozenEntriesChangedError` if any frozen element's bits
            differ from the start.
    """

    def __init__(
        self,
        mask: str | os.PathLike[str] | SubnetworkMask,
        *,
        check_content: bool = True,
        uncovered: str = "error",
        verify: bool = True,
    ) -> None:
        self.mask_source = mask
        self.check_content = check_content
        self.uncovered = uncovered
        self.verify = verify
        self.mask: SubnetworkMask | None = mask if isinstance(mask, SubnetworkMask) else None
        self.handle: MaskHandle | None = None
        #: frozen elements found changed at the end of training (0: the guarantee held)
        self.changed_frozen: int | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Load the mask onto the trainer's model and attach it to its optimizer."""
        if self.handle is not None:
            return
        check_trainer_args(args)
        model, optimizer = kwargs.get("model"), kwargs.get("optimizer")
        if model is None or optimizer is None:
            raise UsageError(
                "the trainer passed no model or optimizer to SubnetworkCallback.on_train_begin",
                "use a transformers Trainer (>= 4.44) or attach the mask yourself with SubnetworkMask.attach",
            )
        if self.mask is None:
            assert not isinstance(self.mask_source, SubnetworkMask)
            # a resumed run starts from trained weights, not from the mask's base: skip the content check
            resumed = int(getattr(state, "global_step", 0) or 0) > 0
            self.mask = SubnetworkMask.load(
                self.mask_source,
                model,
                check_content=self.check_content and not resumed,
                uncovered=self.uncovered,
            )
        self.handle = self.mask.attach(model, optimizer)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Check that frozen entries kept their bits, then remove the hooks."""
        if self.handle is None:
            return
        bad = self.handle.verify() if self.verify else 0
        self.changed_frozen = bad
        self.handle.remove()
        self.handle = None
        if bad:
            raise FrozenEntriesChangedError(
                f"{bad} frozen element(s) of the subnetwork mask changed during training",
                "something other than the optimizer wrote the weights (another callback, EMA, weight loading); "
                "report it with your trainer setup",
            )
