"""The ``mask`` and ``overlap`` commands: files, tables, JSON and error exits."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from masks_helpers import SHAPES, base_state, moved, pick, save
from subnetscope.cli import main
from subnetscope.maskfile import MaskFile


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("maskcmd")
    base = base_state(seed=0)
    p1, p2 = pick(base, 0.25, seed=31), pick(base, 0.15, seed=32)
    bdir = save(base, root / "base", shards=2)
    d1 = save(moved(base, p1, signs_seed=4), root / "t1")
    d2 = save(moved(base, p2, signs_seed=5), root / "t2")
    return {"root": root, "base": bdir, "t1": d1, "t2": d2, "p1": p1, "p2": p2}


def run_ok(capsys, *args):
    main([*map(str, args)])
    return capsys.readouterr()


def run_err(capsys, *args):
    with pytest.raises(SystemExit) as e:
        main([*map(str, args)])
    return e.value.code, capsys.readouterr().err


def test_mask_writes_the_known_positions(pair, capsys, tmp_path):
    out = tmp_path / "run1.mask"
    cap = run_ok(capsys, "mask", pair["base"], pair["t1"], "-o", out)
    total = sum(len(v) for v in pair["p1"].values())
    assert f"mask written to {out}" in cap.out and f"{total:,}" in cap.out
    m = MaskFile(out)
    assert m.tolerance == 1e-5 and m.semantics == "exact"
    for name, idx in pair["p1"].items():
        want = np.zeros(math.prod(SHAPES[name]), bool)
        want[idx] = True
        assert np.array_equal(m[name].reshape(-1), want), name
        assert m.count(name) == len(idx)
        t = m.torch(name)
        assert t.dtype == torch.bool and tuple(t.shape) == SHAPES[name]


def test_mask_json_and_options(pair, capsys, tmp_path):
    out = tmp_path / "ref.mask"
    cap = run_ok(capsys, "mask", pair["base"], pair["t2"], "-o", out, "--tol", "1e-6", "--semantics", "reference",
                 "--format", "json")  # fmt: skip
    j = json.loads(cap.out)
    assert j["report"] == "subnetscope.mask" and "schema_version" in j
    assert j["changed"] == sum(len(v) for v in pair["p2"].values())
    assert j["numel"] == sum(math.prod(s) for s in SHAPES.values())
    assert j["tolerance"] == 1e-6 and j["semantics"] == "reference"
    assert j["bytes"] == out.stat().st_size
    m = MaskFile(out)
    assert m.tolerance == 1e-6 and m.semantics == "reference"


def test_mask_size_is_a_sixteenth_of_bf16(tmp_path, capsys):
    big = {"model.layers.0.mlp.up_proj.weight": torch.randn(512, 512).to(torch.bfloat16)}
    b = save(big, tmp_path / "b")
    t = save({k: v * 2 for k, v in big.items()}, tmp_path / "t")
    j = json.loads(run_ok(capsys, "mask", b, t, "-o", tmp_path / "m.mask", "--format", "json").out)
    assert 1 / 16 <= j["bytes_per_bf16_byte"] < 1 / 15


def test_mask_errors(pair, capsys, tmp_path):
    code, err = run_err(capsys, "mask", pair["base"], tmp_path / "missing", "-o", tmp_path / "x.mask")
    assert code == 2 and "subnetscope: error:" in err and "missing" in err
    assert not (tmp_path / "x.mask").exists()
    code, err = run_err(capsys, "mask", pair["base"], pair["t1"], "-o", tmp_path / "x.mask", "--tol", "nan")
    assert code == 2 and "not a finite non-negative number" in err
    with pytest.raises(SystemExit) as e:  # -o is required (click usage error)
        main(["mask", str(pair["base"]), str(pair["t1"])])
    assert e.value.code == 2


@pytest.fixture(scope="module")
def masks(pair, tmp_path_factory):
    root = tmp_path_factory.mktemp("masks")
    m1, m2 = root / "a.mask", root / "b.mask"
    main(["mask", str(pair["base"]), str(pair["t1"]), "-o", str(m1), "--format", "json"])
    main(["mask", str(pair["base"]), str(pair["t2"]), "-o", str(m2), "--format", "json"])
    return m1, m2


def test_overlap_json(pair, masks, capsys, tmp_path):
    capsys.readouterr()
    out = tmp_path / "ov.json"
    j = json.loads(run_ok(capsys, "overlap", *masks, "--format", "json", "-o", out).out)
    assert json.loads(out.read_text()) == j
    p1, p2 = pair["p1"], pair["p2"]
    c1 = sum(len(v) for v in p1.values())
    c2 = sum(len(v) for v in p2.values())
    inter = sum(len(np.intersect1d(p1[k], p2[k])) for k in p1)
    n = sum(math.prod(s) for s in SHAPES.values())
    assert j["changed"] == [c1, c2] and j["intersection"] == inter
    assert j["o1"] == pytest.approx(inter / c1) and j["o2_random"] == pytest.approx(c1 / n)
    assert j["by_kind"]["down"]["changed"][0] == sum(len(v) for k, v in p1.items() if "down_proj" in k)
    assert set(j["by_layer"]) == {"0", "1"}
    assert "magnitude" not in j


def test_overlap_table_with_base(pair, masks, capsys):
    capsys.readouterr()
    out = run_ok(capsys, "overlap", *masks, "--base", pair["base"]).out
    assert "magnitude-matched baseline" in out and "per matrix type" in out and "per layer" in out
    assert "o1 mag" in out
    out = run_ok(capsys, "overlap", *masks, "--no-layers").out
    assert "per layer" not in out and "o1 mag" not in out


def test_overlap_deltas_cli(pair, capsys):
    j = json.loads(
        run_ok(capsys, "overlap", "--deltas", pair["base"], pair["t1"], pair["t2"], "--format", "json").out
    )
    assert j["mode"] == "deltas" and "cosine" in j["deltas"] and "magnitude" in j
    out = run_ok(capsys, "overlap", "--deltas", pair["base"], pair["t1"], pair["t2"]).out
    assert "sign agreement" in out and "cos" in out


def test_overlap_errors(pair, masks, capsys, tmp_path):
    code, err = run_err(capsys, "overlap", masks[0])
    assert code == 2 and "expected two mask files, got 1" in err
    code, err = run_err(capsys, "overlap", *masks, "--deltas", pair["base"], pair["t1"], pair["t2"])
    assert code == 2 and "not both" in err
    code, err = run_err(capsys, "overlap", *masks, "--tol", "1e-3")
    assert code == 2 and "--tol applies to --deltas only" in err
    code, err = run_err(capsys, "overlap", masks[0], tmp_path / "nope.mask")
    assert code == 2 and "nope.mask: no such mask file" in err
    bad = tmp_path / "bad.mask"
    bad.write_bytes(masks[1].read_bytes()[:-7])
    code, err = run_err(capsys, "overlap", masks[0], bad)
    assert code == 2 and "bad.mask: not a readable mask file" in err and "regenerate" in err
    other = save(base_state(seed=5), tmp_path / "other")
    code, err = run_err(capsys, "overlap", *masks, "--base", other)
    assert code == 2 and "made against a base with other weights" in err
