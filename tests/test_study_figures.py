"""Figures a person can read at the size they are shown: the Figure 3 heatmap keeps its width whatever the
number of layers, and its cell labels get a legible size or are left out."""

from __future__ import annotations

import pytest

from subnetscope.render.plots import HEATMAP_WIDTH, MIN_LABEL_PT, heatmap, heatmap_labels


@pytest.mark.parametrize(
    ("layers", "want"),
    [(2, (1, 9.0)), (16, (1, 9.0)), (24, (0, 9.0)), (30, (0, 8.33)), (69, None), (80, None)],
)
def test_label_size(layers, want):
    got = heatmap_labels(layers)
    if want is None:
        assert got is None
    else:
        assert got is not None and got[0] == want[0] and got[1] == pytest.approx(want[1], abs=0.01)
        assert got[1] >= MIN_LABEL_PT


def _report(layers: int, kinds=("q", "k", "v", "o", "gate", "up", "down")):
    grid = [
        {"layer": i, "kind": k, "sparsity": [0.5 + 0.4 * ((i * 7 + j) % 10) / 10]}
        for i in range(layers)
        for j, k in enumerate(kinds)
    ]
    return {"tolerances": [1e-5], "grid": grid}


@pytest.mark.parametrize("layers", [2, 30, 80])
def test_heatmap_size_and_labels(layers):
    fig = heatmap(_report(layers))
    assert tuple(fig.get_size_inches()) == (HEATMAP_WIDTH, pytest.approx(0.42 * 7 + 1.7))
    ax = fig.axes[0]
    texts = ax.texts
    lab = heatmap_labels(layers)
    if lab is None:
        assert len(texts) == 0
    else:
        assert len(texts) == 7 * layers
        assert all(t.get_fontsize() == pytest.approx(lab[1]) for t in texts)
        first = texts[0].get_text()
        assert first == f"{100 * (0.5):.{lab[0]}f}"
    assert list(ax.get_xticks()) == list(range(0, layers, 2 if layers > 40 else 1))  # at most 40 ticks
