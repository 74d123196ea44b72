"""Sparse, bit-exact deltas: ship a finetuned model as a small patch to its base.

- :func:`export_delta` (BASE, TARGET → delta directory), :func:`apply_delta` (BASE, delta → a normal
  Hugging Face checkpoint directory), :func:`patch_state_dict` (apply in place onto loaded tensors);
- :func:`load_manifest` reads and validates a delta's ``delta.json``.

Modules: :mod:`.format` (on-disk layout and validation), :mod:`.encode` (positions and values of one
chunk), :mod:`.store` (data files), :mod:`.shards` (writing HF shards), :mod:`.sidefiles` (config and
tokenizer files), :mod:`.export`, :mod:`.apply`, :mod:`.patch`, :mod:`.errors`.
"""

from __future__ import annotations

from .apply import ApplyResult, apply_delta
from .errors import DeltaBaseMismatchError, DeltaVerifyError
from .export import ExportResult, export_delta
from .format import Manifest, TensorEntry, load_manifest
from .patch import PatchResult, patch_state_dict

__all__ = [
    "ApplyResult",
    "DeltaBaseMismatchError",
    "DeltaVerifyError",
    "ExportResult",
    "Manifest",
    "PatchResult",
    "TensorEntry",
    "apply_delta",
    "export_delta",
    "load_manifest",
    "patch_state_dict",
]
