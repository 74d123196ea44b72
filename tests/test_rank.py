"""Update rank: the Gram-eigenvalue rank against torch.linalg.matrix_rank on matrices of known rank, the
checkpoint pass, selection, the CLI, and the spectrum metrics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from anatomy_helpers import f32_known_rank_pair, low_rank_plus_noise, run_main
from factory import llama_names, random_state, save_checkpoint
from subnetscope.anatomy import rank as rk
from subnetscope.anatomy.spectrum import principal_angles, spectrum_metrics, top_singular
from subnetscope.cli import cli
from subnetscope.errors import UsageError
from subnetscope.plan import make_plan
from subnetscope.refs import load_checkpoint

SHAPES = [
    (64, 48, 5),
    (48, 64, 17),
    (96, 96, 50),
    (120, 40, 40),
    (40, 120, 1),
    (128, 128, 127),
    (33, 200, 33),
]


@pytest.mark.parametrize(("m", "n", "r"), SHAPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rank_equals_matrix_rank_on_known_rank(m, n, r, seed):
    a = low_rank_plus_noise(np.random.default_rng(seed * 100 + m), m, n, r)
    want = int(torch.linalg.matrix_rank(torch.from_numpy(a)))
    got = rk.delta_rank(a)
    assert want == r
    assert got.rank == r
    assert got.max_rank == min(m, n)
    assert got.rank_pct == pytest.approx(100 * r / min(m, n))


def test_full_rank_random_and_zero_and_rank_one():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((70, 50)).astype(np.float32)
    assert rk.delta_rank(a).rank == int(torch.linalg.matrix_rank(torch.from_numpy(a))) == 50
    z = rk.delta_rank(np.zeros((30, 20), dtype=np.float32))
    assert (z.rank, z.stable_rank, z.effective_rank, z.sigma_max) == (0, 0.0, 0.0, 0.0)
    one = np.outer(rng.standard_normal(40), rng.standard_normal(25)).astype(np.float32)
    r1 = rk.delta_rank(torch.from_numpy(one))  # torch tensors are accepted too
    assert r1.rank == 1 and r1.stable_rank == pytest.approx(1.0) and r1.effective_rank == pytest.approx(1.0)


def test_rank_at_tolerance_multiples():
    m, n = 80, 60
    tau = max(m, n) * rk.EPS32  # σ_max = 1
    # singular values between the multiplied tolerances: 1, then tau * 10^(j + 1/2)
    sig = np.array([1.0] + [tau * 10 ** (j + 0.5) for j in range(-1, 3)])
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.standard_normal((m, sig.size)))
    v, _ = np.linalg.qr(rng.standard_normal((n, sig.size)))
    a = ((u * sig) @ v.T).astype(np.float32)
    mults = [0.1, 1.0, 10.0, 100.0, 1000.0]
    got = rk.delta_rank(a, mults)
    want_known = [int(np.count_nonzero(sig > mu * tau)) for mu in mults]
    assert want_known == [5, 4, 3, 2, 1]
    a64 = torch.from_numpy(a).double()
    via_torch = [int(torch.linalg.matrix_rank(a64, rtol=mu * tau)) for mu in mults]
    assert got.ranks_at == want_known == via_torch
    assert got.rank == got.ranks_at[1] == int(torch.linalg.matrix_rank(torch.from_numpy(a)))


def test_stable_and_effective_rank_against_svd():
    a = low_rank_plus_noise(np.random.default_rng(9), 90, 70, 30, spread=2.0)
    s = torch.linalg.svdvals(torch.from_numpy(a).double()).numpy()
    got = rk.delta_rank(a)
    assert got.sigma_max == pytest.approx(s[0], rel=1e-9)
    assert got.stable_rank == pytest.approx((s**2).sum() / s[0] ** 2, rel=1e-9)
    kept = s[s > got.tol]
    p = kept / kept.sum()
    assert got.effective_rank == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-6)
    assert 1 < got.effective_rank < got.rank == 30


def test_rejects_non_matrices():
    with pytest.raises(UsageError, match="2-D"):
        rk.delta_rank(np.zeros(5, dtype=np.float32))


# -- checkpoints -------------------------------------------------------------------------------------------

RANKS = {
    "model.layers.0.self_attn.q_proj.weight": 7,
    "model.layers.0.mlp.down_proj.weight": 48,  # 48 x 80: full rank
    "model.layers.1.mlp.gate_proj.weight": 3,  # 80 x 48
    "model.embed_tokens.weight": 20,  # 64 x 48 (tall: streamed in row blocks)
}


@pytest.fixture(scope="module")
def known_pair(tmp_path_factory):
    return f32_known_rank_pair(tmp_path_factory.mktemp("rank"), RANKS)


def test_rank_report_on_known_ranks(known_pair, monkeypatch):
    from subnetscope.anatomy import rank_math

    monkeypatch.setattr(rank_math, "_BLOCK_ELEMENTS", 100)  # several row blocks even for these small matrices
    b, t = known_pair
    rep = rk.rank_report(b, t, device="cpu")
    by = {m.name: m for m in rep.tensors}
    assert len(rep.tensors) == sum(1 for s in llama_names(layers=2, hidden=48, inter=80, vocab=64).values()
                                   if len(s) == 2)  # fmt: skip
    for name, m in by.items():
        assert m.rank == RANKS.get(name, 0), name
    obj = json.loads(json.dumps(rep.to_json()))
    assert obj["report"] == "subnetscope.rank" and obj["schema_version"]
    t0 = next(x for x in obj["tensors"] if x["name"] == "model.layers.0.self_attn.q_proj.weight")
    assert (t0["rank"], t0["max_rank"], t0["kind"], t0["layer"]) == (7, 48, "q", 0)
    q = obj["by_kind"]["q"]
    assert q["matrices"] == 2 and q["mean_rank_pct"] == pytest.approx(100 * 7 / 48 / 2)
    assert obj["overall"]["matrices"] == len(rep.tensors)
    back = rk.RankReport.from_json(obj)
    assert [m.rank for m in back.tensors] == [m.rank for m in rep.tensors]
    assert back.overall() == rep.overall()


def test_rank_report_matches_matrix_rank_on_bf16_pair(llama_pair):
    bdir, tdir, base, target, _ = llama_pair
    rep = rk.rank_report(bdir, tdir, device="cpu")
    assert rep.tensors
    for m in rep.tensors:
        delta = target[m.name].float() - base[m.name].float()
        assert m.rank == int(torch.linalg.matrix_rank(delta)), m.name
        assert m.dtype == "BF16"


def test_resized_rows_use_the_shared_rows(tmp_path):
    shapes = llama_names(layers=1, hidden=16, inter=32, vocab=40)
    base = random_state(shapes, dtype=torch.float32, seed=0)
    target = {k: v.clone() for k, v in base.items()}
    g = torch.Generator().manual_seed(3)
    extra = torch.randn(8, 16, generator=g)
    upd = torch.randn(40, 2, generator=g) @ torch.randn(2, 16, generator=g)
    target["model.embed_tokens.weight"] = torch.cat([base["model.embed_tokens.weight"] + upd, extra])
    rep = rk.rank_report(save_checkpoint(base, tmp_path / "b"), save_checkpoint(target, tmp_path / "t"))
    emb = next(m for m in rep.tensors if m.kind == "embed")
    assert (emb.rows, emb.cols, emb.rank) == (40, 16, 2)


def test_selection(known_pair):
    b, t = known_pair
    plan = make_plan(load_checkpoint(b), load_checkpoint(t))
    all2d = rk.select_pairs(plan.pairs)
    s1 = rk.select_pairs(plan.pairs, sample=4, seed=1)
    assert len(s1) == 4 and s1 == rk.select_pairs(plan.pairs, sample=4, seed=1)
    assert [p.index for p in s1] == sorted(p.index for p in s1)  # plan order kept
    assert rk.select_pairs(plan.pairs, sample=10_000) == all2d
    l1 = rk.select_pairs(plan.pairs, layers=[1])
    assert l1 and all(p.layer == 1 for p in l1)
    with pytest.raises(UsageError, match=r"layer\(s\) 7 not in the checkpoint \(layers: 0..1\)"):
        rk.select_pairs(plan.pairs, layers=[1, 7])
    from subnetscope.cli.common import parse_layers  # CLI syntax, parsed by the CLI

    assert parse_layers("0-2, 5,5") == [0, 1, 2, 5]
    with pytest.raises(UsageError, match="'x' is not a layer"):
        parse_layers("1,x")


def test_cli_rank(known_pair, tmp_path, capsys):
    b, t = known_pair
    out = tmp_path / "rank.json"
    r = CliRunner().invoke(
        cli, ["rank", str(b), str(t), "--format", "json", "-o", str(out), "--device", "cpu"]
    )
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout)
    assert obj == json.loads(out.read_text())
    assert {x["name"]: x["rank"] for x in obj["tensors"] if x["rank"]} == RANKS
    r = CliRunner().invoke(cli, ["rank", str(b), str(t), "--rank-layers", "0", "--tensors"])
    assert r.exit_code == 0, r.output
    assert "mean rank" in r.output and "model.layers.0.self_attn.q_proj.weight" in r.output
    assert "model.layers.1." not in r.output
    code, _, err = run_main(["rank", str(b), str(t), "--rank-layers", "9"], capsys)
    assert code == 2
    assert err.strip() == (
        "subnetscope: error: --rank-layers: layer(s) 9 not in the checkpoint (layers: 0..1); pick layers that exist"
    )


def test_cli_compare_rank(known_pair, capsys):
    b, t = known_pair
    r = CliRunner().invoke(cli, ["compare", str(b), str(t), "--rank-sample", "3", "--format", "json"])
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout)
    assert obj["report"] == "subnetscope.compare"
    assert obj["rank"]["report"] == "subnetscope.rank" and len(obj["rank"]["tensors"]) == 3
    code, out, err = run_main(["compare", str(b), str(t), "--rank-layers", "x"], capsys)
    assert code == 2 and out == ""  # refused before the pass
    assert "--rank-layers: 'x' is not a layer number or range; use e.g. 0,5,10 or 0-3" in err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_gpu_matches_cpu(known_pair):  # pragma: no cover - needs a GPU
    b, t = known_pair
    cpu = rk.rank_report(b, t, device="cpu")
    gpu = rk.rank_report(b, t, device="cuda")
    assert [m.rank for m in gpu.tensors] == [m.rank for m in cpu.tensors]
    assert [m.ranks_at for m in gpu.tensors] == [m.ranks_at for m in cpu.tensors]


# -- spectrum ----------------------------------------------------------------------------------------------


def test_top_singular_matches_svd():
    a = np.random.default_rng(0).standard_normal((50, 30)).astype(np.float32)
    for mat in (a, a.T):
        u, s, v = top_singular(mat, 5)
        uu, ss, vh = torch.linalg.svd(torch.from_numpy(mat).double(), full_matrices=False)
        assert np.allclose(s, ss[:5].numpy(), rtol=1e-10)
        assert np.allclose(np.abs((u * uu[:, :5].numpy()).sum(0)), 1, atol=1e-9)
        assert np.allclose(np.abs((v * vh[:5].T.numpy()).sum(0)), 1, atol=1e-9)


def test_principal_angles_of_a_known_rotation():
    m, n, k, theta = 40, 20, 4, 0.01  # radians
    rng = np.random.default_rng(1)
    sig = np.linspace(10, 1, n)
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    u0 = np.eye(m)[:, :n]
    u1 = u0.copy()
    u1[:, 0] = np.cos(theta) * u0[:, 0] + np.sin(theta) * np.eye(m)[:, m - 1]  # e_m is outside span(u0)
    w0 = ((u0 * sig) @ v.T).astype(np.float32)
    w1 = ((u1 * sig) @ v.T).astype(np.float32)
    res = spectrum_metrics(w0, w1, k)
    assert res["left_angles_deg"][-1] == pytest.approx(math.degrees(theta), rel=1e-3)
    assert max(res["left_angles_deg"][:-1]) < 1e-3
    assert max(res["right_angles_deg"]) < 1e-3
    same = spectrum_metrics(w0, w0.copy(), k)
    assert max(same["left_angles_deg"]) < 1e-4 and same["enrichment"] is None
    eye = np.eye(6)[:, :3]
    assert principal_angles(eye, eye) == pytest.approx([0, 0, 0], abs=1e-7)


def test_enrichment_extremes():
    rng = np.random.default_rng(2)
    w0 = low_rank_plus_noise(rng, 60, 50, 4, noise=1e-3)
    k = 4
    u, s, v = top_singular(w0, k)
    recon = np.abs((u * s) @ v.T)
    count = 300  # 10 % of the entries
    top = np.argsort(recon.reshape(-1))[-count:]
    w_principal = w0.copy().reshape(-1)
    w_principal[top] += 1e-2
    res = spectrum_metrics(w0, w_principal.reshape(w0.shape), k)
    assert res["update_density"] == pytest.approx(0.1)
    assert res["update_in_principal"] == 1.0 and res["enrichment"] == pytest.approx(10.0)
    assert res["mass_enrichment"] == pytest.approx(10.0)
    assert res["update_in_random"] < 0.25
    w_off = w0.copy().reshape(-1)
    bottom = np.argsort(recon.reshape(-1))[:count]
    w_off[bottom] += 1e-2
    off = spectrum_metrics(w0, w_off.reshape(w0.shape), k)
    assert off["enrichment"] == 0.0


def test_rank_report_with_spectrum(known_pair):
    b, t = known_pair
    rep = rk.rank_report(b, t, layers=[0], spectrum_k=3, device="cpu")
    q = next(m for m in rep.tensors if m.kind == "q")
    assert q.spectrum is not None and q.spectrum["k"] == 3 and len(q.spectrum["left_angles_deg"]) == 3
    assert q.spectrum["update_density"] == 1.0  # a dense low-rank update touches every entry
    untouched = next(m for m in rep.tensors if m.kind == "k")
    assert untouched.spectrum is not None and untouched.spectrum["enrichment"] is None
    assert "spectrum" in rep.to_json()["tensors"][0]
    with pytest.raises(UsageError, match="at least 1"):
        rk.rank_report(b, t, spectrum_k=0)


def test_torch_code_path_on_cpu():
    """The GPU code path (torch Gram + eigvalsh/eigh) run on the CPU via the device string "cpu:0"."""
    rng = np.random.default_rng(4)
    a = low_rank_plus_noise(rng, 70, 50, 13)
    np_res, torch_res = rk.delta_rank(a), rk.delta_rank(a, device="cpu:0")
    assert torch_res.rank == np_res.rank == 13
    assert torch_res.ranks_at == np_res.ranks_at
    assert torch_res.stable_rank == pytest.approx(np_res.stable_rank, rel=1e-9)
    for mat in (a, a.T):
        u0, s0, v0 = top_singular(mat, 4)
        u1, s1, v1 = top_singular(mat, 4, device="cpu:0")
        assert np.allclose(s0, s1, rtol=1e-9)
        assert np.allclose(np.abs((u0 * u1).sum(0)), 1, atol=1e-9)
        assert np.allclose(np.abs((v0 * v1).sum(0)), 1, atol=1e-9)
    w1 = a + (rng.random(a.shape) < 0.1) * np.float32(1e-3)
    x, y = spectrum_metrics(a, w1, 4), spectrum_metrics(a, w1, 4, device="cpu:0")
    assert x["enrichment"] == pytest.approx(y["enrichment"])
    assert x["left_angles_deg"] == pytest.approx(y["left_angles_deg"], abs=1e-6)


def test_device_choice():
    assert rk.resolve_device("cpu") == "cpu"
    assert rk.resolve_device("auto") in ("cpu", "cuda")
    with pytest.raises(UsageError, match="unknown device 'tpu'; use auto, cpu or cuda"):
        rk.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="torch sees no CUDA GPU"):
            rk.resolve_device("cuda")
