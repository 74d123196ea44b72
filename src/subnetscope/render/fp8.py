"""The ``fp8`` section of ``compare`` output for people (from the report's JSON)."""

from __future__ import annotations

from typing import Any

from ..display import printable
from ..fp8 import counts_of
from .table import fmt_tol, human_count, pct, table


def render(section: dict[str, Any], tolerances: list[float]) -> str:
    """The human-readable ``fp8`` section (from the report's JSON)."""
    bs = section["block_size"]
    block = f"{bs[0]}x{bs[1]}" if bs and isinstance(bs[0], int) else "per tensor"
    rows = []
    for label, key in (("stored codes", "stored_codes"), ("dequantized values", "dequantized"),
                       ("dequantized model", "dequantized_model")):  # fmt: skip
        c = counts_of(section[key])
        rows.append([label, human_count(c.numel), pct(c.identical / c.numel if c.numel else 1.0),
                     *(pct(s) for s in c.sparsity)])  # fmt: skip
    head = ["fp8 view", "params", "identical", *(f"sparsity@{fmt_tol(t)}" for t in tolerances)]
    sc = section["scales"]
    out = [
        f"FP8 block-scaled weights: {section['weights']} tensors, block {block} ({section['block_source']})",
        table(head, rows),
        "  dequantized model: every tensor but the scales, FP8 weights compared by value",
        f"  scale tensors: {sc['changed_tensors']} of {sc['tensors']} changed "
        f"({sc['changed_blocks']:,} of {sc['blocks']:,} blocks)",
    ]
    if section["skipped"]:
        out.append(f"  skipped ({len(section['skipped'])}): " + "; ".join(
            f"{printable(s['tensor'])}: {printable(s['reason'])}" for s in section["skipped"][:5]))  # fmt: skip
    return "\n".join(out)
