"""The study's own figures (loss curves, the Figure 2 split, change rate vs |w|), PNG only, written atomically.

Per-report plots (the Figure 3 heatmap, the ULP histogram, the Figure 1 bars) come from
:mod:`subnetscope.render.plots`; this module only draws what needs several runs' logs or the overlap bins.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def save_png(fig: Any, path: str | os.PathLike[str], dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG atomically."""
    from ..io.atomic import atomic_file

    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return Path(path)


def loss_curves(runs: Mapping[str, Sequence[float]], title: str = "Training loss per step") -> Any:
    """One line per run (``name → losses``)."""
    fig = _figure(7.0, 4.0)
    ax = fig.add_subplot()
    for i, (name, ys) in enumerate(runs.items()):
        ax.plot(
            range(1, len(ys) + 1),
            ys,
            label=name,
            color=f"C{i % 10}",
            linestyle="--" if name.endswith("sub") else "-",
            marker="." if len(ys) <= 60 else None,
        )
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def metric_curves(runs: Mapping[str, Sequence[float]], ylabel: str, title: str) -> Any:
    """One line per run of a per-step metric (e.g. GRPO's mean reward)."""
    fig = _figure(7.0, 3.6)
    ax = fig.add_subplot()
    for i, (name, ys) in enumerate(runs.items()):
        ax.plot(range(1, len(ys) + 1), ys, label=name, color=f"C{i % 10}", marker=".")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def split_bars(splits: Mapping[str, Mapping[str, int]]) -> Any:
    """Stacked bars of never updated / cancelled / final subnetwork (paper Figure 2), one bar per source."""
    fig = _figure(max(5.0, 2.2 * len(splits) + 2), 4.2)
    ax = fig.add_subplot()
    keys = (
        ("never_updated", "never updated", "#c9d3df"),
        ("cancelled", "updated, then cancelled", "#f0a35e"),
        ("final_subnetwork", "final subnetwork", "#3b6fb6"),
    )
    labels = list(splits)
    bottoms = [0.0] * len(labels)
    for key, lab, color in keys:
        vals = [100.0 * splits[s][key] / splits[s]["numel"] if splits[s]["numel"] else 0.0 for s in labels]
        bars = ax.bar(range(len(labels)), vals, bottom=bottoms, label=lab, color=color, width=0.55)
        for b, v, y0 in zip(bars, vals, bottoms):
            if v >= 2.5:
                ax.text(
                    b.get_x() + b.get_width() / 2,
                    y0 + v / 2,
                    f"{v:.1f}%",
                    ha="center",
                    va="center",
                    fontsize=9,
                )
        bottoms = [a + v for a, v in zip(bottoms, vals)]
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("share of parameters (%)")
    ax.set_title("Never updated / cancelled / final subnetwork (paper Figure 2)")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def change_vs_magnitude(curves: Mapping[str, Sequence[tuple[int, int, int]]]) -> Any:
    """Share of weights updated per exponent bin of the base weight: ``name → [(exponent, numel, changed)]``."""
    fig = _figure(7.0, 4.0)
    ax = fig.add_subplot()
    for i, (name, rows) in enumerate(curves.items()):
        pts = [(e, 100.0 * c / n) for e, n, c in rows if n >= 1000]
        if pts:
            ax.plot(
                [p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=name, color=f"C{i % 10}"
            )
    ax.set_xlabel("exponent e of the base weight (|w| in [2^e, 2^(e+1)); one bf16 step is 2^(e-7))")
    ax.set_ylabel("weights updated (%)")
    ax.set_title("Which weights change depends on their magnitude")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def series_sparsity(
    run: str, steps: Sequence[int], vs_init: Sequence[float], vs_prev: Sequence[float | None]
) -> Any:
    """Sparsity of each checkpoint against the base and against the checkpoint before it (paper Figure 7 /
    App. D), in percent, against the training step."""
    fig = _figure(7.0, 4.0)
    ax = fig.add_subplot()
    ax.plot(steps, [100.0 * v for v in vs_init], marker="o", label="vs the base")
    prev = [(s, 100.0 * v) for s, v in zip(steps, vs_prev) if v is not None]
    if prev:
        ax.plot([p[0] for p in prev], [p[1] for p in prev], marker="s", label="vs the previous checkpoint")
    for s, v in zip(steps, vs_init):
        ax.annotate(f"{100 * v:.1f}", (s, 100.0 * v), textcoords="offset points", xytext=(0, 7),
                    ha="center", fontsize=8)  # fmt: skip
    ax.set_xlabel("training step of the checkpoint")
    ax.set_ylabel("update sparsity (%)")
    ax.set_title(f"{run}: sparsity of each checkpoint (paper Figure 7)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig
