"""The study's figure steps: Figure 2 (the never updated / cancelled / final split) and the plots."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..io.atomic import write_text_atomic
from .context import PAPER, PRIMARY_TOL, StudyContext, optional, tol_index


def step_figure2(ctx: StudyContext) -> None:
    """Figure 2: never updated / cancelled / final subnetwork, from checkpoints and from the tracker."""
    splits: dict[str, dict[str, int]] = {}
    info: dict[str, Any] = {}
    name = ctx.cfg.analysis.series
    if name is not None and ctx.runs[name].checkpoints:

        def run_series() -> None:
            from ..series import series

            assert ctx.base_dir is not None
            rep = series(
                ctx.base_dir,
                [str(p) for p in ctx.runs[name].checkpoints],
                tolerance=PRIMARY_TOL,
                progress=ctx.progress,
            ).to_json()
            write_text_atomic(ctx.work / "series" / f"{name}.json", json.dumps(rep, indent=1) + "\n")
            sp = rep["split"]
            splits[f"{name}: bf16 checkpoints (tol 1e-5)"] = {
                k: sp[k] for k in ("never_updated", "cancelled", "final_subnetwork", "numel")
            }
            info["series"] = {
                "run": name,
                "checkpoints": [s["name"] for s in rep["steps"]],
                "steps": [s["step"] for s in rep["steps"]],
                "sparsity_vs_init": [s["sparsity_vs_init"] for s in rep["steps"]],
                "sparsity_vs_prev": [s["sparsity_vs_prev"] for s in rep["steps"]],
                "outside_final_share": [s["outside_final_share"] for s in rep["steps"]],
                "split": sp,
                "split_bitwise": rep.get("split_bitwise"),
            }

        optional(ctx, "figure2 (series)", run_series)
    for rname, rec in ctx.runs.items():
        tj = rec.path / "tracker" / "tracker.json"
        if tj.is_file():
            t = json.loads(tj.read_text())
            sp = t["split"]
            splits[f"{rname}: tracker (fp32 master, bitwise)"] = {
                k: sp[k] for k in ("never_updated", "cancelled", "final_subnetwork", "numel")
            }
            info.setdefault("tracker", {})[rname] = {"split": sp, "steps": t.get("steps", [])[-1:]}
    if splits:
        ctx.results["figure2"] = {"splits": splits, **info, "paper": PAPER["figure2"]}


#: the matrix types whose (layer, type) cells the Figure 3 summary ranges over (norms are excluded: tiny)
GRID_KINDS = ("q", "k", "v", "qkv", "o", "gate", "up", "down")


def grid_spread(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Range of the per-(layer, matrix type) sparsity at 1e-5 over the weight matrices of a compare report."""
    p = tol_index(obj, PRIMARY_TOL)
    cells = sorted(
        (float(c["sparsity"][p]), int(c["layer"]), str(c["kind"]))
        for c in obj["grid"]
        if c["kind"] in GRID_KINDS
    )
    if not cells:
        return {}
    mid = cells[len(cells) // 2][0]
    return {
        "cells": len(cells),
        "min": {"sparsity": cells[0][0], "layer": cells[0][1], "kind": cells[0][2]},
        "median": mid,
        "max": {"sparsity": cells[-1][0], "layer": cells[-1][1], "kind": cells[-1][2]},
        "within_5_points_of_median": sum(abs(c[0] - mid) <= 0.05 for c in cells) / len(cells),
    }


def _png(ctx: StudyContext, fig: Any, stem: str) -> None:
    from .figures import save_png

    save_png(fig, ctx.out / f"{stem}.png")
    ctx.figures.append(f"{stem}.png")


def step_figures(ctx: StudyContext) -> None:
    """Every figure, and the HTML report of all runs (work directory)."""
    with ctx.step("figures"):

        def heatmaps() -> None:
            from ..render import plots

            spread = {}
            for name in ctx.cfg.analysis.heatmap:
                _png(ctx, plots.heatmap(ctx.reports[name]), f"fig3_heatmap_{name}")
                spread[name] = grid_spread(ctx.reports[name])
            if spread:
                ctx.results["figure3"] = {"runs": spread, "paper": PAPER["figure3"]}
            names = list(ctx.cfg.analysis.table1)
            _png(ctx, plots.comparison_bars([ctx.reports[n] for n in names], names), "fig1_sparsity")

        def ulp_view() -> None:
            from ..anatomy.ulp import summarize
            from ..render import plots

            rows = {}
            for name in ctx.cfg.analysis.ulp:
                s = summarize(ctx.reports[name])
                ov = s["overall"]
                changed = sum(ov["hist"][1:])
                p = min(
                    range(len(s["tolerances"])), key=lambda i: abs(float(s["tolerances"][i]) - PRIMARY_TOL)
                )
                rows[name] = {
                    "bins": s["bins"],
                    "hist": ov["hist"],
                    "changed_share_by_ulp": [h / changed if changed else 0.0 for h in ov["hist"]],
                    "below_ulp_share_at_1e-5": ov["below_ulp_share"][p],
                }
                _png(ctx, plots.ulp_histogram(ctx.reports[name]), f"ulp_{name}")
            if rows:
                ctx.results["ulp"] = rows

        def html() -> None:
            from ..render.html import write_html

            names = list(ctx.reports)
            path = ctx.work / "report.html"
            write_html(
                path,
                [*(ctx.reports[n] for n in names), *ctx.ranks.values()],
                names,
                title=f"subnetscope study: {ctx.cfg.name}",
            )
            ctx.results["html"] = str(path)

        optional(ctx, "figures (heatmaps)", heatmaps)
        optional(ctx, "figures (ulp)", ulp_view)
        optional(ctx, "figures (html)", html)
        try:
            from . import figures
        except ImportError as e:  # pragma: no cover - matplotlib missing
            ctx.skip("figures (study)", str(e))
            return
        curves = {n: ctx.runs[n].log["losses"] for n in ctx.cfg.analysis.loss_curves}
        if curves:
            _png(ctx, figures.loss_curves(curves), "loss_curves")
        rewards = {
            n: [m.get("reward", 0.0) for m in r.log["metrics"]]
            for n, r in ctx.runs.items()
            if r.spec.algo == "grpo"
        }
        if rewards:
            _png(
                ctx,
                figures.metric_curves(rewards, "mean reward", "GRPO: mean reward of the sampled group"),
                "grpo_reward",
            )
        t3 = ctx.results.get("table3")
        if t3:
            _png(
                ctx,
                figures.loss_curves(t3["losses"], "Full vs subnetwork finetuning: loss"),
                "table3_loss_curves",
            )
        f2 = ctx.results.get("figure2")
        if f2:
            _png(ctx, figures.split_bars(f2["splits"]), "fig2_split")
            se = f2.get("series")
            if se and se["steps"]:
                last = ctx.runs[se["run"]].spec.steps  # the final model has no step in its name
                steps = [int(s) if s is not None else last for s in se["steps"]]
                _png(
                    ctx,
                    figures.series_sparsity(se["run"], steps, se["sparsity_vs_init"], se["sparsity_vs_prev"]),
                    "fig7_series",
                )
        t4 = ctx.results.get("table4")
        if t4:
            seen: dict[str, list[tuple[int, int, int]]] = {}
            for row in t4["rows"]:
                for side, run in enumerate((row["a"], row["b"])):
                    if run not in seen and row["bins"]:
                        seen[run] = [
                            (b["exponent"], b["numel"], b["changed"][side])
                            for b in row["bins"]
                            if b["exponent"] is not None
                        ]
            if seen:
                _png(ctx, figures.change_vs_magnitude(seen), "change_vs_magnitude")
                ctx.results["magnitude"] = {
                    r: [{"exponent": e, "numel": n, "changed": c} for e, n, c in rows]
                    for r, rows in seen.items()
                }
