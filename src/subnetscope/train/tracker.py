"""Record, during training, which weights got gradients and which the optimizer changed (paper Figure 2).

:class:`UpdateTracker` hooks the optimizer (``register_step_pre_hook`` / ``register_step_post_hook``): before
each step it notes which elements have a non-zero gradient and copies the weights; after the step it
compares the raw bits. It keeps, per parameter, the initial weights, the pre-step copy, and two boolean
tensors (ever got a non-zero gradient, ever changed by a step): about twice the parameters' bytes plus two
bytes per parameter. Every ``every`` steps it also counts the weights that differ from the initial ones
(bitwise, and ``|w - w0| > tol`` for each tolerance, computed exactly in float64).

It is a ``transformers.TrainerCallback`` too: pass it in ``callbacks=[...]`` of any HF / TRL trainer; it
attaches at ``on_train_begin``, adds its scalars to the trainer's logs (``subnet/...``), and writes its
files at ``on_train_end``.

Output (:meth:`UpdateTracker.save`): ``tracker.json`` (``"report": "subnetscope.tracker"``; see
docs/train.md for the keys) and ``ever_changed.mask`` (the mask file of every element some step changed,
with the fingerprint of the initial weights, loadable by :class:`SubnetworkMask` and ``subnetscope overlap``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__, validate
from ..errors import UsageError
from .hooks import bits_view
from .names import canonical, dtype_code, model_fingerprint
from .support import check_model, check_optimizer
from .tracker_sets import Tracked, add_splits, code_for, split_of, total_count, with_shares

if TYPE_CHECKING:
    import torch

try:  # the tracker is a TrainerCallback when transformers is installed, a plain object otherwise
    from transformers import TrainerCallback as _CallbackBase
except ImportError:  # pragma: no cover - transformers is part of the train extra
    _CallbackBase = object  # type: ignore[assignment,misc]

REPORT_KIND = "subnetscope.tracker"
SCHEMA_VERSION = "1.0"
MASK_SETS = ("ever_changed", "ever_grad", "final")


class UpdateTracker(_CallbackBase):
    """Which weights ever got a gradient, which ever changed, per-step and vs-initial sparsity.

    Plain PyTorch: ``tracker = UpdateTracker(out_dir).attach(model, optimizer)``, train, ``tracker.save()``.
    HF Trainer / TRL: ``callbacks=[UpdateTracker(out_dir)]`` (files written at the end of training;
    ``out_dir`` defaults to ``<args.output_dir>/subnetscope``). For TensorBoard / W&B to show the scalars,
    the tracker must run before the reporting callbacks: call :meth:`install` on the trainer instead.

    Args:
        output_dir: where :meth:`save` writes ``tracker.json`` and ``ever_changed.mask``.
        every: count changes against the initial weights every this many steps (and at the end).
        tolerances: tolerances of the vs-initial counts (|w - w0| <= tol is unchanged), besides bit identity.
        base_dtype: dtype the initial weights are fingerprinted in (for the mask file); set it to
            ``torch.bfloat16`` when training fp32 copies of a bf16 checkpoint so the mask matches masks made
            from the checkpoints. Default: each parameter's own dtype.
        log_prefix: prefix of the scalars added to the trainer's logs.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike[str] | None = None,
        *,
        every: int = 10,
        tolerances: Sequence[float] = (1e-5,),
        base_dtype: Any = None,
        log_prefix: str = "subnet/",
    ) -> None:
        every = validate.int_range(every, "every")
        tolerances = validate.tolerances(tolerances)
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.every = int(every)
        self.tolerances = [float(t) for t in tolerances]
        self.base_dtype = base_dtype
        self.log_prefix = log_prefix
        self.tracked: list[Tracked] = []
        self.steps: list[dict[str, Any]] = []
        self._handles: list[Any] = []
        self._pending_grad: int = 0
        self._last_vs_init: dict[str, Any] = {}
        self._saved_to: Path | None = None
        self._buffers: dict[Any, torch.Tensor] = {}

    # plain PyTorch API ---------------------------------------------------------------------------------------
    def attach(self, model: Any, optimizer: Any) -> UpdateTracker:
        """Start tracking ``model``'s trainable parameters through ``optimizer``'s steps; returns ``self``."""
        import torch

        if self._handles or self.tracked:
            raise UsageError(
                "this UpdateTracker is already attached or has tracked a run",
                "create one tracker per training run",
            )
        check_model(model)
        inner = check_optimizer(optimizer, model.parameters())
        with torch.no_grad():
            for name, p in model.named_parameters():
                if not p.requires_grad:
                    continue
                init = p.detach().clone()
                self.tracked.append(
                    Tracked(
                        canonical(name),
                        p,
                        init,
                        torch.empty_like(init),
                        torch.zeros(p.shape, dtype=torch.bool, device=p.device),
                        torch.zeros(p.shape, dtype=torch.bool, device=p.device),
                    )
                )
        if not self.tracked:
            raise UsageError("the model has no trainable parameters to track", "check requires_grad")
        self._handles.append(inner.register_step_pre_hook(lambda opt, a, k: self._before_step()))
        self._handles.append(inner.register_step_post_hook(lambda opt, a, k: self._after_step()))
        return self

    def detach(self) -> None:
        """Stop tracking (what was recorded is kept)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    @property
    def numel(self) -> int:
        """Elements tracked."""
        return sum(t.param.numel() for t in self.tracked)

    def _scratch(self, t: Tracked) -> torch.Tensor:
        """A reusable bool buffer of ``t``'s shape (one per device, as large as the largest parameter)."""
        import torch

        buf = self._buffers.get(t.param.device)
        n = t.param.numel()
        if buf is None or buf.numel() < n:
            size = max(x.param.numel() for x in self.tracked if x.param.device == t.param.device)
            buf = torch.empty(size, dtype=torch.bool, device=t.param.device)
            self._buffers[t.param.device] = buf
        return buf[:n].view(t.param.shape)

    def _before_step(self) -> None:
        import torch

        sums = []
        with torch.no_grad():
            for t in self.tracked:
                g = t.param.grad
                if g is not None:
                    nz = torch.ne(g, 0, out=self._scratch(t))
                    t.ever_grad |= nz
                    sums.append(torch.count_nonzero(nz))
                t.prev.copy_(t.param.detach())
        self._pending_grad = total_count(sums)

    def _after_step(self) -> None:
        import torch

        changed = []
        with torch.no_grad():
            for t in self.tracked:
                ch = torch.ne(bits_view(t.param.detach()), bits_view(t.prev), out=self._scratch(t))
                t.ever_changed |= ch
                changed.append(torch.count_nonzero(ch))
        n = self.numel
        c = total_count(changed)
        rec: dict[str, Any] = {
            "step": len(self.steps) + 1,
            "changed_vs_prev": c,
            "sparsity_vs_prev": 1 - c / n,
            "grad_nonzero": self._pending_grad,
        }
        if rec["step"] % self.every == 0:
            rec.update(self._vs_init())
        self.steps.append(rec)

    def _vs_init(self) -> dict[str, Any]:
        import torch

        identical: list[Any] = []
        unchanged: list[list[Any]] = [[] for _ in self.tolerances]
        with torch.no_grad():
            for t in self.tracked:
                now = t.param.detach()
                same = bits_view(now) == bits_view(t.init)
                identical.append(torch.count_nonzero(same))
                if self.tolerances:
                    d = (now.double() - t.init.double()).abs_()
                    for k, tol in enumerate(self.tolerances):
                        unchanged[k].append(torch.count_nonzero((d <= tol) | same))
        n = self.numel
        ident = total_count(identical)
        unch = [total_count(u) for u in unchanged]
        out = {
            "ever_changed": total_count([torch.count_nonzero(t.ever_changed) for t in self.tracked]),
            "ever_grad": total_count([torch.count_nonzero(t.ever_grad) for t in self.tracked]),
            "changed_vs_init": n - ident,
            "sparsity_vs_init": ident / n,
            "unchanged_vs_init": unch,
            "sparsity_vs_init_at": [u / n for u in unch],
        }
        self._last_vs_init = out
        return out

    # results ------------------------------------------------------------------------------------------------
    def final_changed(self) -> dict[str, torch.Tensor]:
        """Canonical name → bool tensor: the element's bits differ from the initial ones now."""
        return {t.name: bits_view(t.param.detach()) != bits_view(t.init) for t in self.tracked}

    def sets(self) -> dict[str, dict[str, torch.Tensor]]:
        """``ever_changed``, ``ever_grad``, ``final``: canonical name → bool tensor each."""
        return {
            "ever_changed": {t.name: t.ever_changed for t in self.tracked},
            "ever_grad": {t.name: t.ever_grad for t in self.tracked},
            "final": self.final_changed(),
        }

    def split(self) -> dict[str, int]:
        """Figure 2 counts, two ways, each summing to :attr:`numel`.

        By optimizer updates: ``never_updated`` (no step ever changed it and it equals its initial value),
        ``cancelled`` (some step changed it, it is back to its initial bits), ``final_subnetwork`` (it differs
        from its initial value). By gradients: ``never_grad``, ``grad_cancelled`` (got a non-zero gradient,
        equals its initial value), and the same ``final_subnetwork``; ``final_without_grad`` counts final
        changes that never had a gradient (moved by weight decay alone).
        """
        fin = self.final_changed()
        return add_splits(split_of(t, fin[t.name]) for t in self.tracked)

    def to_json(self) -> dict[str, Any]:
        """The ``subnetscope.tracker`` JSON document (measures against the initial weights now).

        Its ``steps`` (``step``, ``sparsity_vs_prev``, ``sparsity_vs_init``, ``ever_updated_share``) and its
        ``split`` (``never_updated``, ``cancelled``, ``final_subnetwork``, ``numel``, ``shares``) use the keys of
        the ``subnetscope.series`` report, so the series plots can draw a tracker log.
        """
        import torch

        from ..naming import KINDS, Namer

        namer = Namer()
        if not self.steps or "sparsity_vs_init" not in self.steps[-1]:
            final = self._vs_init()
            if self.steps:
                self.steps[-1].update(final)
        fin = self.final_changed()
        tensors: list[dict[str, Any]] = []
        kind_splits: dict[str, list[dict[str, int]]] = {}
        for t in self.tracked:
            layer, kind = namer.classify(t.name)
            sp = split_of(t, fin[t.name])
            kind_splits.setdefault(kind, []).append(sp)
            tensors.append(
                {
                    "name": t.name,
                    "layer": layer,
                    "kind": kind,
                    "shape": list(t.param.shape),
                    "dtype": dtype_code(t.param),
                    "numel": int(t.param.numel()),
                    "ever_grad": int(torch.count_nonzero(t.ever_grad)),
                    "ever_changed": int(torch.count_nonzero(t.ever_changed)),
                    "final_changed": sp["final_subnetwork"],
                }
            )
        by_kind = {}
        for k in KINDS:
            if k in kind_splits:
                sp = add_splits(kind_splits[k])
                by_kind[k] = {"numel": sp["numel"], "split": with_shares(sp)}
        n = self.numel
        steps = []
        for rec in self.steps:
            row = {"index": rec["step"], **rec}
            if "ever_changed" in rec:
                row["ever_updated_share"] = rec["ever_changed"] / n
            steps.append(row)
        return {
            "schema_version": SCHEMA_VERSION,
            "report": REPORT_KIND,
            "tool": {"name": "subnetscope", "version": __version__},
            "numel": n,
            "tensors_tracked": len(self.tracked),
            "every": self.every,
            "tolerance": 0.0,
            "tolerances": list(self.tolerances),
            "steps": steps,
            "split": with_shares(self.split()),
            "by_kind": by_kind,
            "tensors": tensors,
            **({"mask": str(self._saved_to)} if self._saved_to else {}),
        }

    def write_mask(self, path: str | os.PathLike[str], which: str = "ever_changed") -> Path:
        """Write one set (``ever_changed``, ``ever_grad`` or ``final``) as a mask file over the initial weights."""
        from ..maskfile import MaskWriter

        if which not in MASK_SETS:
            raise UsageError(f"unknown set {which!r}", f"use one of {', '.join(MASK_SETS)}")
        chosen = self.sets()[which]
        init = {t.name: t.init for t in self.tracked}
        shapes = {n: tuple(v.shape) for n, v in init.items()}
        dtypes = {n: code_for(self.base_dtype) or dtype_code(v) for n, v in init.items()}
        fp = model_fingerprint(init, shapes, dtypes)
        extra = {"source": REPORT_KIND, "set": which, "steps": str(len(self.steps))}
        with MaskWriter(path, shapes, fp, 0.0, "exact", extra, dtypes=dtypes) as w:
            for name, m in chosen.items():
                flat = m.detach().reshape(-1).cpu().numpy()
                w.write_bits(name, 0, np.packbits(flat, bitorder="little"))
        return Path(path)

    def save(self, output_dir: str | os.PathLike[str] | None = None) -> Path:
        """Write ``tracker.json`` and ``ever_changed.mask`` into ``output_dir``; returns the JSON path."""
        from ..io.atomic import write_text_atomic

        out = Path(output_dir) if output_dir is not None else self.output_dir
        if out is None:
            raise UsageError(
                "no output directory for the tracker", "pass UpdateTracker(output_dir) or save(dir)"
            )
        out.mkdir(parents=True, exist_ok=True)
        self._saved_to = self.write_mask(out / "ever_changed.mask")
        path = out / "tracker.json"
        write_text_atomic(path, json.dumps(self.to_json(), indent=1) + "\n")
        return path

    def scalars(self) -> dict[str, float]:
        """The latest scalars (what the callback adds to the trainer's logs)."""
        if not self.steps:
            return {}
        last = self.steps[-1]
        n = self.numel
        p = self.log_prefix
        out = {p + "step_sparsity": float(last["sparsity_vs_prev"])}
        v = self._last_vs_init
        if v:
            out[p + "sparsity_vs_init"] = float(v["sparsity_vs_init"])
            out[p + "ever_changed"] = v["ever_changed"] / n
            out[p + "ever_grad"] = v["ever_grad"] / n
        return out

    # HF Trainer callback --------------------------------------------------------------------------------------
    def install(self, trainer: Any) -> UpdateTracker:
        """Put this tracker first among ``trainer``'s callbacks, so reporting callbacks log its scalars."""
        cbs = trainer.callback_handler.callbacks
        if self in cbs:
            cbs.remove(self)
        cbs.insert(0, self)
        return self

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Attach to the trainer's model and optimizer."""
        from .support import check_trainer_args

        if self._handles:
            return
        check_trainer_args(args)
        model, optimizer = kwargs.get("model"), kwargs.get("optimizer")
        if model is None or optimizer is None:
            raise UsageError(
                "the trainer passed no model or optimizer to UpdateTracker.on_train_begin",
                "attach it yourself: tracker.attach(model, optimizer)",
            )
        if self.output_dir is None:
            self.output_dir = Path(args.output_dir) / "subnetscope"
        self.attach(model, optimizer)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any
    ) -> None:
        """Add the latest scalars to the trainer's logs."""
        if logs is not None:
            logs.update(self.scalars())

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Write the tracker's files (main process only) and detach."""
        self.detach()
        if getattr(state, "is_world_process_zero", True) and self.tracked:
            self.save()
