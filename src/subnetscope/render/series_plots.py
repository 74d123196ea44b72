"""Plots of a ``series`` report (paper Figures 5–7, and the Figure 2 split), PNG and SVG.

Drawn with matplotlib's object API (``Figure`` + the Agg canvas): no pyplot state, no display needed.
Every figure is written atomically as ``<name>.png`` and ``<name>.svg``.
"""

from __future__ import annotations

import pathlib
from typing import Any

from ..errors import SubnetscopeError

#: figure name → what it shows
FIGURES = {
    "series_sparsity": "update sparsity of each checkpoint vs init, and the share ever updated (Figure 5)",
    "series_outside_final": "share of each checkpoint's updates outside the final subnetwork (Figure 6)",
    "series_consecutive": "update sparsity between consecutive checkpoints (Figure 7)",
    "series_split": "never updated / cancelled / final subnetwork (Figure 2)",
}


def _x(steps: list[dict[str, Any]]) -> tuple[list[int], str]:
    if steps and all(s.get("step") is not None for s in steps):
        return [int(s["step"]) for s in steps], "training step"
    return [int(s["index"]) for s in steps], "checkpoint"


def _pct(vals: list[float | None]) -> list[float]:
    return [float("nan") if v is None else 100.0 * v for v in vals]


def _save(fig: Any, out_dir: pathlib.Path, name: str) -> list[pathlib.Path]:
    from ..io.atomic import atomic_file

    paths = []
    for ext in ("png", "svg"):
        dest = out_dir / f"{name}.{ext}"
        with atomic_file(dest) as tmp:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
        paths.append(dest)
    return paths


def plot_series(obj: dict[str, Any], out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Draw the figures of a ``subnetscope.series`` JSON report into ``out_dir``; return the files written.

    Per matrix type curves are drawn beside the whole-model one when the report has ``by_kind``.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if obj.get("report") not in ("subnetscope.series", "subnetscope.tracker"):
        raise SubnetscopeError(
            f"not a subnetscope.series or subnetscope.tracker report (found {obj.get('report')!r})",
            "give the JSON written by `series -o` or an UpdateTracker's tracker.json",
        )
    steps = obj.get("steps") or []
    if not steps:
        raise SubnetscopeError("the series report has no steps", "regenerate it with `subnetscope series`")
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    x, xlabel = _x(steps)
    kinds = {
        k: g for k, g in (obj.get("by_kind") or {}).items() if g.get("split", {}).get("final_subnetwork")
    }
    tol = obj.get("tolerance")
    note = f"updated: |Δ| > {tol:g}" if isinstance(tol, float) else ""
    written: list[pathlib.Path] = []

    def line_fig(
        name: str, key: str, kind_key: str | None, ylabel: str, title: str, extra: Any = None
    ) -> None:
        fig = Figure(figsize=(6.4, 4.0))
        ax = fig.add_subplot()
        ax.plot(x, _pct([s.get(key) for s in steps]), marker="o", color="black", lw=2, label="whole model")
        if extra is not None:
            extra(ax)
        if kind_key is not None:
            for k, g in kinds.items():
                if kind_key in g:
                    ax.plot(x, _pct(g[kind_key]), lw=1, alpha=0.7, label=k)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title + (f" ({note})" if note else ""), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        written.extend(_save(fig, out_dir, name))

    def ever(ax: Any) -> None:
        ax.plot(x, _pct([None if s.get("ever_updated_share") is None else 1 - s["ever_updated_share"]
                         for s in steps]), ls="--", color="tab:red", label="never updated so far")  # fmt: skip

    line_fig("series_sparsity", "sparsity_vs_init", "sparsity_vs_init", "update sparsity vs init (%)",
             "Sparsity of each checkpoint against init", ever)  # fmt: skip
    line_fig("series_outside_final", "outside_final_share", "outside_final_share",
             "updates outside the final subnetwork (%)", "Updates outside the final subnetwork")  # fmt: skip
    line_fig("series_consecutive", "sparsity_vs_prev", "sparsity_vs_prev", "update sparsity vs previous (%)",
             "Sparsity between consecutive checkpoints")  # fmt: skip

    split = obj.get("split") or {}
    n = split.get("numel") or 0
    if n:
        fig = Figure(figsize=(6.4, 1.8 + 0.25 * len(kinds)))
        ax = fig.add_subplot()
        labels = ["whole model", *kinds]
        groups = [split, *(g["split"] for g in kinds.values())]
        left = [0.0] * len(groups)
        for key, color in (
            ("never_updated", "#bbbbbb"),
            ("cancelled", "tab:orange"),
            ("final_subnetwork", "tab:blue"),
        ):
            vals = [100.0 * g[key] / g["numel"] if g.get("numel") else 0.0 for g in groups]
            ax.barh(labels, vals, left=left, color=color, label=key.replace("_", " "))
            left = [a + b for a, b in zip(left, vals)]
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.set_xlabel("share of parameters (%)")
        ax.set_title(
            "Never updated / cancelled / final subnetwork" + (f" ({note})" if note else ""), fontsize=10
        )
        ax.legend(fontsize=7, ncol=3, loc="lower center", bbox_to_anchor=(0.5, 1.12))
        written.extend(_save(fig, out_dir, "series_split"))
    return written
