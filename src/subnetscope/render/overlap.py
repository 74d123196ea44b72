"""The ``overlap`` output for people (:class:`~subnetscope.results.overlap.OverlapReport` as text)."""

from __future__ import annotations

from collections.abc import Sequence

from ..display import printable
from ..results.overlap import OverlapCounts, OverlapReport
from .table import finding_lines, fmt_tol, human_count, pct, table


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def _p(x: float | None) -> str:
    return "-" if x is None else pct(x)


def _f(x: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def _rows(
    report: OverlapReport, groups: Sequence[tuple[str, OverlapCounts]]
) -> tuple[list[str], list[list[str]]]:
    mag = report.base is not None
    dl = report.mode == "deltas"
    head = ["", "params", "changed 1", "changed 2", "both", "o1", "o1 rand", "o2", "o2 rand", "jaccard", "z"]
    if mag:
        head += ["o1 mag", "o2 mag", "z mag"]
    if dl:
        head += ["sign agr", "cos"]
    rows = []
    for label, c in groups:
        j = c.to_json()
        r = [label, human_count(c.numel), _p(j["density"][0]), _p(j["density"][1]), human_count(c.intersection),
             _p(j["o1"]), _p(j["o1_random"]), _p(j["o2"]), _p(j["o2_random"]), _p(j["jaccard"]), _f(j["z"])]  # fmt: skip
        if mag:
            m = j["magnitude"]
            r += [_p(m["o1_random"]), _p(m["o2_random"]), _f(m["z"])]
        if dl:
            d = j["deltas"]
            r += [_p(d["sign_agreement"]), _f(d["cosine"], "{:.3f}")]
        rows.append(r)
    return head, rows


def render(report: OverlapReport, layers: bool = True) -> str:
    """The ``overlap`` output for people: a summary, then tables overall, per matrix type, per layer."""
    ov = report.overall
    j = ov.to_json()
    out = [f"subnetscope overlap ({report.mode})"]
    for k, inp in enumerate(report.inputs, 1):
        ch = ov.changed1 if k == 1 else ov.changed2
        out.append(f"  run {k}: {printable(inp['ref'])}  (tol {fmt_tol(inp['tolerance'])}, {printable(inp['semantics'])}; "
                   f"{human_count(ch)} of {human_count(ov.numel)} updated, {_p(_ratio(ch, ov.numel))})")  # fmt: skip
    if report.base is not None:
        out.append(f"  base:  {printable(report.base['ref'])}")
    out.append(
        f"  |I1 ∩ I2| = {ov.intersection:,}: o1 = {_p(j['o1'])} (uniform baseline {_p(j['o1_random'])}), "
        f"o2 = {_p(j['o2'])} (uniform baseline {_p(j['o2_random'])}), z = {_f(j['z'])}"
    )
    if "magnitude" in j:
        m = j["magnitude"]
        out.append(
            f"  magnitude-matched baseline: o1 {_p(m['o1_random'])}, o2 {_p(m['o2_random'])}, "
            f"z = {_f(m['z'])} (observed/expected intersection {_f(m['lift'], '{:.2f}')}x)"
        )
    if "deltas" in j:
        d = j["deltas"]
        out.append(
            f"  updates on the {d['shared']:,} shared coordinates: sign agreement {_p(d['sign_agreement'])}, "
            f"cosine {_f(d['cosine'], '{:.4f}')}; cosine of the whole updates {_f(d['cosine_full'], '{:.4f}')}"
        )
    head, rows = _rows(report, [("overall", ov)])
    out += ["", table(head, rows)]
    head, rows = _rows(report, list(report.by_kind().items()))
    out += ["", "per matrix type", table(["type", *head[1:]], rows)]
    by_layer = report.by_layer()
    if layers and by_layer:
        head, rows = _rows(report, [(str(k), c) for k, c in by_layer.items()])
        out += ["", "per layer", table(["layer", *head[1:]], rows)]
    out += finding_lines(report.findings)
    return "\n".join(out)
