"""Which renderer takes which report kind: the one table plots and the HTML page dispatch on.

Kinds are the ``"report"`` strings of :data:`subnetscope.results.kinds.REPORT_KINDS`. Renderers are named
``(module, function)`` and imported on use, so the table imports no plotting library.
"""

from __future__ import annotations

#: report kind → the function drawing its plots, ``fn(obj, out_dir) -> list of paths``
PLOTTERS: dict[str, tuple[str, str]] = {
    "subnetscope.compare": ("subnetscope.render.plots", "plot_compare"),
    "subnetscope.rank": ("subnetscope.render.plots", "plot_rank"),
    "subnetscope.series": ("subnetscope.render.series_plots", "plot_series"),
    "subnetscope.tracker": ("subnetscope.render.series_plots", "plot_series"),  # tracker.json: series keys
}

#: report kinds the HTML page takes (series reports have plots only)
HTML_KINDS: tuple[str, ...] = ("subnetscope.compare", "subnetscope.rank")
