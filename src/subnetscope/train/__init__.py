"""Train inside a subnetwork, and watch what training touches (paper §4, Conjecture 1, Figure 2).

Plain PyTorch::

    from subnetscope.train import SubnetworkMask, UpdateTracker
    mask = SubnetworkMask.load("run1.mask", model)   # refuses a mask made for another model
    handle = mask.attach(model, optimizer)          # frozen entries stay byte-identical
    tracker = UpdateTracker("track_out").attach(model, optimizer)
    ...  # the usual loop: loss.backward(); clip; optimizer.step(); optimizer.zero_grad()
    tracker.save()                                  # track_out/tracker.json + ever_changed.mask

HF Trainer / TRL::

    trainer = DPOTrainer(..., callbacks=[SubnetworkCallback("run1.mask"), UpdateTracker("track_out")])

Conjecture 1 (full vs subnetwork finetuning)::

    from subnetscope.train import conjecture
    result = conjecture(base, full, sub)             # result.identical[1e-5], result.reproduced[1e-5]

Only :mod:`torch` is needed for the mask and the tracker's hook API; the callbacks import ``transformers``
when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .callback import SubnetworkCallback
    from .hooks import MaskHandle
    from .mask import SubnetworkMask
    from .sub_vs_full import ConjectureResult, conjecture
    from .support import UnsupportedSetupError
    from .tracker import UpdateTracker

__all__ = [
    "ConjectureResult",
    "MaskHandle",
    "SubnetworkCallback",
    "SubnetworkMask",
    "UnsupportedSetupError",
    "UpdateTracker",
    "conjecture",
]

_LAZY = {
    "SubnetworkMask": "mask",
    "MaskHandle": "hooks",
    "SubnetworkCallback": "callback",
    "UpdateTracker": "tracker",
    "conjecture": "sub_vs_full",
    "ConjectureResult": "sub_vs_full",
    "UnsupportedSetupError": "support",
}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'subnetscope.train' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{mod}"), name)
