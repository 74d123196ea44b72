"""The ``series`` output for people (:class:`~subnetscope.results.series.SeriesReport` as text)."""

from __future__ import annotations

from ..display import printable
from ..results.series import SeriesReport
from .table import finding_lines, fmt_tol, human_count, pct, table


def _pc(x: float | None) -> str:
    return "-" if x is None else pct(x)


def render(report: SeriesReport, kinds: bool = True) -> str:
    """The ``series`` output for people: one row per checkpoint, the final split, and per matrix type."""
    obj = report.to_json()
    n = obj["numel"]
    fin = report.final
    fin_label = f"checkpoint {fin['index']}" if fin["index"] is not None else "not one of the checkpoints"
    out = [
        f"subnetscope series (updated: |Δ| > {fmt_tol(report.tolerance)}, {report.semantics} semantics)",
        f"  init:  {printable(report.init['ref'])}",
        f"  final: {printable(fin['ref'])} ({fin_label})",
        f"  {len(report.tensors)} tensors, {human_count(n)} parameters, {len(report.steps)} checkpoints",
        "",
    ]
    head = ["#", "checkpoint", "step", "sparsity vs init", "bit-identical", "sparsity vs prev",
            "outside final", "ever updated"]  # fmt: skip
    rows = [
        [str(s["index"]), s["name"], "-" if s["step"] is None else str(s["step"]), _pc(s["sparsity_vs_init"]),
         _pc(s["bit_identical_vs_init"]), _pc(s["sparsity_vs_prev"]), _pc(s["outside_final_share"]),
         _pc(s["ever_updated_share"])]
        for s in obj["steps"]
    ]  # fmt: skip
    out.append(table(head, rows, align="rlrrrrrr"))
    sp, sb = obj["split"], obj["split_bitwise"]
    out += [
        "",
        f"split of the {n:,} parameters: never updated {sp['never_updated']:,} "
        f"({_pc(sp['shares']['never_updated'])}), cancelled {sp['cancelled']:,} "
        f"({_pc(sp['shares']['cancelled'])}), final subnetwork {sp['final_subnetwork']:,} "
        f"({_pc(sp['shares']['final_subnetwork'])})",
        f"  bitwise: never touched {sb['never_updated']:,} ({_pc(sb['shares']['never_updated'])}), "
        f"touched and restored {sb['cancelled']:,} ({_pc(sb['shares']['cancelled'])}), "
        f"bits differ at the end {sb['final_subnetwork']:,} ({_pc(sb['shares']['final_subnetwork'])})",
    ]
    if kinds and obj["by_kind"]:
        rows = []
        for k, g in obj["by_kind"].items():
            s = g["split"]
            rows.append([k, human_count(g["numel"]), _pc(g["sparsity_vs_init"][-1]),
                         _pc(s["shares"]["never_updated"]), _pc(s["shares"]["cancelled"]),
                         _pc(s["shares"]["final_subnetwork"])])  # fmt: skip
        out += ["", "per matrix type (last checkpoint)",
                table(["type", "params", "sparsity vs init", "never", "cancelled", "final"], rows)]  # fmt: skip
    out += finding_lines(report.findings)
    return "\n".join(out)
