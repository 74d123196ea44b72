"""ULP and |Δ| histograms: hand-made bf16 pairs with known distances, brute-force oracles, and the
histogram answering compare's own counts exactly at its tolerances."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from anatomy_helpers import adam_like_pair, bf16_bits
from factory import save_checkpoint
from subnetscope.anatomy import ulp
from subnetscope.cli import cli
from subnetscope.comparison import compare
from subnetscope.dtypes import DTYPES, decode, decode_table, round_to_dtype
from subnetscope.errors import SubnetscopeError
from subnetscope.io.safetensors_header import TensorInfo
from subnetscope.kernels.registry import backends_for
from subnetscope.plan import Pair

BF16 = DTYPES["BF16"]

# (base code, target code, ULP distance or None for "nonfinite", what it shows)
CASES = [
    (0x3F80, 0x3F80, 0, "identical 1.0"),
    (0x3F80, 0x3F81, 1, "1.0 -> next up"),
    (0x3F80, 0x3F7F, 1, "1.0 -> next down, across the power of two"),
    (0x3F7F, 0x3F81, 2, "straddling 1.0"),
    (0x3F80, 0x4000, 128, "1.0 -> 2.0: one binade"),
    (0x3F00, 0x4000, 256, "0.5 -> 2.0: two binades"),
    (0x3F00, 0x4001, 257, "just past 256"),
    (0x3F80, 0x3F84, 4, "4 ULPs"),
    (0x3F80, 0x3F85, 5, "5 ULPs"),
    (0x3F80, 0x3F90, 16, "16 ULPs"),
    (0x3F80, 0x3F91, 17, "17 ULPs"),
    (0x0000, 0x8000, 0, "+0 -> -0 is no step"),
    (0x8000, 0x0001, 1, "-0 -> smallest subnormal"),
    (0x8001, 0x0001, 2, "-tiny -> +tiny crosses zero once"),
    (0x007F, 0x0080, 1, "largest subnormal -> smallest normal"),
    (0x807F, 0x0080, 255, "-largest subnormal -> +smallest normal"),
    (0xBF80, 0x3F80, 2 * 0x3F80, "-1.0 -> 1.0"),
    (0x7F7F, 0x7F80, None, "largest finite -> +Inf"),
    (0x3F80, 0x7FC0, None, "1.0 -> NaN"),
    (0x7FC0, 0x7FC0, 0, "NaN -> same NaN bits: identical"),
    (0x7FC0, 0x7FC1, None, "NaN -> other NaN"),
    (0xFF80, 0x7F80, None, "-Inf -> +Inf"),
]


def fake_pair(code: str, n: int, target_code: str | None = None) -> Pair:
    dt, tdt = DTYPES[code], DTYPES[target_code or code]
    b = TensorInfo("w", dt, (n,), Path("/nonexistent"), 0, n * dt.itemsize)
    t = TensorInfo("w", tdt, (n,), Path("/nonexistent"), 0, n * tdt.itemsize)
    return Pair(0, "w", b, t, n, 0, "q")


def oracle_distance(a: int, b: int) -> int:
    """Distance as the number of distinct finite bf16 values stepped (±0 is one value): by sorting them."""
    table = decode_table("BF16")
    vals = np.unique(table[np.isfinite(table)])
    return abs(int(np.searchsorted(vals, table[b])) - int(np.searchsorted(vals, table[a])))


@pytest.mark.parametrize(("a", "b", "dist", "why"), CASES, ids=[c[3] for c in CASES])
def test_bf16_distance_cases(a, b, dist, why):
    ab, bb = np.array([a], dtype=np.uint16), np.array([b], dtype=np.uint16)
    nf = ulp.nonfinite_mask(ab, BF16) | ulp.nonfinite_mask(bb, BF16)
    if dist is None:
        assert nf[0] and a != b
        return
    if a != b:
        assert not nf[0]
        assert int(ulp.ulp_distance(ab, bb, BF16)[0]) == dist
        assert oracle_distance(a, b) == dist
    hist = ulp.ULPHistograms([1e-5]).chunk(fake_pair("BF16", 1), 0, ab, bb)
    expect = np.zeros(8, dtype=np.int64)
    expect[ulp.ulp_bin(np.array([dist], dtype=np.uint64))[0]] = 1
    assert hist.ulp.tolist() == expect.tolist()


def test_nonfinite_bin_and_labels():
    a = np.array([c[0] for c in CASES], dtype=np.uint16)
    b = np.array([c[1] for c in CASES], dtype=np.uint16)
    part = ulp.ULPHistograms([1e-5]).chunk(fake_pair("BF16", a.size), 0, a, b)
    assert part.ulp[ulp.ULP_BIN_LABELS.index("nonfinite")] == sum(c[2] is None for c in CASES)
    assert part.ulp.sum() == a.size
    # every finite label bin is hit by the cases, and the boundaries land where the labels say
    for lab, d in [("0", 0), ("1", 1), ("2", 2), ("3-4", 4), ("5-16", 5), ("5-16", 16), ("17-256", 17),
                   ("17-256", 256), (">256", 257)]:  # fmt: skip
        assert ulp.ULP_BIN_LABELS[int(ulp.ulp_bin(np.array([d], dtype=np.uint64))[0])] == lab


def test_random_bf16_distance_against_sorting_oracle():
    rng = np.random.default_rng(3)
    table = decode_table("BF16")
    finite = np.flatnonzero(np.isfinite(table)).astype(np.uint16)
    a = rng.choice(finite, 4000)
    b = rng.choice(finite, 4000)
    near = rng.random(4000) < 0.5  # half of them: a small step from a, across signs and binades
    b[near] = np.clip(a[near].astype(np.int64) + rng.integers(-300, 300, near.sum()), 0, 0x7F7F).astype(
        np.uint16
    )
    vals = np.unique(table[np.isfinite(table)])
    oracle = np.abs(np.searchsorted(vals, table[b]) - np.searchsorted(vals, table[a]))
    assert (ulp.ulp_distance(a, b, BF16).astype(np.int64) == oracle).all()


@pytest.mark.parametrize("code", ["F16", "F32", "F64", "F8_E4M3", "F8_E5M2"])
def test_other_dtypes_across_power_of_two(code):
    dt = DTYPES[code]
    one = {"F16": 0x3C00, "F32": 0x3F800000, "F64": 0x3FF0000000000000, "F8_E4M3": 0x38, "F8_E5M2": 0x3C}[
        code
    ]
    a = np.array([one, one, 0, 1 << (8 * dt.itemsize - 1) | 1], dtype=dt.bits_dtype)
    b = np.array([one - 1, one + 1, 1 << (8 * dt.itemsize - 1), 1], dtype=dt.bits_dtype)
    assert ulp.ulp_distance(a, b, dt).tolist() == [1, 1, 0, 2]
    va, vb = decode(a[:2], dt), decode(b[:2], dt)
    assert vb[1] - va[1] == 2 * (va[0] - vb[0])  # the step below 1.0 is half the step above it


def test_spacings_match_neighbours():
    table = decode_table("BF16")
    codes = np.arange(0, 0x7F80, dtype=np.uint16)  # every finite positive code
    up, down = ulp.spacings(codes, BF16)
    assert np.array_equal(up[:-1], table[codes[1:]] - table[codes[:-1]])
    assert np.array_equal(down[1:], table[codes[1:]] - table[codes[:-1]])
    assert down[0] == up[0] == table[1]
    f32 = DTYPES["F32"]
    x = np.array([1.0, 2.0, 0.0, np.float32(3.4028235e38), np.inf], dtype=np.float32)
    up, down = ulp.spacings(x.view(np.uint32), f32)
    assert up[0] == 2.0**-23 and down[0] == 2.0**-24 and up[1] == 2.0**-22
    assert up[2] == down[2] == 2.0**-149
    assert up[3] == down[3] and np.isnan(up[4])


def brute_step_lost(bits: np.ndarray, code: str, s: float) -> np.ndarray:
    dt = DTYPES[code]
    w = decode(bits, dt)
    plus = round_to_dtype(w + s, dt)
    minus = round_to_dtype(w - s, dt)
    with np.errstate(invalid="ignore"):
        return np.isfinite(w) & (plus == w) & (minus == w)


@pytest.mark.parametrize("step", [2.0**-10, 1e-5, 3e-6, 2.0**-133])
def test_step_lost_against_rounding(step):
    rng = np.random.default_rng(0)
    codes = np.concatenate([
        rng.integers(0, 1 << 16, 20000).astype(np.uint16),
        np.array([0x0000, 0x8000, 0x0001, 0x3F80, 0xBF80, 0x3B80, 0x3B81, 0x3B7F, 0x7F7F], dtype=np.uint16),
    ])  # fmt: skip
    got = ulp.step_lost(codes, BF16, step)
    want = brute_step_lost(codes, "BF16", step)
    assert np.array_equal(got, want)


def test_step_lost_ties_go_to_even():
    # at 1.0 (even code) a step of exactly half an ULP rounds back; at the next (odd) code it does not
    half = 2.0**-8  # half of the ULP above 1.0 (2^-7); half of the ULP below is 2^-9
    assert ulp.step_lost(np.array([0x3F81], dtype=np.uint16), BF16, half).tolist() == [False]
    assert ulp.step_lost(np.array([0x3F82], dtype=np.uint16), BF16, half).tolist() == [True]
    # 1.0: the step down (2^-8 is a whole ULP below 1.0) survives
    assert ulp.step_lost(np.array([0x3F80], dtype=np.uint16), BF16, half).tolist() == [False]


# -- the consumer in a real compare pass --------------------------------------------------------------------


@pytest.fixture(scope="module")
def adam_pair(tmp_path_factory):
    return adam_like_pair(tmp_path_factory.mktemp("adam"), lr=1e-5)


TOLS = [1e-8, 1e-7, 1e-6, 1e-5]


def _bits(path: Path) -> dict[str, np.ndarray]:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(path.glob("*.safetensors")):
        for k, v in load_file(str(f)).items():
            out[k] = v.contiguous().view(torch.int16).numpy().view(np.uint16).reshape(-1)
    return out


def test_pass_results_against_brute_force(adam_pair):
    b, t = adam_pair
    rep = ulp.compare_ulp(b, t, TOLS, step_size=1e-5)
    ba, ta = _bits(b), _bits(t)
    table = decode_table("BF16")
    vals = np.unique(table[np.isfinite(table)])
    for st in rep.tensors:
        e = st.extra["ulp"]
        a, c = ba[st.name], ta[st.name]
        dist = np.abs(np.searchsorted(vals, table[c]) - np.searchsorted(vals, table[a]))
        want = np.bincount(ulp.ulp_bin(dist.astype(np.uint64)), minlength=7)
        assert e["hist"][:7] == want.tolist(), st.name
        assert e["hist"][7] == 0
        # weights with no neighbour within tol among the identical ones
        ident = a == c
        up, down = ulp.spacings(a[ident], BF16)
        assert e["below_ulp"] == [int(np.count_nonzero(np.fmin(up, down) > tol)) for tol in TOLS]
        assert e["step_lost"] == int(brute_step_lost(a, "BF16", 1e-5).sum())
        # the histogram answers compare's own counts exactly at its tolerances
        edges = rep.extra["ulp"]["delta_edges"]
        for k, tol in enumerate(TOLS):
            assert ulp.unchanged_bounds(e["delta_hist"], edges, tol) == (st.counts.unchanged[k],) * 2
    assert sum(st.counts.unchanged[3] for st in rep.tensors) < rep.overall.numel  # something did change


def test_any_edge_tolerance_answered_exactly_afterwards(adam_pair):
    b, t = adam_pair
    rep = ulp.compare_ulp(b, t, TOLS)
    obj = json.loads(rep.dumps())  # through JSON: the report alone is enough
    later = [2.0**-17, 2.0**-16, 2.0**-30, 0.0, 3e-6, 7e-6]
    truth = compare(b, t, later)
    for k, tol in enumerate(later):
        lo, hi = ulp.unchanged_at(obj, tol)
        true = truth.overall.unchanged[k]
        if tol == 0 or tol in obj["ulp"]["delta_edges"]:
            assert lo == hi == true, tol
        else:
            assert lo <= true <= hi, tol
    s_lo, s_hi = ulp.sparsity_at(obj, 2.0**-17)
    assert s_lo == s_hi == truth.overall.sparsity[0]


def test_result_independent_of_chunks_and_threads(adam_pair):
    b, t = adam_pair
    one = ulp.compare_ulp(b, t, TOLS, step_size=3e-6, jobs=1)
    many = ulp.compare_ulp(b, t, TOLS, step_size=3e-6, jobs=2, chunk_elements=96)
    assert [s.extra for s in one.tensors] == [s.extra for s in many.tensors]


def special_pair(root: Path) -> tuple[Path, Path]:
    """bf16 tensor of hand-made codes, an F32 tensor, a dtype change (F32 -> BF16) and an integer tensor."""
    a = bf16_bits([0.0, -0.0, 1.0, 1.0, 2.0**-133, 3.0, float("nan"), float("inf"), 0.5, -1.0, 2.0, 2.0])
    c = bf16_bits(
        [-0.0, 0.0, 1.0078125, 0.99609375, 0.0, 3.0, float("nan"), float("inf"), 0.5, 1.0, 2.0, 4.0]
    )

    def bf(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x.view(np.int16).copy()).view(torch.bfloat16)

    f = np.array([1.0, 2.0, 0.0, 1e-30, 5.0, 5.0], dtype=np.float32)
    g = np.array(
        [np.nextafter(np.float32(1.0), np.float32(0)), 2.0, 1e-45, 1e-30, 5.0, 6.0], dtype=np.float32
    )
    base = {
        "model.layers.0.mlp.up_proj.weight": bf(a).reshape(3, 4),
        "model.layers.0.mlp.down_proj.weight": torch.from_numpy(f),
        "model.layers.0.mlp.gate_proj.weight": torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float32),
        "model.layers.0.self_attn.q_proj.steps": torch.tensor([1, 2, 3], dtype=torch.int32),
    }
    target = {
        "model.layers.0.mlp.up_proj.weight": bf(c).reshape(3, 4),
        "model.layers.0.mlp.down_proj.weight": torch.from_numpy(g),
        "model.layers.0.mlp.gate_proj.weight": torch.tensor([1.0, 2.0, 3.5, 4.0], dtype=torch.bfloat16),
        "model.layers.0.self_attn.q_proj.steps": torch.tensor([1, 5, 3], dtype=torch.int32),
    }
    return save_checkpoint(base, root / "b"), save_checkpoint(target, root / "t")


def test_special_values_and_dtypes(tmp_path):
    b, t = special_pair(tmp_path)
    rep = ulp.compare_ulp(b, t, [1e-8, 1e-5])
    by = {s.name: s for s in rep.tensors}
    e = by["model.layers.0.mlp.up_proj.weight"].extra["ulp"]
    # 0 ULP: ±0 twice, identical 3.0, NaN, Inf, 0.5, 2.0; 1 ULP: 1.0 -> up, 1.0 -> down (across the power
    # of two), subnormal 2^-133 (code 1) -> 0; 17-256: 2 -> 4 (128); >256: -1 -> 1 (32512)
    assert e["hist"] == [7, 3, 0, 0, 0, 1, 1, 0]
    assert e["delta_hist"][0] == 7 and e["delta_hist"][-1] == 0
    f = by["model.layers.0.mlp.down_proj.weight"].extra["ulp"]
    # 1 -> prev: 1 ULP, 0 -> 1e-45 (the smallest subnormal): 1 ULP, 5 -> 6: >256
    assert f["hist"] == [3, 2, 0, 0, 0, 0, 1, 0]
    # identical F32 weights: 2.0 and 1e-30 and 5.0; only 2.0 and 5.0 have no neighbour within 1e-8
    assert f["below_ulp"] == [2, 0]
    mixed = by["model.layers.0.mlp.gate_proj.weight"].extra["ulp"]
    assert mixed["hist"] is None and mixed["below_ulp"] is None
    assert mixed["delta_hist"][0] == 3 and sum(mixed["delta_hist"]) == 4
    assert by["model.layers.0.self_attn.q_proj.steps"].extra["ulp"] is None
    for k, tol in enumerate(rep.tolerances):
        assert ulp.unchanged_at(rep, tol) == (rep.overall.unchanged[k],) * 2


def test_missing_histograms_are_a_clear_error(adam_pair):
    b, t = adam_pair
    plain = compare(b, t, TOLS)
    with pytest.raises(ulp.MissingAnatomyError, match="no ULP"):
        ulp.unchanged_at(plain, 1e-5)
    with pytest.raises(SubnetscopeError, match=r"step_size=-1\.0 is not a finite positive number"):
        ulp.ULPHistograms(TOLS, step_size=-1.0)


def test_summary_shares(adam_pair):
    b, t = adam_pair
    rep = ulp.compare_ulp(b, t, TOLS, step_size=1e-5)
    s = ulp.summarize(rep)
    ov = s["overall"]
    assert ov["numel"] == rep.overall.numel
    assert sum(ov["hist"]) == ov["numel"]
    assert ov["unchanged"] == rep.overall.unchanged
    assert all(0 <= x <= 1 for x in ov["below_ulp_share"])
    # with lr = 1e-5 every weight below 1e-5 apart is either identical or a tiny weight; the identical ones
    # all lie where a bf16 step exceeds 1e-8
    assert ov["below_ulp"][0] == rep.overall.identical
    assert 0 < ov["step_lost_share"] < 1
    assert set(s["by_kind"]) >= {"q", "embed", "input_norm"}


def test_cli_compare_ulp(adam_pair, tmp_path):
    b, t = adam_pair
    out = tmp_path / "r.json"
    res = CliRunner().invoke(cli, ["compare", str(b), str(t), "--ulp", "--step-size", "1e-5", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "change size in ULPs" in res.output and "a step of 1e-05 rounds away" in res.output
    obj = json.loads(out.read_text())
    assert obj["ulp"]["step_size"] == 1e-5 and obj["ulp"]["ulp_bins"][0] == "0"
    assert all("ulp" in t for t in obj["tensors"])
    res = CliRunner().invoke(cli, ["compare", str(b), str(t), "--format", "json"])
    assert "ulp" not in json.loads(res.output)


@pytest.mark.skipif("numba" not in backends_for("ulp"), reason="numba not available")
@pytest.mark.parametrize("code", ["BF16", "F16", "F32", "F64", "F8_E4M3", "F8_E5M2"])
def test_numba_kernel_matches_numpy(code):
    dt = DTYPES[code]
    rng = np.random.default_rng(7)
    n = 5000
    if dt.itemsize <= 2:
        a = rng.integers(0, 1 << (8 * dt.itemsize), n, dtype=np.uint64).astype(dt.bits_dtype)
    else:
        f = np.float32 if dt.itemsize == 4 else np.float64
        vals = rng.standard_normal(n) * 10.0 ** rng.integers(-30, 3, n)
        vals[:6] = [0.0, -0.0, np.inf, -np.inf, np.nan, 1.0]
        a = vals.astype(f).view(dt.bits_dtype)
    b = a.copy()
    sel = rng.random(n) < 0.6
    step = rng.integers(-600, 600, n)
    b[sel] = (a[sel].astype(np.int64) + step[sel]).astype(dt.bits_dtype)
    b[rng.random(n) < 0.05] ^= dt.bits_dtype.type(1 << (8 * dt.itemsize - 1))  # sign flips
    pair = fake_pair(code, n)
    out = {}
    for be in ("numba", "numpy"):
        h = ulp.ULPHistograms([0.0, 1e-8, 1e-5, 0.1], step_size=1e-3, backend=be)
        part = h.chunk(pair, 0, a, b)
        out[be] = h.finish(pair, h.merge(pair, None, part))
    assert out["numba"] == out["numpy"]
    assert sum(out["numba"]["hist"]) == n


def test_consumer_is_picklable_for_process_executors(adam_pair):
    import pickle

    b, t = adam_pair
    h = ulp.ULPHistograms(TOLS, step_size=1e-5)
    rep = compare(b, t, TOLS, consumers=[h])  # used once: caches built
    h2 = pickle.loads(pickle.dumps(h))
    rep2 = compare(b, t, TOLS, consumers=[h2])
    assert [s.extra for s in rep.tensors] == [s.extra for s in rep2.tensors]
