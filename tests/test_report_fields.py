"""``plot`` and ``report`` on a JSON report whose fields have the wrong types: one line naming the field, exit 2.

Before: ``ValueError`` / ``TypeError`` tracebacks from inside the plotting code. Each case edits one field of
a real report (compare, rank, series) and runs the command; nothing is written.
"""

from __future__ import annotations

import copy
import json

import pytest

from subnetscope.cli import main
from subnetscope.render.fields import ReportFormatError, check_report


@pytest.fixture(scope="module")
def docs(llama_pair):
    from subnetscope.anatomy.rank import rank_report
    from subnetscope.comparison import compare
    from subnetscope.series import series

    bdir, tdir, *_ = llama_pair
    return {
        "compare": json.loads(json.dumps(compare(bdir, tdir).to_json())),
        "rank": json.loads(json.dumps(rank_report(bdir, tdir, device="cpu").to_json())),
        "series": json.loads(json.dumps(series(bdir, [tdir]).to_json())),
    }


def _at(doc, path):
    """(container, last key) of a dotted path with [i] indices."""
    parts = []
    for piece in path.split("."):
        while "[" in piece:
            head, rest = piece.split("[", 1)
            if head:
                parts.append(head)
            idx, piece = rest.split("]", 1)
            parts.append(int(idx))
        if piece:
            parts.append(piece)
    cur = doc
    for p in parts[:-1]:
        cur = cur[p]
    return cur, parts[-1]


def _first_kind(doc):
    return next(iter(doc["by_kind"]))


MISSING = object()
# (report, field path ({kind}: the first matrix type), bad value, message fragment)
CASES = [
    ("compare", "tolerances", "1e-5", "field 'tolerances' is the string '1e-5', expected a list"),
    ("compare", "tolerances[0]", "abc", "field 'tolerances[0]' is the string 'abc', expected a number"),
    ("compare", "tolerances", [], "field 'tolerances' is empty"),
    ("compare", "primary_tolerance", "1e-5", "field 'primary_tolerance' is the string '1e-5', expected a number or null"),
    ("compare", "overall", MISSING, "field 'overall' is missing"),
    ("compare", "overall", [1, 2], "field 'overall' is a list, expected an object"),
    ("compare", "overall.numel", "12", "field 'overall.numel' is the string '12', expected an integer"),
    ("compare", "overall.numel", 1.5, "field 'overall.numel' is the number 1.5, expected an integer"),
    ("compare", "overall.sparsity", "high", "field 'overall.sparsity' is the string 'high', expected a list"),
    ("compare", "overall.sparsity[1]", None, "field 'overall.sparsity[1]' is null, expected a number"),
    ("compare", "overall.sparsity[0]", True, "field 'overall.sparsity[0]' is a boolean, expected a number"),
    ("compare", "overall.sparsity", [0.5], "field 'overall.sparsity' has 1 values for 4 tolerances"),
    ("compare", "grid", {}, "field 'grid' is an object, expected a list"),
    ("compare", "grid[0].layer", "0", "field 'grid[0].layer' is the string '0', expected an integer"),
    ("compare", "grid[0].kind", 3, "field 'grid[0].kind' is the number 3, expected a string"),
    ("compare", "grid[0].sparsity", [0.1, 0.2], "field 'grid[0].sparsity' has 2 values for 4 tolerances"),
    ("compare", "by_kind.{kind}", [], "field 'by_kind.{kind}' is a list, expected an object"),
    ("compare", "by_kind.{kind}.unchanged[0]", "7", "field 'by_kind.{kind}.unchanged[0]' is the string '7'"),
    ("compare", "target", "x", "field 'target' is the string 'x', expected an object"),
    ("compare", "target.ref", 5, "field 'target.ref' is the number 5, expected a string or null"),
    ("compare", "findings", "none", "field 'findings' is the string 'none', expected a list"),
    ("compare", "findings", [{"kind": 1, "tensor": "w", "detail": ""}], "field 'findings[0].kind' is the number 1"),
    ("compare", "tensors", {}, "field 'tensors' is an object, expected a list"),
    ("compare", "tensors[0].name", None, "field 'tensors[0].name' is null, expected a string"),
    ("rank", "overall.matrices", "3", "field 'overall.matrices' is the string '3', expected an integer"),
    ("rank", "by_kind.{kind}.mean_rank_pct", "high", "field 'by_kind.{kind}.mean_rank_pct' is the string 'high'"),
    ("rank", "tensors[0].rank", 1.5, "field 'tensors[0].rank' is the number 1.5, expected an integer"),
    ("rank", "tensors[0].max_rank", MISSING, "field 'tensors[0].max_rank' is missing"),
    ("rank", "rtol_multipliers[0]", "a", "field 'rtol_multipliers[0]' is the string 'a', expected a number"),
    ("rank", "overall", None, "field 'overall' is null, expected an object"),
    ("series", "steps[0].index", "1", "field 'steps[0].index' is the string '1', expected an integer"),
    ("series", "steps[0].sparsity_vs_init", "x", "field 'steps[0].sparsity_vs_init' is the string 'x'"),
    ("series", "steps", {"a": 1}, "field 'steps' is an object, expected a list"),
    ("series", "split.shares.cancelled", "x", "field 'split.shares.cancelled' is the string 'x'"),
]  # fmt: skip


def _broken(docs, kind, path, value):
    doc = copy.deepcopy(docs[kind])
    path = path.replace("{kind}", _first_kind(doc)) if "by_kind" in path else path
    box, key = _at(doc, path)
    if value is MISSING:
        del box[key]
    else:
        box[key] = value
    return doc


def _commands(kind):
    cmds = [("plot", lambda f, out: ["plot", f, "-o", out / "plots"])]
    if kind != "series":
        cmds.append(("report", lambda f, out: ["report", f, "-o", out / "r.html"]))
    return cmds


@pytest.mark.parametrize(("kind", "path", "value", "fragment"), CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_wrong_field_is_named(docs, tmp_path, capsys, kind, path, value, fragment):
    doc = _broken(docs, kind, path, value)
    fragment = fragment.replace("{kind}", _first_kind(docs[kind])) if "{kind}" in fragment else fragment
    f = tmp_path / f"{kind}.json"
    f.write_text(json.dumps(doc))
    with pytest.raises(ReportFormatError) as ei:
        check_report(doc)
    assert fragment in str(ei.value)
    for _name, argv in _commands(kind):
        with pytest.raises(SystemExit) as e:
            main([str(a) for a in argv(f, tmp_path)])
        out, err = capsys.readouterr()
        assert e.value.code == 2 and out == "", err
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"subnetscope: error: {f}: "), err
        assert fragment in lines[0] and "regenerate" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f.name]  # no plot, no page


def test_unchecked_field_falls_back_to_one_line(docs, tmp_path, capsys):
    doc = copy.deepcopy(docs["compare"])
    doc["ulp"] = {"delta_edges": "xyz", "tolerances": [1e-5]}  # read deep inside the plotting code
    f = tmp_path / "c.json"
    f.write_text(json.dumps(doc))
    with pytest.raises(SystemExit) as e:
        main(["plot", str(f), "-o", str(tmp_path / "plots")])
    _out, err = capsys.readouterr()
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"subnetscope: error: {f}: a field has the wrong type or is missing (")
    assert "Traceback" not in err


@pytest.mark.parametrize("kind", ["compare", "rank", "series"])
def test_real_reports_pass(docs, kind):
    check_report(docs[kind], "x")
