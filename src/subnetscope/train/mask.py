"""The subnetwork to train: a read-only mapping from parameter name to a boolean tensor (True = trainable)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MaskMismatchError, UsageError
from .names import canonical, model_fingerprint, model_parameters, resolve

if TYPE_CHECKING:
    import torch

    from .hooks import MaskHandle

UNCOVERED = ("error", "freeze", "train")


class SubnetworkMask(Mapping[str, "torch.Tensor"]):
    """Which elements of each parameter may change during training.

    Keys are the model's ``named_parameters()`` names; values are ``torch.bool`` tensors of the parameter's
    shape, on its device (True = trainable). Build one with :meth:`load` (from a mask file, e.g. the
    subnetwork of a full finetuning run made by ``subnetscope mask BASE FULL -o run.mask``) or directly from
    tensors; then :meth:`attach` it to a model and its optimizer.
    """

    def __init__(self, model: Any, masks: Mapping[str, torch.Tensor], source: str = "<tensors>") -> None:
        """``masks``: parameter name (as ``model.named_parameters()`` names it) → bool tensor of its shape."""
        import torch

        params = dict(model.named_parameters())
        self.source = source
        self._masks: dict[str, torch.Tensor] = {}
        for name, m in masks.items():
            p = params.get(name)
            if p is None:
                raise MaskMismatchError(
                    f"{source}: {name!r} is not a parameter of the model",
                    "name parameters as model.named_parameters() does",
                )
            if tuple(m.shape) != tuple(p.shape):
                raise MaskMismatchError(
                    f"{source}: mask of {name!r} has shape {list(m.shape)}, the parameter {list(p.shape)}",
                    "use the mask made for this model",
                )
            self._masks[name] = m.to(device=p.device, dtype=torch.bool)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        model: Any,
        *,
        check_content: bool = True,
        uncovered: str = "error",
    ) -> SubnetworkMask:
        """Read a mask file and map it onto ``model``'s parameters (True in the file = trainable).

        Names are matched through wrapper prefixes (``module.``, ``_orig_mod.``, PEFT's ``base_model.model.``
        and ``.base_layer``) and a missing or extra ``model.`` prefix; a tied parameter named twice in the
        file (``lm_head.weight`` and ``model.embed_tokens.weight``) is trainable where either mask is True.

        Args:
            check_content: verify that the model's current weights are the mask's base (the fingerprint the
                mask file records, computed on the weights cast to the base's dtypes). Pass False only to
                start deliberately from other weights of the same architecture (e.g. a later checkpoint).
            uncovered: what to do with trainable parameters (``requires_grad``) the file does not cover:
                ``"error"`` (default), ``"freeze"`` (keep them fixed) or ``"train"`` (leave them free, e.g.
                new LoRA adapters or a value head).

        Raises:
            MaskFormatError: the file is missing, damaged or not a mask.
            MaskMismatchError: the model lacks a tensor of the mask, a shape differs, the weights are not
                the mask's base, or a trainable parameter is not covered (``uncovered="error"``).
        """
        import torch

        from ..maskfile import MaskFile

        if uncovered not in UNCOVERED:
            raise UsageError(
                f"uncovered={uncovered!r} is not one of {UNCOVERED}", "use 'error', 'freeze' or 'train'"
            )
        mf = MaskFile(path)
        where = str(Path(path))
        params, primary = model_parameters(model)
        # persistent buffers a checkpoint may hold (e.g. old rotary ``inv_freq``): matched and fingerprinted,
        # never trained
        tensors = {canonical(n): b for n, b in model.named_buffers()}
        tensors.update(params)
        mapping = resolve(mf.shapes, tensors, where)
        for k, m in mapping.items():
            shape = tuple(tensors[m].shape)
            if shape != tuple(mf.shapes[k]):
                raise MaskMismatchError(
                    f"{where}: tensor {k!r} has shape {list(mf.shapes[k])} in the mask but "
                    f"{list(shape)} in the model",
                    "use the mask made for this model (same architecture and vocabulary)",
                )
        if check_content:
            fp = model_fingerprint({k: tensors[m] for k, m in mapping.items()}, mf.shapes, mf.dtypes)
            mf.check_base(fp, what=f"the given model ({type(model).__name__})")
        masks: dict[str, torch.Tensor] = {}
        for k, m in mapping.items():
            if m not in params:
                continue  # a buffer
            name = primary[m]
            t = mf.torch(k).to(params[m].device)
            masks[name] = masks[name] | t if name in masks else t
        named = dict(model.named_parameters())
        for name, p in named.items():
            if name in masks or not p.requires_grad:
                continue
            if uncovered == "error":
                raise MaskMismatchError(
                    f"{where}: trainable parameter {name!r} is not covered by the mask",
                    "pass uncovered='freeze' or 'train' to say what to do with it, or freeze it "
                    "(requires_grad_(False))",
                )
            masks[name] = torch.full_like(p, uncovered == "train", dtype=torch.bool)
        return cls(model, masks, source=where)

    # Mapping ------------------------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> torch.Tensor:
        return self._masks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    # summary ------------------------------------------------------------------------------------------------
    @property
    def numel(self) -> int:
        """Elements covered."""
        return sum(int(m.numel()) for m in self._masks.values())

    @property
    def trainable(self) -> int:
        """Trainable elements."""
        import torch

        return sum(int(torch.count_nonzero(m)) for m in self._masks.values())

    @property
    def density(self) -> float:
        """Share of covered elements that are trainable."""
        n = self.numel
        return self.trainable / n if n else 0.0

    def __repr__(self) -> str:
        return (
            f"SubnetworkMask({self.source!r}, {len(self)} parameters, {self.trainable:,} of {self.numel:,} "
            f"trainable ({100 * self.density:.2f}%))"
        )

    def attach(self, model: Any, optimizer: Any, *, layout: str = "auto") -> MaskHandle:
        """Freeze everything outside the mask during training of ``model`` with ``optimizer``.

        Installs per-parameter gradient hooks (gradients are multiplied by the mask during ``backward``,
        before accumulation, clipping and the optimizer) and an optimizer step post-hook that puts frozen
        entries back to their saved values, so weight decay and optimizer state cannot move them either.
        Returns a :class:`~subnetscope.train.hooks.MaskHandle` (``remove()``, ``verify()``).

        ``layout``: how frozen entries are stored: ``"bitwise"`` (integer masks, fastest, twice the
        parameters' bytes), ``"compact"`` (a boolean mask and the frozen values only), or ``"auto"``
        (bitwise on CPU, compact on accelerators, where boolean kernels are as fast).

        Raises:
            UnsupportedSetupError: DeepSpeed, FSDP, DTensor parameters, or an optimizer over other tensors.
        """
        from .hooks import MaskHandle

        return MaskHandle(self, model, optimizer, layout=layout)
