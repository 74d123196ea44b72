"""Overlap of two subnetworks: exact counts on masks whose changed positions are chosen by the test, the
uniform and magnitude-matched baselines against brute force, deltas mode against numpy, bad inputs."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
import torch

import subnetscope
from masks_helpers import SHAPES, base_state, hypergeom_exact, moved, pick, save, to_f64
from subnetscope import magnitude_bins as mb
from subnetscope.dtypes import DTYPES
from subnetscope.errors import MaskFormatError, MaskMismatchError
from subnetscope.kernels.popcount import popcount
from subnetscope.kernels.registry import BACKENDS
from subnetscope.naming import Namer
from subnetscope.overlap import OverlapReport, overlap, overlap_deltas


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Base, two finetunes with chosen positions P1, P2 (random signs), and their masks."""
    root = tmp_path_factory.mktemp("overlap")
    base = base_state(seed=0)
    p1 = pick(base, 0.3, seed=11)
    p2 = pick(base, 0.2, seed=12)
    # force a shared block so that the intersection is not just chance
    for name in p1:
        if "gate_proj" in name:
            p2[name] = np.union1d(p2[name], p1[name][: len(p1[name]) // 2])
    t1 = moved(base, p1, signs_seed=1)
    t2 = moved(base, p2, signs_seed=2)
    bdir = save(base, root / "base", shards=2)
    d1 = save(t1, root / "t1")
    d2 = save(t2, root / "t2", shards=3)
    m1, m2 = root / "run1.mask", root / "run2.mask"
    subnetscope.compare(bdir, d1, [1e-5], mask_out=m1)
    subnetscope.compare(bdir, d2, [1e-5], mask_out=m2)
    return {"root": root, "base": base, "t1": t1, "t2": t2, "p1": p1, "p2": p2, "bdir": bdir, "d1": d1,
            "d2": d2, "m1": m1, "m2": m2}  # fmt: skip


def by_group(names, key):
    out = {}
    namer = Namer("llama")
    for n in names:
        layer, kind = namer.classify(n)
        k = kind if key == "kind" else layer
        if k is not None:
            out.setdefault(k, []).append(n)
    return out


def test_counts_and_uniform_baselines_by_hand(runs):
    rep = overlap(runs["m1"], runs["m2"])
    p1, p2 = runs["p1"], runs["p2"]
    for t in rep.tensors:
        assert t.counts.changed1 == len(p1[t.name])
        assert t.counts.changed2 == len(p2[t.name])
        assert t.counts.intersection == len(np.intersect1d(p1[t.name], p2[t.name]))
        assert t.counts.numel == math.prod(SHAPES[t.name])
    n = sum(math.prod(s) for s in SHAPES.values())
    c1 = sum(len(v) for v in p1.values())
    c2 = sum(len(v) for v in p2.values())
    i = sum(len(np.intersect1d(p1[k], p2[k])) for k in p1)
    j = rep.to_json()
    assert j["changed"] == [c1, c2] and j["intersection"] == i and j["overall"]["intersection"] == i
    assert j["o1"] == pytest.approx(i / c1) and j["o2"] == pytest.approx(i / c2)
    assert j["o1_random"] == pytest.approx(c2 / n) and j["o2_random"] == pytest.approx(c1 / n)
    assert j["jaccard"] == pytest.approx(i / (c1 + c2 - i))
    mean = c1 * c2 / n
    var = c1 * c2 * (n - c1) * (n - c2) / (n * n * (n - 1))
    assert j["z"] == pytest.approx((i - mean) / math.sqrt(var))
    # per matrix type and per layer: sums of the tensors' counts
    for key, got in (("kind", j["by_kind"]), ("layer", j["by_layer"])):
        groups = by_group(p1, key)
        assert set(got) == {str(k) for k in groups}
        for k, names in groups.items():
            g = got[str(k)]
            assert g["changed"] == [sum(len(p1[x]) for x in names), sum(len(p2[x]) for x in names)]
            assert g["intersection"] == sum(len(np.intersect1d(p1[x], p2[x])) for x in names)
    assert j["by_kind"]["input_norm"]["o1"] is None  # nothing updated: undefined, not 0


def test_z_score_matches_exact_hypergeometric(runs):
    rep = overlap(runs["m1"], runs["m2"])
    t = next(t for t in rep.tensors if t.name.endswith("layers.0.mlp.gate_proj.weight"))
    c = t.counts
    mean, var = hypergeom_exact(c.numel, c.changed1, c.changed2)
    j = t.to_json()
    assert j["expected_intersection"] == pytest.approx(mean, rel=1e-9)
    assert j["z"] == pytest.approx((c.intersection - mean) / math.sqrt(var), rel=1e-9)
    assert j["z"] > 5  # the forced shared block


def brute_bins(values: np.ndarray) -> np.ndarray:
    """Global bin of every bf16 value, computed independently with frexp."""
    a = np.abs(values)
    _, e = np.frexp(a)
    out = mb.FIRST_EXP + (e - 1) - mb.EXP_MIN
    out = np.where(a < 2.0**-126, mb.SUBNORMAL, out)
    out = np.where(a == 0, mb.ZERO, out)
    return np.where(~np.isfinite(values), mb.NONFINITE, out)


def test_magnitude_baseline_against_brute_force(runs):
    rep = overlap(runs["m1"], runs["m2"], base=runs["bdir"])
    base, p1, p2 = runs["base"], runs["p1"], runs["p2"]

    def expected(names):
        n_b, c1_b, c2_b, both_b = {}, {}, {}, {}
        for name in names:
            bins = brute_bins(to_f64(base[name]))
            m1 = np.zeros(bins.size, bool)
            m1[p1[name]] = True
            m2 = np.zeros(bins.size, bool)
            m2[p2[name]] = True
            for b in np.unique(bins):
                sel = bins == b
                n_b[b] = n_b.get(b, 0) + int(sel.sum())
                c1_b[b] = c1_b.get(b, 0) + int((sel & m1).sum())
                c2_b[b] = c2_b.get(b, 0) + int((sel & m2).sum())
                both_b[b] = both_b.get(b, 0) + int((sel & m1 & m2).sum())
        mean = sum(c1_b[b] * c2_b[b] / n_b[b] for b in n_b)
        var = sum(c1_b[b] * c2_b[b] * (n_b[b] - c1_b[b]) * (n_b[b] - c2_b[b]) / (n_b[b] ** 2 * (n_b[b] - 1))
                  for b in n_b if n_b[b] > 1)  # fmt: skip
        return mean, var, n_b, c1_b, c2_b, both_b

    j = rep.to_json()
    mean, var, n_b, c1_b, c2_b, both_b = expected(list(p1))
    m = j["magnitude"]
    assert m["expected_intersection"] == pytest.approx(mean, rel=1e-12)
    assert m["o1_random"] == pytest.approx(mean / j["changed"][0], rel=1e-12)
    assert m["o2_random"] == pytest.approx(mean / j["changed"][1], rel=1e-12)
    assert m["z"] == pytest.approx((j["intersection"] - mean) / math.sqrt(var), rel=1e-9)
    got_bins = {row["bin"]: row for row in m["bins"]}
    assert {mb.bin_label(int(b)) for b in n_b} == set(got_bins)
    for b in n_b:
        row = got_bins[mb.bin_label(int(b))]
        assert row["numel"] == n_b[b]
        assert row["changed"] == [c1_b[b], c2_b[b]]
        assert row["intersection"] == both_b[b]
    assert got_bins["zero"]["numel"] == 5 * 2 and got_bins["subnormal"]["numel"] == 4 * 2
    for kind, names in by_group(p1, "kind").items():
        mean_k = expected(names)[0]
        assert j["by_kind"][kind]["magnitude"]["expected_intersection"] == pytest.approx(mean_k, rel=1e-12)


@pytest.mark.skipif("numba" not in BACKENDS, reason="numba not available")
@pytest.mark.parametrize("code", ["BF16", "F16", "F32", "F64", "F8_E4M3", "F8_E5M2"])
def test_bin_kernel_numba_equals_numpy(code):
    dt = DTYPES[code]
    rng = np.random.default_rng(5)
    n = 3001
    bits = rng.integers(0, 1 << min(8 * dt.itemsize, 63), n, dtype=np.uint64).astype(dt.bits_dtype)
    p1 = np.packbits(rng.random(n) < 0.3, bitorder="little")
    p2 = np.packbits(rng.random(n) < 0.6, bitorder="little")
    h_nb, h_np = mb.local_hist(dt), mb.local_hist(dt)
    mb.count_local(bits, dt, p1, p2, h_nb, backend="numba")
    mb.count_local(bits, dt, p1, p2, h_np, backend="numpy")
    assert np.array_equal(h_nb, h_np)
    assert h_nb[mb.N].sum() == n
    loc = mb.local_bins(bits, dt)
    assert np.array_equal(np.bincount(loc, minlength=h_nb.shape[1]), h_nb[mb.N])


def test_popcount():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, 1000, dtype=np.uint8)
    assert popcount(x) == int(np.unpackbits(x).sum())
    assert popcount(np.zeros(0, np.uint8)) == 0


def test_deltas_mode_against_numpy(runs):
    rep = overlap_deltas(runs["bdir"], runs["d1"], runs["d2"], chunk_elements=200)
    base, t1, t2 = runs["base"], runs["t1"], runs["t2"]
    d1 = np.concatenate([to_f64(t1[n]) - to_f64(base[n]) for n in SHAPES])
    d2 = np.concatenate([to_f64(t2[n]) - to_f64(base[n]) for n in SHAPES])
    m1, m2 = np.abs(d1) > 1e-5, np.abs(d2) > 1e-5
    sh = m1 & m2
    j = rep.to_json()
    assert j["changed"] == [int(m1.sum()), int(m2.sum())]
    assert j["intersection"] == int(sh.sum())
    dl = j["deltas"]
    assert dl["shared"] == int(sh.sum())
    assert dl["sign_agreement"] == pytest.approx(np.mean(np.sign(d1[sh]) == np.sign(d2[sh])), rel=1e-12)
    cos = d1[sh] @ d2[sh] / np.sqrt((d1[sh] @ d1[sh]) * (d2[sh] @ d2[sh]))
    assert dl["cosine"] == pytest.approx(cos, rel=1e-12)
    cos_full = d1 @ d2 / np.sqrt((d1 @ d1) * (d2 @ d2))
    assert dl["cosine_full"] == pytest.approx(cos_full, rel=1e-12)
    # random signs: agreement near one half, and never +1 exactly
    assert 0.3 < dl["sign_agreement"] < 0.7
    # the same sets as the masks written by compare, and the same magnitude baseline
    mrep = overlap(runs["m1"], runs["m2"], base=runs["bdir"]).to_json()
    assert mrep["intersection"] == j["intersection"] and mrep["changed"] == j["changed"]
    assert mrep["magnitude"]["expected_intersection"] == pytest.approx(
        j["magnitude"]["expected_intersection"]
    )


def test_deltas_identical_runs_have_cosine_one(runs):
    j = overlap_deltas(runs["bdir"], runs["d1"], runs["d1"]).to_json()
    assert j["o1"] == j["o2"] == 1.0 and j["jaccard"] == 1.0
    assert j["deltas"]["cosine"] == pytest.approx(1.0) and j["deltas"]["sign_agreement"] == 1.0


def test_jobs_and_chunks_do_not_change_the_result(runs):
    a = overlap(runs["m1"], runs["m2"], base=runs["bdir"], jobs=1).to_json()
    b = overlap(runs["m1"], runs["m2"], base=runs["bdir"], jobs=3, chunk_elements=24).to_json()
    a.pop("tool"), b.pop("tool")
    assert a == b


# --------------------------------------------------------------------------------------------------------
# mismatches and damaged files


@pytest.fixture(scope="module")
def other_base(tmp_path_factory, runs):
    """A mask over another base (same architecture, other weights) and one over another architecture."""
    root = tmp_path_factory.mktemp("other")
    ob = base_state(seed=99)
    obdir = save(ob, root / "base")
    od = save(moved(ob, pick(ob, 0.2, seed=3)), root / "t")
    m_other = root / "other.mask"
    subnetscope.compare(obdir, od, [1e-5], mask_out=m_other)
    small = {k: v for k, v in ob.items() if "layers.1." not in k}
    sdir = save(small, root / "small")
    sdir_t = save(moved(small, pick(small, 0.2, seed=4)), root / "small_t")
    m_small = root / "small.mask"
    subnetscope.compare(sdir, sdir_t, [1e-5], mask_out=m_small)
    return {"obdir": obdir, "m_other": m_other, "m_small": m_small, "sdir": sdir}


def test_masks_over_different_bases_refuse(runs, other_base):
    with pytest.raises(MaskMismatchError, match="were made over different bases"):
        overlap(runs["m1"], other_base["m_other"])
    with pytest.raises(MaskMismatchError, match="were made over different bases"):
        overlap(runs["m1"], other_base["m_small"])


def test_wrong_base_for_magnitude_baseline_refuses(runs, other_base):
    with pytest.raises(MaskMismatchError, match="made against a base with other weights"):
        overlap(runs["m1"], runs["m2"], base=other_base["obdir"])
    with pytest.raises(
        MaskMismatchError, match="mask was made for another model: 9 of its tensors are not in"
    ):
        overlap(runs["m1"], runs["m2"], base=other_base["sdir"])


def _copy(src, dst):
    dst.write_bytes(src.read_bytes())
    return dst


def test_truncated_mask_file(runs, tmp_path):
    bad = _copy(runs["m1"], tmp_path / "trunc.mask")
    raw = bad.read_bytes()
    bad.write_bytes(raw[: len(raw) - 100])
    with pytest.raises(MaskFormatError, match=r"trunc\.mask: not a readable mask file"):
        overlap(bad, runs["m2"])
    bad.write_bytes(raw[:5])
    with pytest.raises(MaskFormatError, match="too short"):
        overlap(runs["m1"], bad)


def test_hand_edited_bits_are_detected(runs, tmp_path):
    bad = _copy(runs["m2"], tmp_path / "edited.mask")
    raw = bytearray(bad.read_bytes())
    raw[-3] ^= 0x10  # one bit of the last tensor
    bad.write_bytes(bytes(raw))
    with pytest.raises(MaskFormatError, match="do not match their recorded sha256") as e:
        overlap(runs["m1"], bad)
    assert "edited.mask" in str(e.value) and "regenerate" in str(e.value)


def test_hand_edited_metadata_is_detected(runs, tmp_path):
    raw = runs["m1"].read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    head = json.loads(raw[8 : 8 + n])
    head["__metadata__"]["shapes"] = "{not json"
    new = json.dumps(head, separators=(",", ":")).encode()
    new += b" " * (n - len(new))
    bad = tmp_path / "meta.mask"
    bad.write_bytes(raw[:8] + new + raw[8 + n :])
    with pytest.raises(MaskFormatError, match="mask metadata is damaged"):
        overlap(bad, runs["m2"])


def test_checkpoint_is_not_a_mask(runs):
    with pytest.raises(MaskFormatError, match="not a subnetscope mask"):
        overlap(runs["bdir"] / "model-00001-of-00002.safetensors", runs["m2"])


def test_report_json_round_trip_keys(runs):
    rep = overlap(runs["m1"], runs["m2"], base=runs["bdir"])
    assert isinstance(rep, OverlapReport)
    j = json.loads(json.dumps(rep.to_json()))
    assert j["report"] == "subnetscope.overlap" and j["schema_version"].startswith("1.")
    for key in ("intersection", "changed", "o1", "o2", "o1_random", "o2_random", "jaccard", "z"):
        assert key in j and key in j["by_kind"]["q"] and key in j["by_layer"]["0"]
    assert j["mode"] == "masks" and j["inputs"][0]["tolerance"] == 1e-5
    assert len(j["tensors"]) == len(SHAPES)


def test_mask_loads_lazily_as_torch_bool(runs):
    m = subnetscope.MaskFile(runs["m1"])
    name = "model.layers.1.mlp.down_proj.weight"
    t = m.torch(name)
    assert t.dtype == torch.bool and tuple(t.shape) == SHAPES[name]
    want = np.zeros(math.prod(SHAPES[name]), bool)
    want[runs["p1"][name]] = True
    assert np.array_equal(t.reshape(-1).numpy(), want)


def test_rows_added_by_the_target_get_their_own_bin(tmp_path):
    base = base_state(seed=0)
    grown = moved(base, pick(base, 0.2, seed=8))
    emb = "model.embed_tokens.weight"
    grown[emb] = torch.cat([grown[emb], torch.full((4, grown[emb].shape[1]), 0.5, dtype=torch.bfloat16)])
    bdir, tdir = save(base, tmp_path / "b"), save(grown, tmp_path / "t")
    m = tmp_path / "g.mask"
    rep = subnetscope.compare(bdir, tdir, [1e-5], mask_out=m)
    assert any(f.kind == "rows_added" for f in rep.findings)
    j = overlap(m, m, base=bdir).to_json()
    new = next(b for b in j["magnitude"]["bins"] if b["bin"] == "new")
    assert new["numel"] == 4 * SHAPES[emb][1] and new["changed"] == [new["numel"]] * 2
    assert j["numel"] == sum(math.prod(s) for s in SHAPES.values()) + new["numel"]
    assert j["o1"] == 1.0 and j["magnitude"]["z"] is not None
