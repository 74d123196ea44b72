"""Plain-text tables for people (the ``human`` format)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..display import printable
from ..results.schema import Finding, Report
from ..stats import Counts


def fmt_tol(t: float) -> str:
    """``1e-05`` → ``1e-5``."""
    s = f"{t:.0e}" if t else "0"
    return s.replace("e-0", "e-").replace("e+0", "e+")


def pct(x: float) -> str:
    """A fraction as a percentage with 2 decimals."""
    return f"{100 * x:.2f}%"


def human_count(n: int) -> str:
    """``134515008`` → ``134.5M``."""
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None) -> str:
    """A fixed-width table; ``align`` is one of ``l``/``r`` per column (default: first left, rest right)."""
    headers = [printable(h) for h in headers]
    rows = [[printable(c) for c in r] for r in rows]  # a cell is one line, whatever a tensor is called
    cols = len(headers)
    al = align or "l" + "r" * (cols - 1)
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(cols)]

    def line(r: Sequence[str]) -> str:
        return "  ".join(
            str(c).ljust(w) if a == "l" else str(c).rjust(w) for c, w, a in zip(r, widths, al)
        ).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def finding_lines(findings: Sequence[Finding], limit: int = 50) -> list[str]:
    """The ``findings (N)`` block of a human report: one escaped line per finding, at most ``limit``."""
    if not findings:
        return []
    out = ["", f"findings ({len(findings)})"]
    out += [
        f"  {printable(f.kind):15s} {printable(f.tensor)}: {printable(f.detail)}" for f in findings[:limit]
    ]
    if len(findings) > limit:
        out.append(f"  ... and {len(findings) - limit} more (see --format json)")
    return out


def ref_of(side: Mapping[str, Any] | None) -> str:
    """The ``ref`` of a report's ``base`` / ``target`` block, escaped for a terminal."""
    return printable((side or {}).get("ref"))


def _counts_rows(label_counts: Sequence[tuple[str, Counts]]) -> list[list[str]]:
    return [[label, human_count(c.numel), pct(c.identical / c.numel if c.numel else 1.0),
             *(pct(s) for s in c.sparsity)] for label, c in label_counts]  # fmt: skip


def render_compare(report: Report, layers: bool = True) -> str:
    """The ``compare`` output: overall, per matrix type, per layer, findings."""
    tols = [fmt_tol(t) for t in report.tolerances]
    head = ["", "params", "bit-identical", *(f"sparsity@{t}" for t in tols)]
    ov = report.overall
    p = report.primary_index
    out = [
        f"subnetscope compare ({report.semantics} semantics)",
        f"  base:   {ref_of(report.base)}",
        f"  target: {ref_of(report.target)}",
        f"  {len(report.tensors)} tensors compared, {human_count(ov.numel)} parameters; "
        f"update sparsity at {tols[p]}: {pct(ov.sparsity[p])} ({ov.changed[p]:,} updated)",
        "",
        table(head, _counts_rows([("overall", ov)])),
        "",
        "per matrix type",
        table(["type", *head[1:]], _counts_rows(list(report.by_kind().items()))),
    ]
    if layers:
        by_layer = report.by_layer()
        if by_layer:
            out += [
                "",
                "per layer",
                table(["layer", *head[1:]], _counts_rows([(str(k), c) for k, c in by_layer.items()])),
            ]
    out += finding_lines(report.findings)
    return "\n".join(out)


# -- update anatomy (issue 5): rank and ULP tables -----------------------------------------------------------


def fmt_mult(m: float) -> str:
    """Rank tolerance multiplier label: ``0.1`` → ``0.1x``."""
    return f"{m:g}x"


def render_rank(obj: Mapping[str, Any], tensors: bool = False) -> str:
    """The ``rank`` output: overall, per matrix type, and (``tensors``) per matrix, from its JSON form."""
    mults = [float(m) for m in obj.get("rtol_multipliers", [])]
    ov = obj.get("overall") or {}
    sel = obj.get("selection") or {}
    out = [
        f"subnetscope rank ({obj.get('method')} on {obj.get('device')})",
        f"  base:   {ref_of(obj.get('base'))}",
        f"  target: {ref_of(obj.get('target'))}",
    ]
    nonfinite = [Finding(str(f.get("kind")), str(f.get("tensor")), str(f.get("detail")))
                 for f in obj.get("findings") or [] if isinstance(f, Mapping)]  # fmt: skip
    if not ov.get("matrices"):
        return "\n".join([*out, "  no matrix ranked", *finding_lines(nonfinite)])
    out += [
        f"  {ov['matrices']} of {sel.get('candidates', ov['matrices'])} 2-D updates ranked; mean rank "
        f"{ov['mean_rank_pct']:.2f}% of min(rows, cols), {ov['full_rank']} at full rank; mean stable rank "
        f"{ov['mean_stable_rank']:.1f}, mean effective rank {ov['mean_effective_rank_pct']:.1f}%",
        "  tolerance: sigma_max * max(rows, cols) * eps(float32) (torch.linalg.matrix_rank's default); "
        "rank% at multiples of it:",
        "",
    ]
    head = ["type", "matrices", "rank%", "min%", "full", "stable", "eff.rank%",
            *(f"@{fmt_mult(m)}" for m in mults)]  # fmt: skip

    def row(label: str, s: Mapping[str, Any]) -> list[str]:
        return [label, str(s["matrices"]), f"{s['mean_rank_pct']:.2f}", f"{s['min_rank_pct']:.2f}",
                str(s["full_rank"]), f"{s['mean_stable_rank']:.2f}", f"{s['mean_effective_rank_pct']:.1f}",
                *(f"{x:.2f}" for x in s["mean_rank_pct_at"])]  # fmt: skip

    rows = [row(k, s) for k, s in (obj.get("by_kind") or {}).items()]
    rows.append(row("overall", ov))
    out.append(table(head, rows))
    if tensors:
        trows = [
            [t["name"], "x".join(map(str, t["shape"])), str(t["rank"]), str(t["max_rank"]),
             f"{t['rank_pct']:.2f}", f"{t['stable_rank']:.2f}", f"{t['effective_rank']:.1f}",
             f"{t['sigma_min'] / t['tol']:.3g}" if t["tol"] else "-", *(str(r) for r in t["ranks_at"])]
            for t in obj.get("tensors", [])
        ]  # fmt: skip
        out += ["", "per matrix (smin/tol: smallest singular value over the rank tolerance)",
                table(["tensor", "shape", "rank", "max", "rank%", "stable", "eff.rank", "smin/tol",
                       *(f"@{fmt_mult(m)}" for m in mults)], trows)]  # fmt: skip
    spec = [t for t in obj.get("tensors", []) if t.get("spectrum")]
    if spec:
        out += ["", f"spectrum (k={obj.get('spectrum_k')}): update on the base's principal entries vs random"]
        srows = []
        for t in spec:
            s = t["spectrum"]
            en = s.get("enrichment")
            srows.append([
                t["name"], pct(s["update_density"]),
                "-" if en is None else f"{en:.3f}",
                "-" if s.get("mass_enrichment") is None else f"{s['mass_enrichment']:.3f}",
                f"{max(s['left_angles_deg']):.4f}", f"{max(s['right_angles_deg']):.4f}",
            ])  # fmt: skip
        out.append(
            table(["tensor", "updated", "enrichment", "mass enr.", "max angle L°", "max angle R°"], srows)
        )
    out += finding_lines(nonfinite)
    return "\n".join(out)


def render_ulp(obj: Mapping[str, Any]) -> str:
    """The ``compare --ulp`` section: changes by ULP distance, weights below one ULP, lost steps."""
    from ..anatomy.ulp import summarize

    s = summarize(obj)
    bins = s["bins"]

    def shares(g: Mapping[str, Any]) -> list[str]:
        n = g["numel"]
        return [pct(h / n) if n else "-" for h in g["hist"]]

    groups = [(k, g) for k, g in s["by_kind"].items()] + [("overall", s["overall"])]
    out = [
        "change size in ULPs of the stored dtype (share of compared elements)",
        table(["type", "params", *bins], [[k, human_count(g["numel"]), *shares(g)] for k, g in groups]),
        "",
        "unchanged weights that could not have moved by <= tol (nearest representable value farther away):",
    ]
    ov = s["overall"]
    for t, b, u, sh in zip(s["tolerances"], ov["below_ulp"], ov["unchanged"], ov["below_ulp_share"]):
        out.append(f"  tol {fmt_tol(t)}: {b:,} of {u:,} unchanged ({pct(sh)})")
    if s["step_size"] is not None:
        out += [
            "",
            f"a step of {s['step_size']:g} rounds away (either sign) for {pct(ov['step_lost_share'])} of weights",
            table(["type", "params", "step lost"],
                  [[k, human_count(g["numel"]), pct(g["step_lost_share"])] for k, g in groups]),
        ]  # fmt: skip
    return "\n".join(out)
