"""Tensor name → (layer, matrix type), from data files per architecture family.

The patterns live in ``_data/architectures/*.json`` (one file per family: regexes with an optional
``layer`` group, and the matrix type they mean). A checkpoint whose ``config.json`` names a known
``model_type`` is matched against its own family first; every family is then tried in turn, and a name
nothing matches counts as ``other`` with no layer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

#: matrix types in display order (the columns of the layer × type grid)
KINDS: tuple[str, ...] = (
    "q",
    "k",
    "v",
    "qkv",
    "o",
    "gate",
    "up",
    "down",
    "router",
    "input_norm",
    "post_attn_norm",
    "mlp_norm",
    "qk_norm",
    "embed",
    "lm_head",
    "final_norm",
    "other",
)


@dataclass(frozen=True)
class Family:
    """One architecture family's naming rules."""

    name: str
    model_types: tuple[str, ...]
    patterns: tuple[tuple[re.Pattern[str], str], ...]


@lru_cache(maxsize=1)
def families() -> tuple[Family, ...]:
    """All families shipped in the package data, Llama first."""
    out: list[Family] = []
    root = resources.files("subnetscope") / "_data" / "architectures"
    for entry in sorted(root.iterdir(), key=lambda e: (e.name != "llama.json", e.name)):
        if not entry.name.endswith(".json"):
            continue
        obj = json.loads(entry.read_text())
        pats = []
        for rx, kind in obj["patterns"]:
            if kind not in KINDS:
                raise ValueError(f"{entry.name}: unknown matrix type {kind!r}")
            pats.append((re.compile(rx), kind))
        out.append(Family(obj["family"], tuple(obj.get("model_types", [])), tuple(pats)))
    return tuple(out)


class Namer:
    """Classifies tensor names; construct once per checkpoint (cheap)."""

    def __init__(self, model_type: str | None = None) -> None:
        fams = list(families())
        first = [f for f in fams if model_type and model_type in f.model_types]
        self.family = first[0].name if first else None
        self._order = first + [f for f in fams if f not in first]

    def classify(self, name: str) -> tuple[int | None, str]:
        """``(layer, kind)`` of a tensor name; ``(None, "other")`` when nothing matches."""
        for fam in self._order:
            for rx, kind in fam.patterns:
                m = rx.match(name)
                if m:
                    layer = m.groupdict().get("layer")
                    return (int(layer) if layer is not None else None), kind
        m = _GENERIC_LAYER.search(name)
        return (int(m.group(1)) if m else None), "other"


_GENERIC_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")


def classify(name: str, model_type: str | None = None) -> tuple[int | None, str]:
    """``(layer, kind)`` of one tensor name (see :class:`Namer`)."""
    return Namer(model_type).classify(name)
