"""NaN or Inf in an update: ``rank`` and ``compare --rank`` report the matrix as non-finite and rank the
others (before: ``numpy.linalg.LinAlgError`` and a traceback)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from anatomy_helpers import low_rank_plus_noise, run_main
from factory import llama_names, save_checkpoint
from subnetscope.anatomy.rank import NONFINITE_DETAIL, rank_report

NAN_T = "model.layers.0.self_attn.k_proj.weight"  # NaN in TARGET
INF_T = "model.layers.1.self_attn.v_proj.weight"  # +Inf in TARGET
OVERFLOW = "model.layers.1.self_attn.o_proj.weight"  # finite on both sides, the float32 delta overflows
RANK2 = "model.layers.0.self_attn.q_proj.weight"
BAD = {NAN_T, INF_T, OVERFLOW}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("nonfinite")
    rng = np.random.default_rng(7)
    shapes = llama_names(layers=2, hidden=24, inter=40, vocab=32)
    base = {n: (rng.standard_normal(s) * 0.02).astype(np.float32) for n, s in shapes.items()}
    target = {n: v.copy() for n, v in base.items()}
    m, n = shapes[RANK2]
    target[RANK2] = (base[RANK2] + low_rank_plus_noise(rng, m, n, 2, noise=0.0, spread=1.0) * 0.5).astype(
        np.float32
    )
    target[NAN_T][3, 4] = np.nan
    target[INF_T][0, 0] = np.inf
    base[OVERFLOW][2, 2], target[OVERFLOW][2, 2] = -3e38, 3e38
    b = save_checkpoint({k: torch.from_numpy(v) for k, v in base.items()}, root / "base")
    t = save_checkpoint({k: torch.from_numpy(v) for k, v in target.items()}, root / "target")
    matrices = sum(1 for s in shapes.values() if len(s) == 2)
    return b, t, matrices


def test_library_reports_nonfinite_and_ranks_the_rest(pair):
    b, t, matrices = pair
    rep = rank_report(b, t, device="cpu")
    assert {f.tensor for f in rep.findings} == BAD
    assert all(f.kind == "nonfinite" and f.detail == NONFINITE_DETAIL for f in rep.findings)
    ranked = {m.name: m.rank for m in rep.tensors}
    assert len(ranked) == matrices - 3 and not BAD & set(ranked)
    assert ranked[RANK2] == 2 and sum(ranked.values()) == 2  # every other update is zero
    j = rep.to_json()
    assert j["selection"]["ranked"] == matrices - 3 and j["selection"]["nonfinite"] == 3
    assert sorted(f["tensor"] for f in j["findings"]) == sorted(BAD)
    assert type(rep).from_json(json.loads(json.dumps(j))).findings == rep.findings


def test_spectrum_path_too(pair):
    b, t, _ = pair
    rep = rank_report(b, t, device="cpu", layers=[0], spectrum_k=2)
    assert [f.tensor for f in rep.findings] == [NAN_T]
    assert {m.name: m.rank for m in rep.tensors}[RANK2] == 2


def test_cli_rank_human_and_json(pair, capsys):
    b, t, matrices = pair
    code, out, err = run_main(["rank", str(b), str(t), "--device", "cpu"], capsys)
    assert code == 0, err
    assert "Traceback" not in err
    assert f"{matrices - 3} of {matrices} 2-D updates ranked" in out
    assert "findings (3)" in out
    for name in BAD:
        assert f"  nonfinite       {name}: {NONFINITE_DETAIL}" in out.splitlines()
    code, out, err = run_main(["rank", str(b), str(t), "--device", "cpu", "--format", "json"], capsys)
    assert code == 0
    assert sorted(f["tensor"] for f in json.loads(out)["findings"]) == sorted(BAD)


def test_cli_compare_rank(pair, capsys):
    b, t, _ = pair
    code, out, err = run_main(["compare", str(b), str(t), "--rank", "--format", "json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert sorted(f["tensor"] for f in doc["rank"]["findings"]) == sorted(BAD)
    # compare's own findings name the tensors holding NaN/Inf (the overflow is finite on both sides)
    assert sorted(f["tensor"] for f in doc["findings"] if f["kind"] == "nonfinite") == sorted({NAN_T, INF_T})
    code, out, err = run_main(["compare", str(b), str(t), "--rank"], capsys)
    assert code == 0 and f"  nonfinite       {OVERFLOW}: {NONFINITE_DETAIL}" in out.splitlines()
