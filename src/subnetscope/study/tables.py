"""The study's tables as Markdown, from its JSON document (``summary.md``, and the CLI's human output)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..naming import KINDS
from ..render.table import fmt_tol


def _pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}%"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (first column left-aligned, the rest right-aligned)."""
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join([":---"] + ["---:"] * (len(headers) - 1)) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def table1(doc: Mapping[str, Any]) -> str:
    """Table 1 (+ the Table 6 tolerance sweep): update sparsity per run."""
    t = doc["table1"]
    tols = t["rows"][0]["tolerances"] if t["rows"] else []
    rows = [
        [
            r["run"],
            r["algo"].upper() + (" (subnetwork)" if r.get("subnetwork_of") else ""),
            r["data"],
            r["steps"],
            f"{r['lr']:g}",
            _pct(r["bit_identical"], 2),
            *(_pct(s, 2) for s in r["sparsity"]),
        ]
        for r in t["rows"]
    ]
    head = [
        "run",
        "algorithm",
        "data",
        "steps",
        "lr",
        "bit-identical",
        *(f"sparsity@{fmt_tol(x)}" for x in tols),
    ]
    return md_table(head, rows)


def table1_kinds(doc: Mapping[str, Any]) -> str:
    """Update sparsity per matrix type at 1e-5."""
    rows = doc["table1"]["rows"]
    kinds = [k for k in KINDS if any(k in r["by_kind"] for r in rows)]
    return md_table(["run", *kinds], [[r["run"], *(_pct(r["by_kind"].get(k)) for k in kinds)] for r in rows])


def table2(doc: Mapping[str, Any]) -> str:
    """Table 2: mean rank of the 2-D updates as % of the maximum, per run, with the per-type means."""
    rows = doc["table2"]["rows"]
    kinds = [k for k in KINDS if any(k in r["by_kind"] for r in rows)]
    return md_table(
        ["run", "matrices", "mean rank", "lowest", "full rank", "effective rank", *kinds],
        [
            [
                r["run"],
                r["matrices"],
                _pct(r["mean_rank_pct"] / 100, 2),
                _pct(r["min_rank_pct"] / 100, 1),
                f"{r['full_rank']}/{r['matrices']}",
                _pct(r["mean_effective_rank_pct"] / 100, 1),
                *(_pct(r["by_kind"][k] / 100, 2) if k in r["by_kind"] else "–" for k in kinds),
            ]
            for r in rows
        ],
    )


def table4(doc: Mapping[str, Any]) -> str:
    """Table 4: overlap of subnetworks with the uniform and magnitude-matched random baselines."""
    rows = [
        [
            r["label"],
            f"{r['a']} vs {r['b']}",
            f"{_pct(r['sparsity'][0])} / {_pct(r['sparsity'][1])}",
            _pct(r["o1"]),
            _pct(r["o1_random"]),
            _pct(r["o1_magnitude"]),
            _pct(r["o2"]),
            _pct(r["o2_random"]),
            _pct(r["o2_magnitude"]),
            _pct(r["jaccard"]),
            "–" if r.get("lift_over_magnitude") is None else f"{r['lift_over_magnitude']:.2f}×",
        ]
        for r in doc["table4"]["rows"]
    ]
    head = [
        "across",
        "runs (1 vs 2)",
        "sparsity 1 / 2",
        "o1",
        "o1 random",
        "o1 magnitude-matched",
        "o2",
        "o2 random",
        "o2 magnitude-matched",
        "Jaccard",
        "∩ / magnitude-expected ∩",
    ]
    return md_table(head, rows)


def table3(doc: Mapping[str, Any]) -> str:
    """Table 3 / §4: θ_sub against θ_full."""
    t = doc["table3"]
    tl = [fmt_tol(x) for x in t["tolerances"]]
    rows = [
        ["θ_sub identical to θ_full (all weights)", *(_pct(x, 2) for x in t["identical_share"])],
        ["θ_full's subnetwork reproduced by θ_sub", *(_pct(x, 2) for x in t["reproduced_share"])],
    ]
    return md_table(["", *(f"tol {x}" for x in tl)], rows)


def figure2(doc: Mapping[str, Any]) -> str:
    """The Figure 2 split as a table."""
    rows = []
    for src, s in doc["figure2"]["splits"].items():
        n = s["numel"]
        rows.append(
            [src, _pct(s["never_updated"] / n), _pct(s["cancelled"] / n), _pct(s["final_subnetwork"] / n)]
        )
    return md_table(["source", "never updated", "updated, then cancelled", "final subnetwork"], rows)


def dynamics(doc: Mapping[str, Any]) -> str:
    """Sparsity of each saved checkpoint vs the base and vs the previous one (paper Figures 5-6)."""
    se = doc["figure2"]["series"]
    rows = [
        [str(step) if step is not None else "final", _pct(a, 2), _pct(b, 2), _pct(c, 1)]
        for step, a, b, c in zip(
            se["steps"], se["sparsity_vs_init"], se["sparsity_vs_prev"], se["outside_final_share"]
        )
    ]
    return md_table(
        ["step", "sparsity vs base", "sparsity vs previous", "changed outside the final subnetwork"], rows
    )


def figure3(doc: Mapping[str, Any]) -> str:
    """How uniform the sparsity is over (layer, matrix type) cells of the weight matrices."""
    rows = []
    for name, g in doc["figure3"]["runs"].items():
        if not g:
            continue
        lo, hi = g["min"], g["max"]
        rows.append(
            [
                name,
                g["cells"],
                f"{_pct(lo['sparsity'])} ({lo['kind']}, layer {lo['layer']})",
                _pct(g["median"]),
                f"{_pct(hi['sparsity'])} ({hi['kind']}, layer {hi['layer']})",
                _pct(g["within_5_points_of_median"]),
            ]
        )
    return md_table(
        ["run", "cells", "least sparse", "median", "most sparse", "cells within ±5 points of the median"],
        rows,
    )


def ulp(doc: Mapping[str, Any]) -> str:
    """Size of the changes in bf16 ULPs, per run."""
    u = doc["ulp"]
    first = next(iter(u.values()))
    bins = first["bins"][1:-1]
    rows = [
        [name, *(_pct(s, 1) for s in r["changed_share_by_ulp"][1:-1]), _pct(r["below_ulp_share_at_1e-5"], 1)]
        for name, r in u.items()
    ]
    return md_table(["run", *(f"{b} ULP" for b in bins), "unchanged that 1e-5 cannot see"], rows)


def timings(doc: Mapping[str, Any]) -> str:
    """Where the time went."""
    rows = [[k, f"{v:.0f} s"] for k, v in doc["timings"].items()]
    rows += [
        [f"train {n}", f"{r['train_seconds']:.0f} s" + (" (cached)" if r["cached"] else "")]
        for n, r in doc["runs"].items()
        if r.get("train_seconds") is not None
    ]
    return md_table(["step", "time"], rows)


def render_markdown(doc: Mapping[str, Any]) -> str:
    """All the study's tables, with the paper's numbers beside them."""
    out = [
        f"# Study `{doc['name']}`",
        "",
        f"Base: `{doc['base']['ref']}` (fingerprint {doc['base']['fingerprint']}); "
        f"subnetscope {doc['tool']['version']}.",
        "",
    ]
    sections: list[tuple[str, str, Any]] = [
        ("table1", "Table 1: update sparsity per run (and Table 6: per tolerance)", table1),
        ("table1", "Update sparsity per matrix type (tol 1e-5)", table1_kinds),
        ("table2", "Table 2: rank of the updates (% of the maximum rank, mean over 2-D matrices)", table2),
        ("table4", "Table 4: overlap of the subnetworks (tol 1e-5)", table4),
        ("table3", "Table 3 / §4: subnetwork finetuning vs full finetuning", table3),
        ("figure2", "Figure 2: never updated / cancelled / final subnetwork", figure2),
        ("figure3", "Figure 3: sparsity per layer and matrix type (weight matrices, tol 1e-5)", figure3),
        ("series", "Dynamics over the saved checkpoints (paper Figures 5–6)", dynamics),
        ("ulp", "Size of the changes in bf16 ULPs (share of changed weights)", ulp),
    ]
    for key, title, fn in sections:
        if key == "series" and "series" in doc.get("figure2", {}):
            out += [f"## {title}: run `{doc['figure2']['series']['run']}`", "", fn(doc), ""]
        elif key in doc:
            out += [f"## {title}", "", fn(doc), ""]
            paper = doc[key].get("paper") if isinstance(doc[key], Mapping) else None
            if paper and title.startswith(("Table", "Figure")):
                out += [f"Paper: {paper}.", ""]
    if "table3" in doc:
        t = doc["table3"]
        out += [
            f"θ_full update sparsity {_pct(t['full_sparsity'], 2)}; θ_sub bit-identical to θ_full on "
            f"{_pct(t['bit_identical_share'], 2)} of weights; frozen weights changed during subnetwork training: "
            f"{t.get('frozen_changed')}.",
            "",
        ]
    if doc.get("figures"):
        out += ["## Figures", "", *(f"- `{f}`" for f in doc["figures"]), ""]
    if doc.get("skipped"):
        out += ["## Skipped steps", "", *(f"- {k}: {v}" for k, v in doc["skipped"].items()), ""]
    out += ["## Time", "", timings(doc)]
    th = doc.get("threads")
    if th:
        out += [
            "",
            f"Torch CPU threads: {th['threads']} ({th['why']}; load average {th['load_average']} on {th['cpus']} CPUs).",
        ]
    num = doc.get("numerics")
    if num:
        line = f"Numerics: {num.get('id')}"
        if "reproducible" in num:
            line += (
                f" (torch {num['torch']}, {num['cpu_capability']} kernels, probe fingerprint {num['fingerprint']}; "
                + (
                    "the same bits for any thread count"
                    if num["reproducible"]
                    else "NOT reproducible: " + "; ".join(num["why_not"])
                )
                + ")"
            )
        out += ["", line + "."]
    return "\n".join(out)
