"""FP8 block-scaled weights: stored codes, dequantized values (vs a brute-force torch dequantisation), scales."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import subnetscope
from factory import bits
from oracle import exact_counts, reference_counts
from scale_helpers import (
    BLOCK,
    FP8_WEIGHTS,
    dequant_bf16,
    dequant_exact,
    fp8_codes,
    fp8_pair,
    random_fp8,
    save_fp8,
)
from subnetscope import fp8
from subnetscope.cli import cli
from subnetscope.dtypes import DTYPES, reference_threshold
from subnetscope.kernels import fp8 as fp8k
from subnetscope.kernels import registry

TOLS = [1e-9, 1e-8, 1e-7, 1e-6, 1e-5]


@pytest.fixture(scope="module")
def fp8_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fp8")
    base, target, known = fp8_pair()
    return save_fp8(base, root / "b", shards=2), save_fp8(target, root / "t"), base, target, known


def _exact_oracle(base, target, name, tols):
    va = dequant_exact(base[name], base[name + "_scale_inv"], BLOCK).numpy().reshape(-1)
    vb = dequant_exact(target[name], target[name + "_scale_inv"], BLOCK).numpy().reshape(-1)
    return exact_counts(va.view(np.uint64), vb.view(np.uint64), "F64", tols)


def test_codes_dequantized_and_scales_exact(fp8_dirs):
    bdir, tdir, base, target, known = fp8_dirs
    r = subnetscope.compare(bdir, tdir, TOLS)
    by = {t.name: t for t in r.tensors}
    for name in FP8_WEIGHTS:
        t = by[name]
        n = base[name].numel()
        # stored codes: exactly the codes changed by construction
        assert t.counts.identical == n - known["codes"][name], name
        assert bool(t.counts.identical == n) == (known["codes"][name] == 0)
        # dequantized values: against a brute-force float64 dequantisation
        want = _exact_oracle(base, target, name, TOLS)
        dq = t.extra["fp8_dequant"]
        assert dq["unchanged"] == want["unchanged"], name
        assert dq["identical"] == want["identical"], name
        assert dq["numel"] == n and dq["block"] == list(BLOCK) and dq["scale"] == name + "_scale_inv"
        assert dq["scale_blocks_changed"] == known["scale_blocks"][name]
    up = "model.layers.0.mlp.experts.0.up_proj.weight"
    # re-encoded block: 64 codes changed, not one value
    assert by[up].counts.identical == by[up].counts.numel - 64
    assert by[up].extra["fp8_dequant"]["identical"] == by[up].counts.numel
    gate1 = "model.layers.0.mlp.experts.1.gate_proj.weight"
    assert by[gate1].counts.identical == by[gate1].counts.numel  # codes untouched, a block moved
    nz = int((fp8_codes(base[gate1])[8:16, 0:8] & 0x7F != 0).sum())
    assert by[gate1].extra["fp8_dequant"]["identical"] == by[gate1].counts.numel - nz
    # non-FP8 tensors carry no fp8 entry
    assert "fp8_dequant" not in by["model.embed_tokens.weight"].extra
    assert "fp8_dequant" not in by[gate1 + "_scale_inv"].extra

    sec = r.to_json()["fp8"]
    assert sec["weights"] == len(FP8_WEIGHTS)
    assert sec["block_size"] == list(BLOCK) and sec["block_source"] == "config"
    assert sec["scales"]["tensors"] == len(FP8_WEIGHTS)
    assert sec["scales"]["changed_tensors"] == 2 and sec["scales"]["changed_blocks"] == 2
    assert sec["scales"]["blocks"] == sum(-(-r_ // 8) * -(-c // 8) for r_, c in FP8_WEIGHTS.values())
    total = sum(base[n].numel() for n in FP8_WEIGHTS)
    assert sec["stored_codes"]["numel"] == sec["dequantized"]["numel"] == total
    assert sec["stored_codes"]["identical"] == total - sum(known["codes"].values())
    deq_unchanged = [sum(_exact_oracle(base, target, n, TOLS)["unchanged"][k] for n in FP8_WEIGHTS)
                     for k in range(len(TOLS))]  # fmt: skip
    assert sec["dequantized"]["unchanged"] == deq_unchanged
    # the dequantized model: FP8 weights by value + embed + norm (one element changed), no scales
    others = base["model.embed_tokens.weight"].numel() + 16
    assert sec["dequantized_model"]["numel"] == total + others
    assert sec["dequantized_model"]["unchanged"] == [u + others - 1 for u in deq_unchanged]
    assert sec["skipped"] == []


def test_reference_semantics_match_bf16_conversion(fp8_dirs):
    bdir, tdir, base, target, _ = fp8_dirs
    r = subnetscope.compare(bdir, tdir, TOLS, semantics="reference")
    for t in r.tensors:
        if t.name not in FP8_WEIGHTS:
            continue
        s = t.name + "_scale_inv"
        a = bits(dequant_bf16(base[t.name], base[s], BLOCK))
        b = bits(dequant_bf16(target[t.name], target[s], BLOCK))
        assert t.extra["fp8_dequant"]["unchanged"] == reference_counts(a, b, "BF16", TOLS), t.name
        assert t.extra["fp8_dequant"]["identical"] == int((a == b).sum())


@pytest.mark.parametrize("backend", registry.BACKENDS)
def test_kernel_chunks_at_any_offset(backend):
    g = torch.Generator().manual_seed(7)
    shape, block = (37, 29), (8, 5)
    wa, wb = random_fp8(shape, g), random_fp8(shape, g)
    wb.view(torch.uint8)[::3] = wa.view(torch.uint8)[::3]  # a third identical
    grid = (-(-shape[0] // block[0]), -(-shape[1] // block[1]))
    sa = torch.rand(grid, generator=g) * 1e-6
    sb = sa.clone()
    sb[1, 2] *= 3
    want = exact_counts(
        dequant_exact(wa, sa, block).numpy().reshape(-1).view(np.uint64),
        dequant_exact(wb, sb, block).numpy().reshape(-1).view(np.uint64), "F64", TOLS,
    )  # fmt: skip
    a, b = fp8_codes(wa).numpy().reshape(-1), fp8_codes(wb).numpy().reshape(-1)
    fa, fb = sa.double().numpy().reshape(-1), sb.double().numpy().reshape(-1)
    for step in (1, 7, 29, 100, a.size):
        out = np.zeros(len(TOLS) + 3, dtype=np.int64)
        for s in range(0, a.size, step):
            fp8k.count_dequant(a[s : s + step], b[s : s + step], "F8_E4M3", fa, fb, s, shape[1], block,
                              np.array(TOLS), False, out, backend=backend)  # fmt: skip
        assert list(out[: len(TOLS)]) == want["unchanged"], step
        assert out[len(TOLS)] == want["identical"]
    # reference semantics: every backend agrees with torch's bf16 conversion
    thr = np.array([reference_threshold(t, DTYPES["BF16"]) for t in TOLS])
    out = np.zeros(len(TOLS) + 3, dtype=np.int64)
    fp8k.count_dequant(a, b, "F8_E4M3", fa, fb, 0, shape[1], block, thr, True, out, backend=backend)
    ra, rb = bits(dequant_bf16(wa, sa, block)), bits(dequant_bf16(wb, sb, block))
    assert list(out[: len(TOLS)]) == reference_counts(ra, rb, "BF16", TOLS)


@pytest.mark.parametrize("code", ["F8_E4M3", "F8_E5M2"])
def test_dequantized_every_pair_of_codes(code):
    """All 256 x 256 code pairs under two scales per side, both semantics: every backend equals numpy."""
    a = np.repeat(np.arange(256, dtype=np.uint8), 256)
    b = np.tile(np.arange(256, dtype=np.uint8), 256)
    # a 512 x 128 weight in 128 x 64 blocks: a 4 x 2 grid of scales, equal on both sides but one
    sa = np.array([1e-3, 3.0, 0.5, 7e-6, 1.0, 2.0**-20, 448.0, 1e-30])
    sb = sa.copy()
    sb[1] = 2.0
    for ref in (False, True):
        thr = (
            np.array([0.0, 1e-6, 1e-3, 1.0])
            if not ref
            else np.array([reference_threshold(t, DTYPES["BF16"]) for t in (0.0, 1e-6, 1e-3, 1.0)])
        )
        outs = []
        for backend in registry.BACKENDS:
            out = np.zeros(7, dtype=np.int64)
            fp8k.count_dequant(a, b, code, sa, sb, 0, 128, (128, 64), thr, ref, out, backend=backend)
            outs.append(out)
        for got in outs[:-1]:
            assert np.array_equal(got, outs[-1]), (ref, got, outs[-1])


def test_independent_of_chunking_and_jobs(fp8_dirs):
    bdir, tdir, *_ = fp8_dirs
    ref = subnetscope.compare(bdir, tdir, TOLS).dumps()
    assert subnetscope.compare(bdir, tdir, TOLS, chunk_elements=40, jobs=2).dumps() == ref
    assert subnetscope.compare(bdir, tdir, TOLS, executor="serial", chunk_elements=16).dumps() == ref


def test_block_size_inferred_without_config(tmp_path):
    base, target, _ = fp8_pair(seed=3)
    with_cfg = subnetscope.compare(save_fp8(base, tmp_path / "b1"), save_fp8(target, tmp_path / "t1"), TOLS)
    r = subnetscope.compare(
        save_fp8(base, tmp_path / "b2", block=None), save_fp8(target, tmp_path / "t2", block=None), TOLS
    )
    sec = r.to_json()["fp8"]
    assert (
        sec["block_source"] == "inferred" and sec["block_size"] == [8, 8] and sec["config_block_size"] is None
    )
    assert sec["dequantized"] == with_cfg.to_json()["fp8"]["dequantized"]


def test_block_inference_rules():
    assert fp8._pick(*fp8._valid(7168, 56)) == 128  # DeepSeek-V3: 7168 = 56 x 128
    assert fp8._pick(*fp8._valid(200, 2)) == 128  # ambiguous: 100..199 all fit; 128 preferred
    assert fp8._pick(*fp8._valid(20, 3)) == 8  # 7..9 fit: the power of two
    assert fp8._pick(*fp8._valid(30, 4)) == 8  # 8..9 fit
    assert fp8._pick(*fp8._valid(21, 3)) == 8  # 7..10
    assert fp8._valid(10, 4) == (3, 3)
    assert fp8._grid_shape((), 5) == (1, 1) and fp8._grid_shape((5,), 5) == (5, 1)
    assert fp8._grid_shape((3,), 5) is None


def test_per_tensor_scale_and_skipped_weights(tmp_path):
    g = torch.Generator().manual_seed(1)
    w = random_fp8((6, 10), g)
    base = {"a.weight": w, "a.weight_scale_inv": torch.tensor([2e-3]), "b.weight": w.clone(),
            "b.weight_scale_inv": torch.ones(1, 2)}  # fmt: skip
    target = {k: v.clone() for k, v in base.items()}
    target["a.weight_scale_inv"] = torch.tensor([4e-3])  # every nonzero value doubles
    del target["b.weight_scale_inv"]
    r = subnetscope.compare(
        save_fp8(base, tmp_path / "b", block=None), save_fp8(target, tmp_path / "t", block=None)
    )
    by = {t.name: t for t in r.tensors}
    dq = by["a.weight"].extra["fp8_dequant"]
    assert dq["block"] == [6, 10] and dq["scale_blocks"] == 1 and dq["scale_blocks_changed"] == 1
    assert dq["identical"] == int((fp8_codes(w) & 0x7F == 0).sum())
    sec = r.to_json()["fp8"]
    assert sec["weights"] == 1
    assert sec["skipped"] == [{"tensor": "b.weight", "reason": "scale b.weight_scale_inv missing on one side, "
                               "resized or not a float tensor"}]  # fmt: skip


def test_plain_checkpoints_have_no_fp8_section(llama_pair):
    bdir, tdir, *_ = llama_pair
    obj = subnetscope.compare(bdir, tdir).to_json()
    assert "fp8" not in obj
    assert all("fp8_dequant" not in t for t in obj["tensors"])


def test_cli_shows_the_fp8_section(fp8_dirs):
    bdir, tdir, *_ = fp8_dirs
    res = CliRunner().invoke(cli, ["compare", str(bdir), str(tdir), "--no-layers"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "FP8 block-scaled weights: 5 tensors, block 8x8 (config)" in res.output
    assert "dequantized values" in res.output and "scale tensors: 2 of 5 changed (2 of" in res.output
