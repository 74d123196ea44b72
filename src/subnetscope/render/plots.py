"""Plots from JSON reports (matplotlib, object API with the Agg/SVG canvases; no pyplot, no global state).

- compare reports: the layer × matrix-type sparsity heatmap (paper Figure 3), sparsity vs tolerance
  (exact at every power of two when the report has ``--ulp`` histograms), the ULP histogram;
- rank reports: mean update rank per matrix type;
- several compare reports: sparsity per report (paper Figure 1);
- series reports: delegated to :mod:`subnetscope.render.series_plots`.

:func:`plot_report` dispatches on the report's ``"report"`` key and writes PNG and SVG files atomically.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import SubnetscopeError
from ..naming import KINDS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORMATS = ("png", "svg")


class MissingDependencyError(SubnetscopeError):
    """An optional dependency (matplotlib, a plotting module) is not installed."""


def _figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingDependencyError(
            "plots need matplotlib, which is not installed", "pip install 'subnetscope[plot]'"
        ) from None
    return Figure(figsize=(width, height), layout="constrained")


def _fmt_tol(t: float) -> str:
    from .table import fmt_tol

    return fmt_tol(t)


def label_of(obj: Mapping[str, Any]) -> str:
    """A short label for a report: the target's name (last path component or hub id)."""
    ref = str((obj.get("target") or {}).get("ref") or "")
    if not ref:
        return "report"
    if os.path.sep in ref or os.path.exists(ref):
        return Path(ref.rstrip(os.path.sep)).name or ref
    return ref


def _primary(obj: Mapping[str, Any]) -> int:
    tols = [float(t) for t in obj["tolerances"]]
    p = obj.get("primary_tolerance")
    if p is not None and float(p) in tols:
        return tols.index(float(p))
    return max(range(len(tols)), key=lambda i: tols[i])


# -- compare ------------------------------------------------------------------------------------------------


#: width (inches) of the heatmap: at the 110 dpi of the HTML report that is its full text column (1100 px)
HEATMAP_WIDTH = 10.0
#: smallest font (points) a cell label may get; below it the cells carry no labels (read the colour bar)
MIN_LABEL_PT = 7.5


def heatmap_labels(layers: int, width: float = HEATMAP_WIDTH) -> tuple[int, float] | None:
    """(decimals, font size in points) for the cell labels of a heatmap with ``layers`` columns drawn
    ``width`` inches wide, or None when no label would be legible. One decimal while "99.9" fits a cell at
    9 points or more, else whole percent ("100" at up to 9 points): 24 layers get whole percent at 9 points,
    SmolLM2's 30 at 8.3 points (12.7 pixels at 110 dpi), 70 or more none."""
    cell_pt = max(width - 2.4, 1.0) * 72.0 / max(layers, 1)  # plot area less the axis labels and colour bar
    for decimals, chars in ((1, 4), (0, 3)):
        size = min(9.0, 0.85 * cell_pt / (0.62 * chars))
        if size >= (9.0 if decimals else MIN_LABEL_PT):
            return decimals, size
    return None


def heatmap(obj: Mapping[str, Any], tol_index: int | None = None, width: float = HEATMAP_WIDTH) -> Figure:
    """Update sparsity per (matrix type, layer) at one tolerance (default: the primary one): Figure 3.

    Drawn ``width`` inches wide whatever the number of layers, so it fills the HTML report's column without
    being scaled down; the cells carry their value where it can be read (:func:`heatmap_labels`)."""
    import numpy as np

    k = _primary(obj) if tol_index is None else tol_index
    cells = obj.get("grid") or []
    layers = sorted({int(c["layer"]) for c in cells})
    kinds = [kd for kd in KINDS if any(c["kind"] == kd for c in cells)]
    data = np.full((len(kinds), len(layers)), np.nan)
    for c in cells:
        data[kinds.index(c["kind"]), layers.index(int(c["layer"]))] = 100.0 * float(c["sparsity"][k])
    fig = _figure(width, max(3.0, 0.42 * len(kinds) + 1.7))
    ax = fig.add_subplot()
    tol = _fmt_tol(float(obj["tolerances"][k]))
    if not layers:
        ax.text(0.5, 0.5, "no per-layer tensors in this report", ha="center", va="center")
        ax.set_axis_off()
        return fig
    im = ax.imshow(np.ma.masked_invalid(data), aspect="auto", cmap="viridis", interpolation="nearest")
    step = max(1, -(-len(layers) // 40))  # at most 40 layer ticks
    ax.set_xticks(range(0, len(layers), step), [str(x) for x in layers[::step]])
    ax.set_yticks(range(len(kinds)), kinds)
    ax.set_xlabel("layer")
    ax.set_ylabel("matrix type")
    ax.set_title(f"Update sparsity (%) per layer and matrix type, tol {tol}")
    labels = heatmap_labels(len(layers), width)
    if labels is not None:
        decimals, size = labels
        finite = data[np.isfinite(data)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        mid = (lo + hi) / 2
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                if np.isfinite(data[i, j]):
                    ax.text(j, i, f"{data[i, j]:.{decimals}f}", ha="center", va="center", fontsize=size,
                            color="black" if data[i, j] >= mid else "white")  # fmt: skip
    fig.colorbar(im, ax=ax, label=f"sparsity at {tol} (%)", fraction=0.04, pad=0.01)
    return fig


def _hist_curve(obj: Mapping[str, Any]) -> tuple[list[float], list[float]] | None:
    from ..anatomy import ulp_report

    try:
        blk = ulp_report.histogram_block(obj)
        tols = [float(t) for t in obj["tolerances"] if float(t) > 0] or [1e-5]
        lo, hi = min(tols) / 1e3, max(tols) * 1e4
        edges = [e for e in blk["delta_edges"] if lo <= e <= hi]
        numel = int(obj["overall"]["numel"])
        ys = [100.0 * ulp_report.unchanged_at(obj, e)[0] / numel for e in edges] if numel else []
    except SubnetscopeError:
        return None
    return edges, ys


def tolerance_curve(obj: Mapping[str, Any]) -> Figure:
    """Update sparsity vs tolerance: overall and per matrix type (log tolerance axis)."""
    tols = [float(t) for t in obj["tolerances"]]
    order = sorted(range(len(tols)), key=lambda i: tols[i])
    xs = [tols[i] for i in order]
    fig = _figure(8.0, 4.2)
    ax = fig.add_subplot()
    curve = _hist_curve(obj)
    if curve is not None and curve[0]:
        ax.plot(curve[0], curve[1], color="0.55", lw=1.2, ls="--", marker="|",
                label="overall at every 2^k\n(from the --ulp histograms)")  # fmt: skip
    positive = [x for x in xs if x > 0]
    for kind, c in (obj.get("by_kind") or {}).items():
        ys = [100.0 * float(c["sparsity"][i]) for i in order]
        ax.plot(xs, ys, marker=".", lw=0.8, alpha=0.8, label=kind)
    ov = [100.0 * float(obj["overall"]["sparsity"][i]) for i in order]
    ax.plot(xs, ov, marker="o", lw=2.2, color="black", label="overall")
    if positive:
        ax.set_xscale("log")
    ax.set_xlabel("tolerance |target − base| ≤ tol")
    ax.set_ylabel("update sparsity (%)")
    ax.set_title("Update sparsity vs tolerance")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def ulp_histogram(obj: Mapping[str, Any]) -> Figure:
    """Changed elements by ULP distance, overall and per matrix type (needs ``compare --ulp``)."""
    from ..anatomy import ulp

    s = ulp.summarize(obj)
    bins = s["bins"][1:]
    fig = _figure(8.0, 4.0)
    ax = fig.add_subplot()
    groups = [("overall", s["overall"]), *((k, g) for k, g in s["by_kind"].items() if sum(g["hist"][1:]))]
    width = 0.8 / len(groups)
    for gi, (name, g) in enumerate(groups):
        changed = sum(g["hist"][1:])
        ys = [100.0 * h / changed if changed else 0.0 for h in g["hist"][1:]]
        xs = [i + (gi - (len(groups) - 1) / 2) * width for i in range(len(bins))]
        ax.bar(xs, ys, width=width, label=name, color="black" if name == "overall" else None)
    ov = s["overall"]
    zero = 100.0 * ov["hist"][0] / ov["numel"] if ov["numel"] else 0.0
    ax.set_xticks(range(len(bins)), bins)
    ax.set_xlabel("ULP distance between base and target (ULPs of the stored dtype)")
    ax.set_ylabel("share of changed elements (%)")
    ax.set_title(f"Size of the changes ({zero:.2f}% of elements moved by 0 ULP)")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def comparison_bars(objs: Sequence[Mapping[str, Any]], labels: Sequence[str] | None = None) -> Figure:
    """Update sparsity of several compare reports at their primary tolerance: Figure 1."""
    labels = list(labels) if labels else [label_of(o) for o in objs]
    vals = [100.0 * float(o["overall"]["sparsity"][_primary(o)]) for o in objs]
    fig = _figure(max(5.0, 1.1 * len(objs) + 2), 4.0)
    ax = fig.add_subplot()
    bars = ax.bar(range(len(objs)), vals, color=[f"C{i % 10}" for i in range(len(objs))])
    for b, v in zip(bars, vals):
        ax.text(b.get_x() + b.get_width() / 2, v + 1, f"{v:.1f}%", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(
        range(len(objs)),
        labels,
        rotation=20 if len(objs) > 4 else 0,
        ha="right" if len(objs) > 4 else "center",
    )
    ax.set_ylim(0, 110)
    ax.set_ylabel("update sparsity (%)")
    tols = sorted({_fmt_tol(float(o["tolerances"][_primary(o)])) for o in objs})
    ax.set_title(f"Update sparsity per model (tol {', '.join(tols)})")
    ax.grid(True, axis="y", alpha=0.3)
    return fig


# -- rank ---------------------------------------------------------------------------------------------------


def rank_bars(obj: Mapping[str, Any]) -> Figure:
    """Mean update rank (% of min(rows, cols)) per matrix type, with the min–max range, and the mean
    effective rank beside it."""
    by_kind = obj.get("by_kind") or {}
    kinds = list(by_kind)
    mean = [float(by_kind[k]["mean_rank_pct"]) for k in kinds]
    lo = [m - float(by_kind[k]["min_rank_pct"]) for m, k in zip(mean, kinds)]
    hi = [float(by_kind[k]["max_rank_pct"]) - m for m, k in zip(mean, kinds)]
    eff = [float(by_kind[k]["mean_effective_rank_pct"]) for k in kinds]
    fig = _figure(max(6.5, 0.9 * len(kinds) + 3), 4.0)
    ax = fig.add_subplot()
    xs = list(range(len(kinds)))
    ax.bar([x - 0.2 for x in xs], mean, width=0.4, yerr=[lo, hi], capsize=3, label="rank")
    ax.bar([x + 0.2 for x in xs], eff, width=0.4, label="effective rank", color="C2")
    for x, v in zip(xs, mean):
        ax.text(x - 0.2, v + 1.5, f"{v:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(xs, kinds)
    ax.set_ylim(0, 112)
    ax.set_ylabel("% of min(rows, cols)")
    ov = obj.get("overall") or {}
    ax.set_title(f"Update rank per matrix type (overall mean {float(ov.get('mean_rank_pct', 0)):.2f}%)")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(True, axis="y", alpha=0.3)
    return fig


# -- output -------------------------------------------------------------------------------------------------


def save_figure(fig: Figure, out_dir: str | os.PathLike[str], stem: str) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg`` into ``out_dir`` atomically; returns the paths."""
    from ..io.atomic import atomic_file

    out = Path(out_dir)
    paths = []
    for fmt in FORMATS:
        dest = out / f"{stem}.{fmt}"
        with atomic_file(dest) as tmp:
            fig.savefig(tmp, format=fmt, dpi=130)
        paths.append(dest)
    return paths


def png_base64(fig: Figure, dpi: int = 110) -> str:
    """The figure as a base64 PNG (for embedding in HTML)."""
    import base64

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def has_ulp(obj: Mapping[str, Any]) -> bool:
    """Whether a compare report carries ``--ulp`` histograms."""
    blk = obj.get("ulp")
    return isinstance(blk, Mapping) and "delta_edges" in blk


def plot_compare(obj: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> list[Path]:
    """A compare report's plots: ``heatmap``, ``sparsity_vs_tolerance`` (+ ``ulp_histogram`` with ULP data)."""
    from ..results.schema import check_schema

    check_schema(dict(obj), "subnetscope.compare")
    paths = save_figure(heatmap(obj), out_dir, "heatmap")
    paths += save_figure(tolerance_curve(obj), out_dir, "sparsity_vs_tolerance")
    if has_ulp(obj):
        paths += save_figure(ulp_histogram(obj), out_dir, "ulp_histogram")
    return paths


def plot_rank(obj: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> list[Path]:
    """A rank report's plot: ``rank``."""
    from ..results.schema import check_schema

    check_schema(dict(obj), "subnetscope.rank")
    return save_figure(rank_bars(obj), out_dir, "rank")


def plot_report(obj: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Every plot of one JSON report into ``out_dir`` (PNG and SVG); returns the paths written.

    compare → ``heatmap``, ``sparsity_vs_tolerance`` (+ ``ulp_histogram`` with --ulp); rank → ``rank``;
    series and an UpdateTracker's tracker.json → whatever
    :func:`subnetscope.render.series_plots.plot_series` writes.
    """
    from .fields import check_report

    check_report(obj)
    kind = obj.get("report")
    from .dispatch import PLOTTERS

    target = PLOTTERS.get(str(kind)) if isinstance(kind, str) else None
    if target is not None:
        import importlib

        module, name = target
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and e.name.endswith("series_plots"):
                raise MissingDependencyError(
                    f"series plots are not available: {module} is not installed",
                    "upgrade subnetscope to a version with the series command",
                ) from None
            raise
        res = getattr(mod, name)(obj, out_dir)
        return [Path(p) for p in res] if res is not None else []
    raise SubnetscopeError(
        f"cannot plot a report of kind {kind!r}",
        "plot takes a JSON report written by compare, series or rank (-o / --format json), or a tracker.json",
    )
