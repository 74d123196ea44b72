"""The study's table steps: update sparsity (Tables 1 and 6), update rank (Table 2), overlap of subnetworks
(Table 4) and full vs subnetwork finetuning (Conjecture 1, Table 3)."""

from __future__ import annotations

import json
import time
from typing import Any

from ..io.atomic import write_text_atomic
from .context import PAPER, PRIMARY_TOL, StudyContext, optional, tol_index


def step_table1(ctx: StudyContext) -> None:
    """Table 1 (sparsity per run) with the tolerance sweep (Table 6) and the per-matrix-type breakdown."""
    with ctx.step("table1"):
        rows = []
        for name in ctx.cfg.analysis.table1:
            obj = ctx.reports[name]
            spec = ctx.runs[name].spec
            ov = obj["overall"]
            p = tol_index(obj, PRIMARY_TOL)
            rows.append(
                {
                    "run": name,
                    "algo": spec.algo,
                    "data": spec.data,
                    "steps": spec.steps,
                    "lr": spec.lr,
                    "seed": spec.seed,
                    "subnetwork_of": spec.mask_from,
                    "numel": ov["numel"],
                    "bit_identical": ov["identical"] / ov["numel"],
                    "tolerances": obj["tolerances"],
                    "sparsity": ov["sparsity"],
                    "sparsity_at_1e-5": ov["sparsity"][p],
                    "by_kind": {k: c["sparsity"][p] for k, c in obj["by_kind"].items()},
                    "train_seconds": ctx.runs[name].log.get("seconds"),
                }
            )
        ctx.results["table1"] = {"tolerance": PRIMARY_TOL, "rows": rows, "paper": PAPER["table1"]}


def _rank_of(ctx: StudyContext, name: str) -> dict[str, Any]:
    """The rank report of run ``name`` (from the work directory when it was made for this very run)."""
    from ..anatomy.rank import rank_report

    assert ctx.base_dir is not None
    rec = ctx.runs[name]
    path = ctx.work / "rank" / f"{name}.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("study_run_key") == rec.key and old.get("study_base") == ctx.base_id:
            return dict(old)
    t0 = time.time()
    obj = rank_report(ctx.base_dir, rec.path, device="cpu", progress=ctx.progress).to_json()
    obj["target"]["ref"] = name
    obj.update(study_run_key=rec.key, study_base=ctx.base_id, seconds=round(time.time() - t0, 2))
    write_text_atomic(path, json.dumps(obj, indent=1) + "\n")
    return obj


def step_table2(ctx: StudyContext) -> None:
    """Table 2: the rank of every 2-D update of the configured runs, as % of the maximum, per run and per
    matrix type (:func:`subnetscope.anatomy.rank.rank_report`; cached per run in the work directory)."""
    if not ctx.cfg.analysis.rank:
        return

    def run() -> None:
        rows = []
        for name in ctx.cfg.analysis.rank:
            obj = ctx.ranks[name] = _rank_of(ctx, name)
            ov = obj["overall"]
            mults = obj["rtol_multipliers"]
            rows.append(
                {
                    "run": name,
                    "algo": ctx.runs[name].spec.algo,
                    "subnetwork_of": ctx.runs[name].spec.mask_from,
                    "matrices": ov["matrices"],
                    "mean_rank_pct": ov["mean_rank_pct"],
                    "min_rank_pct": ov["min_rank_pct"],
                    "full_rank": ov["full_rank"],
                    "mean_effective_rank_pct": ov["mean_effective_rank_pct"],
                    "mean_stable_rank": ov["mean_stable_rank"],
                    "rtol_multipliers": mults,
                    "mean_rank_pct_at": ov["mean_rank_pct_at"],
                    "by_kind": {k: v["mean_rank_pct"] for k, v in obj["by_kind"].items()},
                    "seconds": obj.get("seconds"),
                }
            )
        ctx.results["table2"] = {
            "tolerance": "sigma_max * max(rows, cols) * eps(float32), as torch.linalg.matrix_rank",
            "rows": rows,
            "paper": PAPER["table2"],
        }

    with ctx.step("table2"):
        optional(ctx, "table2", run)


def step_table4(ctx: StudyContext) -> None:
    """Table 4: overlap of subnetworks across seeds, data and algorithms, with both random baselines."""
    if not ctx.cfg.analysis.overlap:
        return

    def run() -> None:
        from ..overlap import overlap

        rows = []
        for o in ctx.cfg.analysis.overlap:
            rep = overlap(ctx.masks[o.a], ctx.masks[o.b], base=ctx.base_dir, progress=ctx.progress).to_json()
            write_text_atomic(ctx.work / "overlap" / f"{o.a}--{o.b}.json", json.dumps(rep, indent=1) + "\n")
            mag = rep.get("magnitude") or {}
            rows.append(
                {
                    "label": o.label,
                    "a": o.a,
                    "b": o.b,
                    "changed": rep["changed"],
                    "sparsity": rep["sparsity"],
                    "intersection": rep["intersection"],
                    "o1": rep["o1"],
                    "o2": rep["o2"],
                    "o1_random": rep["o1_random"],
                    "o2_random": rep["o2_random"],
                    "o1_magnitude": mag.get("o1_random"),
                    "o2_magnitude": mag.get("o2_random"),
                    "jaccard": rep["jaccard"],
                    "jaccard_random": rep["jaccard_random"],
                    "jaccard_magnitude": mag.get("jaccard_random"),
                    "lift_over_magnitude": mag.get("lift"),
                    "z": rep["z"],
                    "z_magnitude": mag.get("z"),
                    "by_kind": {
                        k: {
                            "o1": v["o1"],
                            "o2": v["o2"],
                            "o1_random": v["o1_random"],
                            "o2_random": v["o2_random"],
                        }
                        for k, v in rep["by_kind"].items()
                    },
                    "bins": mag.get("bins", []),
                }
            )
        ctx.results["table4"] = {"tolerance": PRIMARY_TOL, "rows": rows, "paper": PAPER["table4"]}

    with ctx.step("table4"):
        optional(ctx, "table4", run)


def step_conjecture(ctx: StudyContext) -> None:
    """Table 3 / §4: subnetwork finetuning against full finetuning."""
    pair = ctx.cfg.analysis.conjecture
    if pair is None:
        return
    full, sub = pair

    def run() -> None:
        from ..train import conjecture

        assert ctx.base_dir is not None
        res = conjecture(ctx.base_dir, ctx.runs[full].path, ctx.runs[sub].path, progress=ctx.progress)
        obj = res.to_json()
        write_text_atomic(ctx.work / "conjecture.json", json.dumps(obj, indent=1) + "\n")
        ctx.results["table3"] = {
            "full": full,
            "sub": sub,
            "tolerances": obj["tolerances"],
            "identical_share": obj["overall"]["identical_share"],
            "bit_identical_share": obj["overall"]["bit_identical"] / obj["overall"]["numel"],
            "reproduced_share": obj["overall"]["reproduced_share"],
            "full_sparsity": obj["full_sparsity"],
            "by_kind": {k: v["identical_share"] for k, v in obj["by_kind"].items()},
            "frozen_changed": ctx.runs[sub].log.get("frozen_changed"),
            "trainable": (ctx.runs[sub].log.get("mask") or {}).get("trainable"),
            "losses": {full: ctx.runs[full].log["losses"], sub: ctx.runs[sub].log["losses"]},
            "paper": PAPER["table3"],
        }

    with ctx.step("conjecture"):
        optional(ctx, "conjecture", run)
