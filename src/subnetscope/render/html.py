"""One self-contained HTML page from compare and rank JSON reports (images embedded as base64 PNG).

Sections (each a ``<section id=...>``; those without data are left out):

- ``headline``: update sparsity at the primary tolerance of every compare report;
- ``comparison`` (two or more compare reports): a paper-Table-1-style table and a bar chart (Figure 1);
- ``tolerance-table``: sparsity per tolerance and report (Table 6 layout) and sparsity vs tolerance plots;
- ``heatmap``: layer × matrix-type sparsity of every compare report (Figure 3);
- ``ulp``: the ULP histogram and what the dtype's resolution explains (reports made with ``--ulp``);
- ``rank``: mean update rank per report and matrix type (Table 2 layout), its tolerance dependence, and a
  chart (rank reports, or compare reports made with ``--rank``);
- ``findings``: tensors missing, resized, retyped or holding NaN/Inf.
"""

from __future__ import annotations

import datetime as _dt
import html
import os
from collections.abc import Mapping, Sequence
from typing import Any

from .. import __version__
from ..errors import UsageError
from . import plots
from .dispatch import HTML_KINDS
from .table import fmt_mult, fmt_tol, human_count, pct

SECTION_IDS = ("headline", "comparison", "tolerance-table", "heatmap", "ulp", "rank", "findings")

_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #1d2430;
       max-width: 1120px; margin: 2em auto; padding: 0 1.2em; line-height: 1.45; }
h1 { font-size: 1.7em; margin-bottom: 0.1em; } h2 { border-bottom: 2px solid #dde3ea; padding-bottom: .2em;
     margin-top: 1.8em; } h3 { margin-bottom: .3em; }
.meta { color: #5b6675; font-size: .9em; }
table { border-collapse: collapse; margin: .6em 0 1em; font-size: .92em; }
th, td { border: 1px solid #d5dbe3; padding: .3em .65em; text-align: right; }
th { background: #f1f4f8; } td:first-child, th:first-child { text-align: left; }
.cards { display: flex; flex-wrap: wrap; gap: 1em; }
.card { border: 1px solid #d5dbe3; border-radius: 8px; padding: .8em 1.1em; min-width: 250px; background: #fafbfd; }
.big { font-size: 2.3em; font-weight: 650; color: #17548a; }
img { max-width: 100%; height: auto; border: 1px solid #e4e8ee; margin: .4em 0; }
.note { color: #5b6675; font-size: .88em; max-width: 60em; }
code { background: #f1f4f8; padding: 0 .25em; border-radius: 3px; }
figure { margin: 0; }
.figs { display: grid; grid-template-columns: 1fr; gap: .2em 1.2em; }
.figs img { width: auto; max-width: 100%; }
.card { flex: 1 1 300px; max-width: 520px; }
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(fig: Any, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{plots.png_base64(fig)}">'


def _figs(items: Sequence[tuple[str, str]]) -> str:
    """(heading, img html) pairs, one per row, each at its own size (never wider than the column)."""
    cells = "".join(f"<figure><h3>{_e(h)}</h3>{img}</figure>" for h, img in items)
    return f'<div class="figs">{cells}</div>'


def _section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{_e(title)}</h2>\n{body}\n</section>'


def _primary(obj: Mapping[str, Any]) -> int:
    return plots._primary(obj)


def split_reports(
    objs: Sequence[Mapping[str, Any]], labels: Sequence[str] | None = None
) -> tuple[list[tuple[str, Mapping[str, Any]]], list[tuple[str, Mapping[str, Any]]]]:
    """(labelled compare reports, labelled rank reports); ranks embedded by ``compare --rank`` included."""
    compares: list[tuple[str, Mapping[str, Any]]] = []
    ranks: list[tuple[str, Mapping[str, Any]]] = []
    names = list(labels or [])
    for obj in objs:
        kind = obj.get("report")
        if kind not in HTML_KINDS:
            raise UsageError(
                f"the HTML report takes compare and rank reports, not {kind!r}",
                "use `subnetscope plot` for series reports",
            )
        from ..results.schema import check_schema

        check_schema(dict(obj), str(kind))
        if kind == "subnetscope.compare":
            label = names[len(compares)] if len(compares) < len(names) else plots.label_of(obj)
            compares.append((label, obj))
            emb = obj.get("rank")
            if isinstance(emb, Mapping) and emb.get("report") == "subnetscope.rank":
                ranks.append((label, emb))
        else:
            match = [lab for lab, c in compares if _same_pair(c, obj)]
            ranks.append((match[0] if match else plots.label_of(obj), obj))
    if not compares and not ranks:
        raise UsageError("no report given", "pass at least one compare or rank JSON report")
    order = [lab for lab, _ in compares]
    ranks.sort(key=lambda lr: order.index(lr[0]) if lr[0] in order else len(order))  # stable
    return compares, ranks


def _same_pair(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    def key(o: Mapping[str, Any]) -> tuple[Any, Any]:
        return ((o.get("base") or {}).get("path"), (o.get("target") or {}).get("path"))

    return key(a) == key(b)


# -- sections -------------------------------------------------------------------------------------------


def _headline(compares: list[tuple[str, Mapping[str, Any]]]) -> str:
    cards = []
    for label, o in compares:
        p = _primary(o)
        ov = o["overall"]
        numel = int(ov["numel"])
        changed = numel - int(ov["unchanged"][p])
        cards.append(
            f'<div class="card"><div><b>{_e(label)}</b></div>'
            f'<div class="big">{_e(pct(float(ov["sparsity"][p])))}</div>'
            f"<div>update sparsity at tol {_e(fmt_tol(float(o['tolerances'][p])))}</div>"
            f'<div class="meta">{changed:,} of {numel:,} parameters updated; '
            f"{_e(pct(int(ov['identical']) / numel if numel else 1.0))} bit-identical; "
            f"{_e(o.get('semantics'))} semantics</div>"
            f'<div class="meta">base <code>{_e((o.get("base") or {}).get("ref"))}</code> → target '
            f"<code>{_e((o.get('target') or {}).get('ref'))}</code></div></div>"
        )
    note = (
        '<p class="note">Update sparsity = share of parameters with |target − base| ≤ tol (paper: tol 1e-5 on '
        "bf16 values). One bf16 ULP exceeds 1e-5 for every |w| ≥ 2^-9, so the tolerance only matters for "
        "tiny weights.</p>"
    )
    return _section("headline", "Update sparsity", f'<div class="cards">{"".join(cards)}</div>{note}')


def _comparison(compares: list[tuple[str, Mapping[str, Any]]]) -> str:
    rows = []
    for label, o in compares:
        p = _primary(o)
        ov = o["overall"]
        n = int(ov["numel"])
        rows.append([label, (o.get("base") or {}).get("ref"), (o.get("target") or {}).get("ref"),
                     human_count(n), pct(int(ov["identical"]) / n if n else 1.0),
                     fmt_tol(float(o["tolerances"][p])), pct(float(ov["sparsity"][p]))])  # fmt: skip
    tab = _table(["model", "base", "finetuned", "params", "bit-identical", "tol", "update sparsity"], rows)
    fig = plots.comparison_bars([o for _, o in compares], [lab for lab, _ in compares])
    return _section(
        "comparison", "Comparison (Table 1 / Figure 1 layout)", tab + _img(fig, "sparsity per model")
    )


def _tolerances(compares: list[tuple[str, Mapping[str, Any]]]) -> str:
    tols = sorted({float(t) for _, o in compares for t in o["tolerances"]})
    rows = []
    for t in tols:
        row: list[Any] = [fmt_tol(t)]
        for _, o in compares:
            ts = [float(x) for x in o["tolerances"]]
            row.append(pct(float(o["overall"]["sparsity"][ts.index(t)])) if t in ts else "-")
        rows.append(row)
    body = _table(["tolerance", *(lab for lab, _ in compares)], rows)
    first_label, first = compares[0]
    kinds = first.get("by_kind") or {}
    if kinds:
        ts = [float(x) for x in first["tolerances"]]
        order = sorted(range(len(ts)), key=lambda i: ts[i])
        krows = [[k, human_count(int(c["numel"])), *(pct(float(c["sparsity"][i])) for i in order)]
                 for k, c in kinds.items()]  # fmt: skip
        body += f"<h3>{_e(first_label)}: per matrix type</h3>"
        body += _table(["type", "params", *(f"@{fmt_tol(ts[i])}" for i in order)], krows)
    body += _figs(
        [(lab, _img(plots.tolerance_curve(o), f"sparsity vs tolerance, {lab}")) for lab, o in compares]
    )
    return _section("tolerance-table", "Sparsity per tolerance (Table 6 layout)", body)


def _heatmaps(compares: list[tuple[str, Mapping[str, Any]]]) -> str:
    body = _figs(
        [(lab, _img(plots.heatmap(o), f"layer x matrix-type heatmap, {lab}")) for lab, o in compares]
    )
    return _section("heatmap", "Sparsity per layer and matrix type (Figure 3)", body)


def _ulp(compares: list[tuple[str, Mapping[str, Any]]]) -> str:
    from ..anatomy.ulp import summarize

    body = (
        '<p class="note">ULP distance: representable values of the stored dtype stepped between base and '
        "target (1 = the smallest possible change). A weight whose nearest representable neighbour is farther "
        "than the tolerance can only be unchanged by being bit-identical.</p>"
    )
    for label, o in compares:
        if not plots.has_ulp(o):
            continue
        s = summarize(o)
        ov = s["overall"]
        n = ov["numel"]
        groups = [*s["by_kind"].items(), ("overall", ov)]
        rows = [[k, human_count(g["numel"]), *(pct(h / g["numel"]) if g["numel"] else "-" for h in g["hist"])]
                for k, g in groups]  # fmt: skip
        body += f"<h3>{_e(label)}</h3>" + _img(plots.ulp_histogram(o), f"ULP histogram, {label}")
        body += _table(["type", "params", *s["bins"]], rows)
        brow = [[fmt_tol(t), f"{u:,}", f"{b:,}", pct(sh)]
                for t, b, u, sh in zip(s["tolerances"], ov["below_ulp"], ov["unchanged"], ov["below_ulp_share"])]  # fmt: skip
        body += _table(["tolerance", "unchanged", "of them: no neighbour within tol", "share"], brow)
        if s["step_size"] is not None:
            step = f"{float(s['step_size']):g}"
            body += (f"<p>A step of <b>{_e(step)}</b> rounds away (either sign) for "
                     f"<b>{_e(pct(ov['step_lost_share']))}</b> of {n:,} weights.</p>")  # fmt: skip
    return _section("ulp", "Change size against the dtype's resolution (ULPs)", body)


def _rank(ranks: list[tuple[str, Mapping[str, Any]]]) -> str:
    kinds: list[str] = []
    for _, r in ranks:
        kinds += [k for k in (r.get("by_kind") or {}) if k not in kinds]
    ovs = [r.get("overall") or {} for _, r in ranks]
    bks = [r.get("by_kind") or {} for _, r in ranks]
    rows: list[list[Any]] = [
        ["matrices ranked", *(ov.get("matrices", 0) for ov in ovs)],
        ["update rank (mean)", *(f"{float(ov.get('mean_rank_pct', 0)):.2f}%" for ov in ovs)],
        *(
            [
                f"update rank, {k}",
                *(f"{float(bk[k]['mean_rank_pct']):.2f}%" if k in bk else "-" for bk in bks),
            ]
            for k in kinds
        ),
        ["at full rank", *(f"{ov.get('full_rank', 0)} of {ov.get('matrices', 0)}" for ov in ovs)],
        ["stable rank (mean)", *(f"{float(ov.get('mean_stable_rank', 0)):.2f}" for ov in ovs)],
        ["effective rank (mean)", *(f"{float(ov.get('mean_effective_rank_pct', 0)):.1f}%" for ov in ovs)],
    ]
    body = _table(["", *(lab for lab, _ in ranks)], rows)
    body += (
        '<p class="note">Update rank: numerical rank of target − base (float32) as a percentage of min(rows, '
        "cols), at torch.linalg.matrix_rank's default tolerance σ_max · max(rows, cols) · eps(float32); mean "
        "over matrices. Below: the same at multiples of that tolerance, to show how much of “full rank” "
        "rests on singular values near the tolerance.</p>"
    )
    mults = [float(m) for m in ranks[0][1].get("rtol_multipliers", [])]
    trows = [[label, *(f"{x:.2f}%" for x in (r.get("overall") or {}).get("mean_rank_pct_at", []))]
             for label, r in ranks]  # fmt: skip
    body += _table(["model", *(f"tol × {fmt_mult(m)}" for m in mults)], trows)
    body += _figs(
        [
            (lab, _img(plots.rank_bars(r), f"rank per matrix type, {lab}"))
            for lab, r in ranks
            if r.get("by_kind")
        ]
    )
    return _section("rank", "Update rank (Table 2 layout)", body)


def _findings(compares: list[tuple[str, Mapping[str, Any]]]) -> str:
    body = ""
    for label, o in compares:
        fs = o.get("findings") or []
        if fs:
            rows = [[f["kind"], f["tensor"], f["detail"]] for f in fs[:200]]
            body += f"<h3>{_e(label)} ({len(fs)})</h3>" + _table(["kind", "tensor", "detail"], rows)
    return _section("findings", "Findings", body) if body else ""


def render_html(
    objs: Sequence[Mapping[str, Any]],
    labels: Sequence[str] | None = None,
    title: str | None = None,
    sources: Sequence[str] | None = None,
) -> str:
    """The page for these JSON reports (compare and/or rank), as one HTML string."""
    from .fields import check_report

    for i, o in enumerate(objs):
        check_report(o, sources[i] if sources and i < len(sources) else f"report {i + 1}")
    compares, ranks = split_reports(objs, labels)
    title = title or "subnetscope report: " + ", ".join(lab for lab, _ in (compares or ranks))
    parts = []
    if compares:
        parts.append(_headline(compares))
        if len(compares) > 1:
            parts.append(_comparison(compares))
        parts.append(_tolerances(compares))
        parts.append(_heatmaps(compares))
        if any(plots.has_ulp(o) for _, o in compares):
            parts.append(_ulp(compares))
    if ranks:
        parts.append(_rank(ranks))
    if compares:
        parts.append(_findings(compares))
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    src = ", ".join(os.path.basename(s) for s in sources) if sources else ""
    meta = f"subnetscope {__version__}, {when}" + (f"; from {src}" if src else "")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{_e(title)}</title>'
        f'<style>{_CSS}</style></head>\n<body>\n<h1>{_e(title)}</h1>\n<p class="meta">{_e(meta)}</p>\n'
        + "\n".join(p for p in parts if p)
        + "\n</body></html>\n"
    )


def write_html(
    path: str | os.PathLike[str],
    objs: Sequence[Mapping[str, Any]],
    labels: Sequence[str] | None = None,
    title: str | None = None,
    sources: Sequence[str] | None = None,
) -> None:
    """Render and write the page atomically; ``sources`` (the reports' paths) are inputs it may not replace."""
    from ..io.atomic import write_text_atomic
    from ..io.outputs import Output, check_outputs, path_inputs

    check_outputs(path_inputs(sources or [], "a JSON report read"), [Output(path, "the HTML page")])
    write_text_atomic(path, render_html(objs, labels, title, sources))
