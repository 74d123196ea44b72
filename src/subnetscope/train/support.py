"""What training setups the mask and the tracker support, and the clear refusal of the others.

Supported: one process (CPU or one GPU) or DDP, with any ``torch.optim`` optimizer whose parameters are the
model's own tensors (AdamW, Adam, SGD with momentum and weight decay, ...), mixed precision by autocast (fp32 weights,
bf16/fp16 compute) or bf16 weights, gradient accumulation, gradient clipping, HF Trainer and TRL trainers
(the optimizer arrives wrapped by accelerate; the wrapper is looked through).

Refused with :class:`UnsupportedSetupError`: DeepSpeed (ZeRO partitions parameters, gradients and optimizer
state into flat buffers the per-parameter hooks never see), FSDP (flat or sharded ``DTensor`` parameters),
tensor parallelism (``DTensor``), and optimizers that hold copies of the parameters instead of the
parameters themselves (separate fp32 master weights).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import SubnetscopeError

_SUPPORTED = "supported: one process or DDP, torch.optim optimizers over the model's own parameters"


class UnsupportedSetupError(SubnetscopeError):
    """A training setup the subnetwork mask or the tracker cannot guarantee to handle correctly."""


def unwrap_optimizer(optimizer: Any) -> Any:
    """The innermost ``torch.optim.Optimizer`` (looks through accelerate's and Lightning's wrappers)."""
    import torch

    opt = optimizer
    for _ in range(8):
        inner = getattr(opt, "optimizer", None)
        if not isinstance(inner, torch.optim.Optimizer):
            break
        opt = inner
    if not isinstance(opt, torch.optim.Optimizer):
        raise UnsupportedSetupError(
            f"the optimizer ({type(optimizer).__name__}) is not a torch.optim.Optimizer", _SUPPORTED
        )
    return opt


def _is_dtensor(t: Any) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - old torch
        return False
    return isinstance(t, DTensor)


def check_model(model: Any) -> None:
    """Refuse models wrapped or sharded by DeepSpeed, FSDP or tensor parallelism."""
    cls = type(model)
    mod = cls.__module__
    if (
        mod.startswith("deepspeed")
        or hasattr(model, "_deepspeed_engine")
        or cls.__name__ == "DeepSpeedEngine"
    ):
        raise UnsupportedSetupError(
            "the model is wrapped by DeepSpeed, which the subnetwork mask does not support",
            "train without DeepSpeed (ZeRO partitions parameters and optimizer state into flat buffers); "
            + _SUPPORTED,
        )
    for name, module in model.named_modules():
        mname = type(module).__module__
        if "fsdp" in mname or type(module).__name__ in ("FullyShardedDataParallel", "FSDPModule"):
            raise UnsupportedSetupError(
                f"module {name or '<root>'!r} is wrapped by FSDP, which the subnetwork mask does not support",
                "train without FSDP; " + _SUPPORTED,
            )
    for name, p in model.named_parameters():
        if _is_dtensor(p):
            raise UnsupportedSetupError(
                f"parameter {name!r} is a DTensor (FSDP2 or tensor parallelism), which is not supported",
                "train without sharding the parameters; " + _SUPPORTED,
            )
        if hasattr(p, "ds_id") or hasattr(p, "ds_numel"):
            raise UnsupportedSetupError(
                f"parameter {name!r} is partitioned by DeepSpeed ZeRO, which is not supported",
                "train without DeepSpeed; " + _SUPPORTED,
            )
        if p.device.type == "meta":
            raise UnsupportedSetupError(
                f"parameter {name!r} is on the meta device (not materialised)",
                "load the weights before attaching the mask",
            )


def check_optimizer(optimizer: Any, params: Iterable[Any]) -> Any:
    """Refuse DeepSpeed optimizers and optimizers over other tensors than ``params``; returns the inner one."""
    tname = type(optimizer).__module__ + "." + type(optimizer).__name__
    if "deepspeed" in tname.lower() or "zero" in type(optimizer).__name__.lower():
        raise UnsupportedSetupError(
            f"the optimizer ({type(optimizer).__name__}) is a DeepSpeed optimizer, which is not supported",
            "train without DeepSpeed; " + _SUPPORTED,
        )
    inner = unwrap_optimizer(optimizer)
    own = {id(p) for p in params}
    for group in inner.param_groups:
        for p in group["params"]:
            if id(p) not in own:
                raise UnsupportedSetupError(
                    f"the optimizer holds a tensor of shape {list(p.shape)} that is not a parameter of the model "
                    "(separate master weights, or an optimizer built for another model)",
                    "build the optimizer over model.parameters(); " + _SUPPORTED,
                )
    return inner


def check_trainer_args(args: Any) -> None:
    """Refuse HF ``TrainingArguments`` that turn on DeepSpeed or FSDP."""
    if getattr(args, "deepspeed", None):
        raise UnsupportedSetupError(
            "TrainingArguments.deepspeed is set; the subnetwork mask does not support DeepSpeed",
            "remove the deepspeed config; " + _SUPPORTED,
        )
    fsdp = getattr(args, "fsdp", None)
    if fsdp and fsdp not in ("", [], "no"):
        raise UnsupportedSetupError(
            f"TrainingArguments.fsdp is {fsdp!r}; the subnetwork mask does not support FSDP",
            "remove the fsdp option; " + _SUPPORTED,
        )
    try:
        from accelerate.state import AcceleratorState, DistributedType
    except ImportError:  # pragma: no cover - accelerate always comes with transformers' Trainer
        return
    if AcceleratorState._shared_state:
        dt = AcceleratorState().distributed_type
        if dt in (DistributedType.DEEPSPEED, DistributedType.FSDP):
            raise UnsupportedSetupError(
                f"accelerate runs with {dt.value}, which the subnetwork mask does not support",
                "launch without DeepSpeed/FSDP; " + _SUPPORTED,
            )
