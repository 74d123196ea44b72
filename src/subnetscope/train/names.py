"""Checkpoint tensor names ↔ a live model's parameter names, and the fingerprint of a live model.

Mask files name tensors as the checkpoint does (``model.layers.0.self_attn.q_proj.weight``). A live model
may add wrapper prefixes (``module.`` from DDP, ``_orig_mod.`` from ``torch.compile``, ``base_model.model.``
from PEFT, with ``.base_layer`` inside LoRA-wrapped linears) or lack the ``model.`` prefix (a bare
``LlamaModel``). Tied weights (``lm_head.weight`` is ``model.embed_tokens.weight``) are one parameter with
two names. :func:`resolve` maps each mask name to the parameter that holds it; :func:`model_fingerprint`
hashes the model's parameters exactly as :func:`subnetscope.fingerprint.of_checkpoint` hashes the base
checkpoint (same names, shapes, base dtypes and sampled windows of raw bits), so a model whose weights are
not the mask's base is told apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..dtypes import TORCH_TO_CODE, get_dtype
from ..errors import MaskMismatchError
from ..fingerprint import BitsReader, Fingerprint, compute

#: prefixes that wrappers add in front of the checkpoint's names
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "base_model.model.", "pretrained_model.")
#: segments that wrappers insert inside names
WRAPPER_SEGMENTS = (".base_layer.", "._orig_mod.", "._fsdp_wrapped_module.", "._checkpoint_wrapped_module.")


def canonical(name: str) -> str:
    """A parameter name with wrapper prefixes and segments removed."""
    changed = True
    while changed:
        changed = False
        for p in WRAPPER_PREFIXES:
            if name.startswith(p):
                name = name[len(p) :]
                changed = True
    for seg in WRAPPER_SEGMENTS:
        while seg in name:
            name = name.replace(seg, ".")
    return name


def model_parameters(model: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """``(canonical name → parameter, canonical name → primary name)`` over every alias of every parameter.

    The primary name is the one ``model.named_parameters()`` gives (the first alias of a tied parameter).
    """
    primary_of: dict[int, str] = {id(p): n for n, p in model.named_parameters()}
    params: dict[str, Any] = {}
    primary: dict[str, str] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        c = canonical(n)
        params.setdefault(c, p)
        primary.setdefault(c, primary_of[id(p)])
    return params, primary


def resolve(mask_names: Iterable[str], model_names: Iterable[str], where: str) -> dict[str, str]:
    """Map every mask name to a (canonical) model name, or raise :class:`MaskMismatchError`.

    Exact names first; else the mask name without leading components (a bare ``LlamaModel``), else the
    unique model name that ends with the mask name (an extra wrapper prefix).
    """
    model_set = set(model_names)
    longer: dict[str, list[str]] = {}
    for m in model_set:
        parts = m.split(".")
        for i in range(1, len(parts) - 1):
            longer.setdefault(".".join(parts[i:]), []).append(m)
    out: dict[str, str] = {}
    missing: list[str] = []
    for k in mask_names:
        if k in model_set:
            out[k] = k
            continue
        parts = k.split(".")
        hit = next((s for i in range(1, len(parts) - 1) if (s := ".".join(parts[i:])) in model_set), None)
        if hit is None and len(longer.get(k, [])) == 1:
            hit = longer[k][0]
        if hit is None:
            missing.append(k)
        else:
            out[k] = hit
    if missing:
        raise MaskMismatchError(
            f"{where}: the model has no parameter for {len(missing)} of the mask's tensors, e.g. {missing[0]!r} "
            "(mask made for another architecture?)",
            "load the model the mask was made for (its base), or make a mask for this model",
        )
    return out


def _bits_reader(t: Any, torch_dtype: Any) -> BitsReader:
    import torch

    flat = t.detach().reshape(-1)
    width = torch.empty(0, dtype=torch_dtype).element_size()
    view = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[width]

    def read(start: int, count: int) -> np.ndarray:
        part = flat[start : start + count].to(device="cpu", dtype=torch_dtype)
        arr: np.ndarray = part.contiguous().view(view).numpy().view(f"<u{width}")
        return arr

    return read


def dtype_code(t: Any) -> str:
    """Safetensors code of a tensor's dtype (``BF16``, ``F32``, ...)."""
    return TORCH_TO_CODE[str(t.dtype).removeprefix("torch.")]


def model_fingerprint(
    tensors: Mapping[str, Any],
    shapes: Mapping[str, tuple[int, ...]],
    dtypes: Mapping[str, str],
) -> Fingerprint:
    """Fingerprint of live tensors (name → tensor) as if saved with the given shapes and dtype codes.

    Each tensor is cast to its recorded dtype before its raw bits are hashed, so an fp32 copy of a bf16 base
    (the usual mixed-precision master weights) has the base's fingerprint.
    """
    import torch

    entries = []
    for name, t in tensors.items():
        code = dtypes.get(name) or dtype_code(t)
        tdt = getattr(torch, get_dtype(code, name).torch_name)
        entries.append((name, tuple(shapes[name]), code, _bits_reader(t, tdt)))
    return compute(entries)
