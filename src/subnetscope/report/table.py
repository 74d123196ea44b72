"""Plain-text tables for people (the ``human`` format)."""

from __future__ import annotations

from collections.abc import Sequence

from ..stats import Counts
from .schema import Report


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
    cols = len(headers)
    al = align or "l" + "r" * (cols - 1)
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(cols)]

    def line(r: Sequence[str]) -> str:
        return "  ".join(
            str(c).ljust(w) if a == "l" else str(c).rjust(w) for c, w, a in zip(r, widths, al)
        ).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


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
        f"  base:   {report.base.get('ref')}",
        f"  target: {report.target.get('ref')}",
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
    if report.findings:
        out += ["", f"findings ({len(report.findings)})"]
        out += [f"  {f.kind:15s} {f.tensor}: {f.detail}" for f in report.findings[:50]]
        if len(report.findings) > 50:
            out.append(f"  ... and {len(report.findings) - 50} more (see --format json)")
    return "\n".join(out)
