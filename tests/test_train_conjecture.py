"""Conjecture 1: full vs subnetwork finetuning, on checkpoints whose differences are known by construction."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from factory import llama_names, perturb, random_state, save_checkpoint
from subnetscope.cli import cli
from subnetscope.naming import classify
from subnetscope.train import conjecture


@pytest.fixture(scope="module")
def triple(tmp_path_factory):
    """(base, full, sub) directories and states: S misses part of F's subnetwork and drifts by 5e-5 elsewhere."""
    root = tmp_path_factory.mktemp("conj")
    shapes = llama_names(layers=2, hidden=32, inter=64, vocab=64)
    base = random_state(shapes, dtype=torch.float32, seed=0)
    full, _ = perturb(base, 0.25, seed=1)
    g = torch.Generator().manual_seed(2)
    sub = {}
    for name, b in base.items():
        f = full[name]
        s = f.clone()
        in_sub = (f - b).abs() > 1e-5
        u = torch.rand(f.shape, generator=g)
        s[in_sub & (u < 0.1)] = b[in_sub & (u < 0.1)]  # not reproduced at all
        near = (u >= 0.1) & (u < 0.25)
        s[near] = f[near] + 5e-5  # off by 5e-5: differs at 1e-5, agrees at 1e-4
        sub[name] = s
    dirs = [
        save_checkpoint(st, root / n, shards=k)
        for st, n, k in ((base, "B", 1), (full, "F", 2), (sub, "S", 1))
    ]
    return dirs, (base, full, sub)


def oracle(states, tols):
    """Brute-force counts in float64: overall and per matrix type."""
    base, full, sub = states
    out: dict[str, dict] = {}
    for name in base:
        b, f, s = (x[name].double().numpy().reshape(-1) for x in (base, full, sub))
        kind = classify(name, "llama")[1]
        in_sub = np.abs(f - b) > 1e-5
        d = np.abs(s - f)
        for key in ("overall", kind):
            o = out.setdefault(
                key,
                {"numel": 0, "subnetwork": 0, "unchanged": [0] * len(tols), "reproduced": [0] * len(tols)},
            )
            o["numel"] += b.size
            o["subnetwork"] += int(in_sub.sum())
            for k, t in enumerate(tols):
                o["unchanged"][k] += int((d <= t).sum())
                o["reproduced"][k] += int((in_sub & (d <= t)).sum())
    return out


def test_counts_match_oracle(triple):
    (b, f, s), states = triple
    res = conjecture(b, f, s, jobs=2)
    want = oracle(states, [1e-5, 1e-4])
    o = res.overall
    assert (o.numel, o.subnetwork, o.unchanged, o.reproduced) == (
        want["overall"]["numel"], want["overall"]["subnetwork"], want["overall"]["unchanged"],
        want["overall"]["reproduced"],
    )  # fmt: skip
    for kind, g in res.by_kind.items():
        w = want[kind]
        assert (g.numel, g.subnetwork, g.unchanged, g.reproduced) == (
            w["numel"], w["subnetwork"], w["unchanged"], w["reproduced"],
        ), kind  # fmt: skip
    # by construction: ~10 % of F's subnetwork reverted and ~15 % off by 5e-5; everything agrees at 1e-4
    assert 0.70 < res.reproduced[1e-5] < 0.80
    assert 0.85 < res.reproduced[1e-4] < 0.95
    assert res.identical[1e-4] > res.identical[1e-5]
    assert 0.7 < res.full_sparsity < 0.85


def test_full_equals_sub_is_perfect(triple):
    (b, f, _), _ = triple
    res = conjecture(b, f, f, tolerances=[1e-5], jobs=1)
    assert res.identical == {1e-5: 1.0} and res.reproduced == {1e-5: 1.0}
    assert res.overall.identical == res.overall.numel


def test_cli_json_and_human(triple, tmp_path):
    (b, f, s), states = triple
    runner = CliRunner()
    r = runner.invoke(cli, ["conjecture", "--base", str(b), "--full", str(f), "--sub", str(s), "--format", "json",
                            "-o", str(tmp_path / "c.json")])  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["report"] == "subnetscope.conjecture" and doc["schema_version"] == "1.0"
    assert doc["tolerances"] == [1e-5, 1e-4]
    want = oracle(states, [1e-5, 1e-4])["overall"]
    assert doc["overall"]["reproduced"] == want["reproduced"]
    assert doc["overall"]["unchanged"] == want["unchanged"]
    assert json.loads((tmp_path / "c.json").read_text()) == doc
    r = runner.invoke(cli, ["conjecture", "--base", str(b), "--full", str(f), "--sub", str(s)])
    assert r.exit_code == 0, r.output
    assert "full's subnetwork reproduced" in r.stdout and "sub identical to full" in r.stdout
    assert "per matrix type" in r.stdout and "paper §4" in r.stdout


def test_cli_missing_input(tmp_path, triple):
    import subprocess
    import sys

    (b, f, _), _ = triple
    p = subprocess.run(
        [sys.executable, "-m", "subnetscope", "conjecture", "--base", str(b), "--full", str(f), "--sub",
         str(tmp_path / "nope")],
        capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert p.returncode == 2
    assert p.stderr.startswith("subnetscope: error: ") and "nope" in p.stderr


@pytest.mark.parametrize("semantics", ["exact", "reference"])
def test_reproduced_equals_mask_arithmetic(triple, tmp_path, semantics):
    """The in-pass consumer agrees with masks written by compare itself, in both semantics."""
    from subnetscope.comparison import compare
    from subnetscope.maskfile import MaskFile

    (b, f, s), _ = triple
    res = conjecture(b, f, s, semantics=semantics, jobs=2)
    compare(b, f, [1e-5], semantics, mask_out=tmp_path / "full.mask", jobs=1)
    full = MaskFile(tmp_path / "full.mask")
    for k, tol in enumerate([1e-5, 1e-4]):
        compare(f, s, [tol], semantics, mask_out=tmp_path / f"fs{k}.mask", jobs=1)
        diff = MaskFile(tmp_path / f"fs{k}.mask")
        want = sum(int(np.count_nonzero(full[n] & ~diff[n])) for n in full)
        assert res.overall.reproduced[k] == want, tol
    assert res.overall.subnetwork == sum(full.count(n) for n in full)
