"""The study pipeline: base → datasets → runs → measurements with subnetscope's own library → tables, figures.

Steps, in order (each logged on stderr with its time; training runs are cached, see :mod:`.runs`):

1. ``base``: :func:`.base.prepare_base` (the offline SmolLM2 base, a hub id or a directory).
2. ``data``: build every dataset (self-sampled preference pairs are sampled from the base and cached).
3. ``runs``: train each run (a subnetwork run uses the mask of the run it names, made in step 4 of that
   run), then ``compare`` it with the base with ULP histograms and its update mask in the same pass
   (:func:`subnetscope.anatomy.ulp.compare_ulp`).
4. ``table1``: update sparsity per run and tolerance, and per matrix type (paper Tables 1 and 6).
4b. ``table2``: :func:`subnetscope.anatomy.rank.rank_report` of every 2-D update of the configured runs
   (paper Table 2; cached per run in the work directory).
5. ``table4``: :func:`subnetscope.overlap.overlap` of the configured pairs of masks, with the uniform and
   the magnitude-matched random baselines.
6. ``conjecture``: :func:`subnetscope.train.conjecture` of the full and subnetwork runs (paper §4, Table 3).
7. ``figure2``: :func:`subnetscope.series.series` over the checkpoints of one run (never updated /
   cancelled / final subnetwork in the stored bf16 weights), and the :class:`~subnetscope.train.UpdateTracker`
   split of a tracked run (fp32 master weights).
8. ``figures``: heatmaps (Figure 3), ULP histograms, sparsity bars (Figure 1), loss curves, change rate vs
   |w|, and the HTML report.
9. ``write``: ``study.json`` (``"report": "subnetscope.study"``) and ``summary.md`` in the output directory.

The output directory gets only small files (JSON tables, PNGs, markdown); full reports, masks and the HTML
page go to the work directory ``<cache>/studies/<name>/``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .. import __version__
from ..io.atomic import write_text_atomic
from ..results.schema import SCHEMA_VERSION
from .base import cache_dir, prepare_base
from .config import StudyConfig
from .context import PRIMARY_TOL, StudyContext, log
from .figure_steps import step_figure2, step_figures
from .numerics import NumericsWorker, mode_id, numerics_mode
from .runs import base_identity, build_data, ensure_run
from .table_steps import step_conjecture, step_table1, step_table2, step_table4

REPORT_KIND = "subnetscope.study"
# -- steps --------------------------------------------------------------------------------------------------


def step_base(ctx: StudyContext) -> None:
    """Prepare (or find) the base model."""
    with ctx.step("base"):
        ctx.base_dir = prepare_base(ctx.cfg.base, ctx.cache)
        ctx.base_id = base_identity(ctx.base_dir)
        log(f"  base: {ctx.base_dir} (fingerprint {ctx.base_id})")


def step_data(ctx: StudyContext) -> None:
    """Build every dataset a run uses."""
    assert ctx.base_dir is not None
    with ctx.step("data"):
        for name in dict.fromkeys(r.data for r in ctx.cfg.runs):
            ctx.datasets[name] = build_data(
                ctx.cfg.data[name], ctx.base_dir, ctx.cache, ctx.base_id, ctx.progress, ctx.worker
            )


def measure(ctx: StudyContext, name: str) -> None:
    """Compare run ``name`` with the base (ULP histograms and update mask in the same pass)."""
    from ..anatomy.ulp import compare_ulp

    assert ctx.base_dir is not None
    rec = ctx.runs[name]
    mask = ctx.work / "masks" / f"{name}.mask"
    tols = sorted({*ctx.cfg.tolerances, PRIMARY_TOL})
    rep = compare_ulp(
        ctx.base_dir, rec.path, tols, mask_out=mask, mask_tolerance=PRIMARY_TOL, progress=ctx.progress
    )
    obj = rep.to_json()
    obj["target"]["ref"] = name
    write_text_atomic(ctx.work / "reports" / f"{name}.json", json.dumps(obj, indent=1) + "\n")
    ctx.reports[name] = obj
    ctx.masks[name] = mask


def _mask_for(ctx: StudyContext, full: str, tol: float) -> Path:
    assert ctx.base_dir is not None
    if tol == PRIMARY_TOL:
        return ctx.masks[full]
    from ..comparison import compare

    path = ctx.work / "masks" / f"{full}@{tol:g}.mask"
    compare(
        ctx.base_dir, ctx.runs[full].path, [tol], mask_out=path, mask_tolerance=tol, progress=ctx.progress
    )
    return path


def step_runs(ctx: StudyContext) -> None:
    """Train (or load) every run and measure it."""
    assert ctx.base_dir is not None
    with ctx.step("runs"):
        for spec in ctx.cfg.runs:
            mask = mdig = None
            if spec.mask_from is not None:
                mask = _mask_for(ctx, spec.mask_from, spec.mask_tol)
                mdig = f"{ctx.runs[spec.mask_from].key}@{spec.mask_tol!r}"
            rec = ensure_run(
                spec,
                ctx.base_dir,
                ctx.datasets[spec.data],
                ctx.cache,
                ctx.base_id,
                mask_path=mask,
                mask_digest=mdig,
                progress=ctx.progress,
                worker=ctx.worker,
            )
            ctx.runs[spec.name] = rec
            measure(ctx, spec.name)


def study_json(ctx: StudyContext, total: float) -> dict[str, Any]:
    """The ``subnetscope.study`` document."""
    res = dict(ctx.results)
    if "table4" in res:  # bins are in change_vs_magnitude; keep the table small
        res["table4"] = {
            **res["table4"],
            "rows": [{k: v for k, v in r.items() if k != "bins"} for r in res["table4"]["rows"]],
        }
    return {
        "schema_version": SCHEMA_VERSION,
        "report": REPORT_KIND,
        "tool": {"name": "subnetscope", "version": __version__},
        "name": ctx.cfg.name,
        "config": str(ctx.cfg.source) if ctx.cfg.source else None,
        "base": {"ref": ctx.cfg.base, "path": str(ctx.base_dir), "fingerprint": ctx.base_id},
        "runs": {
            n: {
                "spec": asdict(r.spec),
                "key": r.key,
                "path": str(r.path),
                "cached": r.cached,
                "train_seconds": r.log.get("seconds"),
                "train_cpu_seconds": r.log.get("cpu_seconds"),
                "train_threads": r.log.get("threads"),
                "numerics": (r.log.get("numerics") or {}).get("id"),
                "losses": r.log["losses"],
                "metrics": r.log["metrics"],
                "checkpoints": r.log.get("checkpoints", []),
                "frozen_changed": r.log.get("frozen_changed"),
            }
            for n, r in ctx.runs.items()
        },
        "data": {
            n: {"kind": d.spec.kind, "key": d.key, "items": len(d.items)} for n, d in ctx.datasets.items()
        },
        **res,
        "figures": ctx.figures,
        "skipped": ctx.skipped,
        "timings": {**ctx.timings, "total": round(total, 2)},
        "work_dir": str(ctx.work),
    }


def choose_threads() -> dict[str, Any]:
    """Torch's CPU threads for the study's worker: ``SUBNETSCOPE_THREADS`` if set; else 1 when the machine
    is already busy (1-minute load average at least the CPU count), where more threads than free cores make
    every OpenMP barrier wait for a descheduled thread (1.5–3× slower measured on a shared 2-core machine);
    else torch's default. Only speed depends on it: in the default numerics mode the trained weights are the
    same bits for every thread count (:mod:`.numerics`). Returns what was chosen and why."""
    import os

    import torch

    env = os.environ.get("SUBNETSCOPE_THREADS", "").strip()
    cpus = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if env:
        n, why = max(1, int(env)), "SUBNETSCOPE_THREADS"
    elif cpus > 1 and load >= cpus and "OMP_NUM_THREADS" not in os.environ:
        n, why = 1, f"machine busy (load {load:.1f} on {cpus} CPUs)"
    else:
        n, why = torch.get_num_threads(), "torch default"
    return {"threads": n, "why": why, "load_average": round(load, 2), "cpus": cpus}


def _numerics_record(ctx: StudyContext) -> dict[str, Any]:
    """What the runs were computed with: the worker's own report when it ran, else what the cached runs
    recorded when they were trained."""
    if ctx.worker is not None and ctx.worker.info:
        return {**ctx.worker.info, "source": "this invocation's worker"}
    for rec in ctx.runs.values():
        n = rec.log.get("numerics")
        if n:
            return {**n, "source": f"recorded when {rec.spec.name} was trained"}
    return {"mode": numerics_mode(), "id": mode_id(), "source": "nothing was computed with torch"}


def run_study(
    cfg: StudyConfig,
    *,
    progress: bool = True,
    cache: str | Path | None = None,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Run the whole study of ``cfg`` and return its JSON document (also written to ``<out>/study.json``,
    with ``summary.md`` beside it).

    Sampling and training run in a spawned worker process (:mod:`.numerics`), which imports the calling
    script's main module again: a script that calls this must do so under ``if __name__ == "__main__":``
    (Python's rule for spawned processes; the CLI and ``python -m subnetscope.demo`` already do)."""
    from .tables import render_markdown

    t0 = time.time()
    root = Path(cache) if cache is not None else (cfg.cache or cache_dir())
    ctx = StudyContext(
        cfg, root, root / "studies" / cfg.name, Path(out) if out is not None else cfg.out, progress
    )
    from ..io.outputs import INTO, Output, check_outputs, path_inputs, write_errors

    base = Path(cfg.base)  # a local base checkpoint (a hub id names no local path)
    check_outputs(
        [
            *path_inputs([cfg.source], "the study config"),
            *path_inputs([base] if base.exists() else [], "the base"),
        ],
        [Output(ctx.out, "the study's output directory", INTO)],
    )
    with write_errors(ctx.out):
        ctx.out.mkdir(parents=True, exist_ok=True)
    th = ctx.results["threads"] = choose_threads()
    mode = numerics_mode()
    log(f"[study] torch threads: {th['threads']} ({th['why']}); numerics: {mode_id(mode)}")
    ctx.worker = NumericsWorker(mode, th["threads"])
    try:
        step_base(ctx)
        step_data(ctx)
        step_runs(ctx)
    finally:
        ctx.worker.close()
    ctx.results["numerics"] = num = _numerics_record(ctx)
    if num.get("why_not"):
        log(f"[study] numerics not reproducible here: {'; '.join(num['why_not'])}")
    step_table1(ctx)
    step_table2(ctx)
    step_table4(ctx)
    step_conjecture(ctx)
    with ctx.step("figure2"):
        step_figure2(ctx)
    step_figures(ctx)
    doc = study_json(ctx, time.time() - t0)
    write_text_atomic(ctx.out / "study.json", json.dumps(doc, indent=1) + "\n")
    write_text_atomic(ctx.out / "summary.md", render_markdown(doc) + "\n")
    log(
        f"[study] wrote {ctx.out / 'study.json'} and summary.md ({len(ctx.figures)} figures) in {time.time() - t0:.0f} s"
    )
    return doc
