"""`subnetscope plot`: dispatch on the report kind, PNG + SVG files, and plots that show the report's data."""

from __future__ import annotations

import json
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from anatomy_helpers import adam_like_pair, f32_known_rank_pair, run_main
from subnetscope.anatomy import ulp
from subnetscope.anatomy.rank import rank_report
from subnetscope.comparison import compare
from subnetscope.naming import KINDS
from subnetscope.render import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    root = tmp_path_factory.mktemp("plots")
    b, t = adam_like_pair(root, lr=1e-5, layers=3, hidden=32, inter=64, vocab=64)
    with_ulp = json.loads(ulp.compare_ulp(b, t).dumps())
    plain = json.loads(compare(b, t).dumps())
    rb, rt = f32_known_rank_pair(root / "rk", {"model.layers.0.self_attn.q_proj.weight": 5})
    rank = rank_report(rb, rt, device="cpu").to_json()
    paths = {}
    for name, obj in (("ulp", with_ulp), ("plain", plain), ("rank", rank)):
        paths[name] = root / f"{name}.json"
        paths[name].write_text(json.dumps(obj))
    return {"ulp": with_ulp, "plain": plain, "rank": rank, "paths": paths}


def check_files(paths: list[Path], stems: list[str]) -> None:
    assert sorted(p.name for p in paths) == sorted(f"{s}.{f}" for s in stems for f in ("png", "svg"))
    for p in paths:
        data = p.read_bytes()
        if p.suffix == ".png":
            assert data.startswith(PNG_MAGIC) and len(data) > 5000
        else:
            root = ET.fromstring(data)
            assert root.tag.endswith("svg")


def test_compare_plots_via_cli(reports, tmp_path, capsys):
    out = tmp_path / "figs"
    code, stdout, _ = run_main(["plot", str(reports["paths"]["ulp"]), "-o", str(out)], capsys)
    assert code == 0
    paths = [Path(x) for x in stdout.split()]
    check_files(paths, ["heatmap", "sparsity_vs_tolerance", "ulp_histogram"])
    assert all(p.parent == out for p in paths)
    assert not list(out.glob(".tmp-*"))  # atomic writes leave no temporaries
    svg = (out / "heatmap.svg").read_text()
    assert "layer" in svg and "matrix type" in svg


def test_plain_compare_has_no_ulp_plot(reports, tmp_path):
    check_files(plots.plot_report(reports["plain"], tmp_path), ["heatmap", "sparsity_vs_tolerance"])


def test_rank_plot(reports, tmp_path, capsys):
    code, stdout, _ = run_main(["plot", str(reports["paths"]["rank"]), "-o", str(tmp_path)], capsys)
    assert code == 0
    check_files([Path(x) for x in stdout.split()], ["rank"])


def test_heatmap_shows_the_grid(reports):
    obj = reports["ulp"]
    fig = plots.heatmap(obj)
    arr = fig.axes[0].images[0].get_array()
    kinds = [k for k in KINDS if any(c["kind"] == k for c in obj["grid"])]
    p = obj["tolerances"].index(obj["primary_tolerance"])
    for c in obj["grid"]:
        assert arr[kinds.index(c["kind"]), c["layer"]] == pytest.approx(100 * c["sparsity"][p])
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == kinds


def test_tolerance_curve_shows_overall_and_histogram(reports):
    obj = reports["ulp"]
    ax = plots.tolerance_curve(obj).axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    ov = lines["overall"]
    assert list(ov.get_xdata()) == sorted(obj["tolerances"])
    assert list(ov.get_ydata()) == pytest.approx([100 * s for s in obj["overall"]["sparsity"]])
    hist = next(ln for lab, ln in lines.items() if lab.startswith("overall at every"))
    xs, ys = np.asarray(hist.get_xdata()), np.asarray(hist.get_ydata())
    at = {float(x): float(y) for x, y in zip(xs, ys)}
    for t, s in zip(obj["tolerances"], obj["overall"]["sparsity"]):
        assert at[t] == pytest.approx(100 * s)  # exact at compare's own tolerances
    assert ax.get_xscale() == "log"


def test_series_is_delegated(reports, tmp_path, monkeypatch):
    seen = {}

    def plot_series(obj, out_dir):
        seen["obj"] = obj
        p = Path(out_dir) / "series.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(PNG_MAGIC)
        return [p]

    fake = types.ModuleType("subnetscope.render.series_plots")
    fake.plot_series = plot_series  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "subnetscope.render.series_plots", fake)
    obj = {"report": "subnetscope.series", "schema_version": "1.0"}
    assert plots.plot_report(obj, tmp_path) == [tmp_path / "series.png"]
    assert seen["obj"] is obj


def test_series_module_missing_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "subnetscope.render.series_plots", None)
    f = tmp_path / "s.json"
    f.write_text(json.dumps({"report": "subnetscope.series", "schema_version": "1.0"}))
    code, _, err = run_main(["plot", str(f), "-o", str(tmp_path / "o")], capsys)
    assert code == 2
    assert "series plots are not available: subnetscope.render.series_plots is not installed" in err


def test_unknown_kind_and_bad_file(tmp_path, capsys):
    f = tmp_path / "x.json"
    f.write_text(json.dumps({"report": "something.else"}))
    code, _, err = run_main(["plot", str(f), "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and "cannot plot a report of kind 'something.else'" in err
    code, _, err = run_main(["plot", str(tmp_path / "missing.json"), "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and "missing.json: no such file" in err
    f.write_text("{not json")
    code, _, err = run_main(["plot", str(f), "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and "not a readable JSON file" in err


def test_newer_schema_is_refused(reports, tmp_path):
    obj = dict(reports["plain"], schema_version="9.0")
    with pytest.raises(plots.SubnetscopeError, match=r"report schema 9\.0 is not supported"):
        plots.plot_report(obj, tmp_path)


def test_missing_matplotlib_is_a_clear_error(reports, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(plots.MissingDependencyError, match=r"pip install 'subnetscope\[plot\]'"):
        plots.heatmap(reports["plain"])
