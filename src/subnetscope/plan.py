"""Align two checkpoints by tensor name and decide what to compare, collecting every finding at once.

Tensors are matched by name (the two sides may be sharded differently). A tensor on one side only, a
shape change, a dtype change: each becomes a :class:`~subnetscope.results.schema.Finding`; none stops the
plan. A resized first dimension (a grown vocabulary) is compared on the shared rows, and the rows only the
target has count as changed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .io.checkpoint import Checkpoint
from .io.safetensors_header import TensorInfo
from .naming import Namer
from .results.schema import Finding


@dataclass(frozen=True)
class Pair:
    """One tensor present on both sides, with how to compare it."""

    index: int  #: position in the plan (and in the report's tensor list)
    name: str
    base: TensorInfo
    target: TensorInfo
    compare_numel: int  #: leading elements compared (all, or the shared rows of a resized tensor)
    layer: int | None
    kind: str

    @property
    def numel(self) -> int:
        """Elements counted for this tensor (the target's)."""
        return self.target.numel

    @property
    def same_dtype(self) -> bool:
        """Both sides stored in the same dtype (the fast kernel applies)."""
        return self.base.dtype == self.target.dtype


@dataclass
class Plan:
    """What one pass over two checkpoints will do."""

    base: Checkpoint
    target: Checkpoint
    pairs: list[Pair]
    findings: list[Finding]


def natural_key(name: str) -> list[object]:
    """Sort key that orders ``layers.2`` before ``layers.10``."""
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", name)]


def _model_type(ck: Checkpoint) -> str | None:
    mt = ck.config().get("model_type")
    return mt if isinstance(mt, str) else None


def make_plan(base: Checkpoint, target: Checkpoint) -> Plan:
    """Align ``base`` and ``target`` by name; collect findings for everything that is not a clean pair."""
    namer = Namer(_model_type(target) or _model_type(base))
    findings: list[Finding] = []
    pairs: list[Pair] = []
    names = sorted(set(base.tensors) | set(target.tensors), key=natural_key)
    for name in names:
        b = base.tensors.get(name)
        t = target.tensors.get(name)
        if b is None:
            assert t is not None
            findings.append(
                Finding("only_in_target", name, f"new in target: shape {list(t.shape)} {t.dtype.code}")
            )
            continue
        if t is None:
            findings.append(
                Finding("only_in_base", name, f"missing from target: shape {list(b.shape)} {b.dtype.code}")
            )
            continue
        compare_numel = t.numel
        if b.shape != t.shape:
            if len(b.shape) == len(t.shape) >= 1 and b.shape[1:] == t.shape[1:]:
                rows = min(b.shape[0], t.shape[0])
                compare_numel = rows * math.prod(t.shape[1:])
                if t.shape[0] > b.shape[0]:
                    findings.append(Finding(
                        "rows_added", name,
                        f"resized {list(b.shape)} -> {list(t.shape)}: compared the {rows} shared rows, "
                        f"the {t.shape[0] - rows} new rows count as changed",
                    ))  # fmt: skip
                else:
                    findings.append(Finding(
                        "rows_removed", name,
                        f"resized {list(b.shape)} -> {list(t.shape)}: compared the {rows} remaining rows, "
                        f"{b.shape[0] - rows} base rows were dropped",
                    ))  # fmt: skip
            else:
                findings.append(Finding(
                    "shape_changed", name, f"shape {list(b.shape)} -> {list(t.shape)}: not comparable, skipped"
                ))  # fmt: skip
                continue
        if b.dtype != t.dtype:
            if not (b.dtype.is_float and t.dtype.is_float):
                findings.append(
                    Finding(
                        "dtype_changed", name, f"{b.dtype.code} -> {t.dtype.code}: not comparable, skipped"
                    )
                )
                continue
            findings.append(Finding(
                "dtype_changed", name,
                f"{b.dtype.code} -> {t.dtype.code}: compared by value; 'identical' means equal value",
            ))  # fmt: skip
        layer, kind = namer.classify(name)
        pairs.append(Pair(len(pairs), name, b, t, compare_numel, layer, kind))
    return Plan(base, target, pairs, findings)
