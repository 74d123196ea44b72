"""The ``conjecture`` output for people (:class:`~subnetscope.results.conjecture.ConjectureResult` as text)."""

from __future__ import annotations

from ..results.conjecture import PAPER, ConjectureResult
from .table import finding_lines, fmt_tol, human_count, pct, ref_of, table


def render(result: ConjectureResult) -> str:
    """The human output of ``subnetscope conjecture``."""
    tl = [fmt_tol(t) for t in result.tolerances]
    o = result.overall
    out = [
        f"subnetscope conjecture ({result.semantics} semantics)",
        f"  base: {ref_of(result.base_vs_full.base)}",
        f"  full: {ref_of(result.base_vs_full.target)}  (subnetwork vs base at "
        f"{fmt_tol(result.subnetwork_tolerance)}: {o.subnetwork:,} of {o.numel:,} = {pct(1 - result.full_sparsity)})",
        f"  sub:  {ref_of(result.full_vs_sub.target)}",
        "",
        table(
            ["", *(f"@{t}" for t in tl)],
            [
                ["sub identical to full", *(pct(x) for x in o.identical_share)],
                ["full's subnetwork reproduced", *(pct(x) for x in o.reproduced_share)],
            ],
        ),
        "",
        "per matrix type",
        table(
            [
                "type",
                "params",
                "subnetwork",
                *(f"identical@{t}" for t in tl),
                *(f"reproduced@{t}" for t in tl),
            ],
            [
                [
                    k,
                    human_count(g.numel),
                    human_count(g.subnetwork),
                    *(pct(x) for x in g.identical_share),
                    *(pct(x) for x in g.reproduced_share),
                ]
                for k, g in result.by_kind.items()
            ],
        ),
        "",
        PAPER,
    ]
    findings = result.base_vs_full.findings + result.full_vs_sub.findings
    out += finding_lines(findings, limit=20)
    return "\n".join(out)
