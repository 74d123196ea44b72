"""compare() on checkpoints whose changes are known by construction, against the brute-force oracle."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import subnetscope
from factory import bits, llama_names, random_state, save_checkpoint
from oracle import exact_counts
from subnetscope.comparison import DEFAULT_TOLERANCES
from subnetscope.errors import StrictCheckError, UsageError


def test_exact_counts_known_by_construction(llama_pair):
    bdir, tdir, base, target, changed = llama_pair
    r = subnetscope.compare(bdir, tdir)
    assert r.tolerances == list(DEFAULT_TOLERANCES)
    by_name = {t.name: t for t in r.tensors}
    assert set(by_name) == set(base)
    for name, t in by_name.items():
        n = base[name].numel()
        assert t.counts.numel == n
        assert t.counts.identical == n - changed[name]
        # every perturbation moves |w| by >= 5 % + 1e-3 >> 1e-5, so changed at every tolerance
        assert t.counts.unchanged == [n - changed[name]] * 4
    total = sum(v.numel() for v in base.values())
    assert r.overall.numel == total
    assert r.overall.identical == total - sum(changed.values())
    # norms are untouched by construction
    assert r.by_kind()["input_norm"].sparsity == [1.0] * 4
    assert r.findings == []


def test_brute_force_oracle_on_random_small_changes(tmp_path):
    shapes = llama_names(layers=2, hidden=16, inter=32, vocab=40)
    base = random_state(shapes, seed=3, scale=1e-4)  # tiny weights: tolerances really matter here
    g = torch.Generator().manual_seed(5)
    target = {}
    for n, t in base.items():
        step = torch.randint(-2, 3, t.shape, generator=g).to(torch.int16)
        target[n] = (t.view(torch.int16) + step * (torch.rand(t.shape, generator=g) < 0.3)).view(
            torch.bfloat16
        )
    save_checkpoint(base, tmp_path / "b", shards=2)
    save_checkpoint(target, tmp_path / "t", shards=3)
    tols = [1e-9, 1e-8, 1e-7, 1e-6, 1e-5]
    for jobs in (1, 2):
        r = subnetscope.compare(tmp_path / "b", tmp_path / "t", tols, jobs=jobs, chunk_elements=64)
        for t in r.tensors:
            want = exact_counts(bits(base[t.name]), bits(target[t.name]), "BF16", tols)
            assert t.counts.unchanged == want["unchanged"], t.name
            assert t.counts.identical == want["identical"]


def test_report_independent_of_jobs_and_chunking(llama_pair):
    bdir, tdir, *_ = llama_pair
    reports = [
        subnetscope.compare(bdir, tdir, jobs=j, chunk_elements=c).to_json()
        for j, c in ((1, 1 << 20), (2, 40), (3, 8))
    ]
    assert reports[0] == reports[1] == reports[2]


def test_json_schema_stable_keys(llama_pair):
    bdir, tdir, base, _target, changed = llama_pair
    doc = json.loads(subnetscope.compare(bdir, tdir, [1e-5, 1e-8]).dumps())
    assert doc["schema_version"] == "1.0"
    assert doc["semantics"] == "exact"
    assert doc["tolerances"] == [1e-5, 1e-8]
    ov = doc["overall"]
    assert {"numel", "identical", "unchanged", "sparsity"} <= ov.keys()
    assert len(ov["unchanged"]) == len(ov["sparsity"]) == 2
    t = next(x for x in doc["tensors"] if x["name"] == "model.layers.1.mlp.down_proj.weight")
    assert t["layer"] == 1 and t["kind"] == "down" and t["dtype"] == "BF16" and t["shape"] == [32, 64]
    assert t["numel"] == 32 * 64 and t["identical"] == 32 * 64 - changed[t["name"]]
    assert {"layer", "kind", "numel"} <= doc["grid"][0].keys()
    again = subnetscope.Report.from_json(doc)
    assert again.to_json() == doc


def test_report_json_text_is_the_same_data_one_element_per_line(llama_pair):
    from subnetscope.report.schema import json_text

    bdir, tdir, *_ = llama_pair
    rep = subnetscope.compare(bdir, tdir, [1e-5, 1e-8])
    text = rep.dumps()
    assert json.loads(text) == json.loads(json.dumps(rep.to_json()))
    lines = text.splitlines()
    # one line per tensor, each a whole JSON object
    rows = [json.loads(x.strip().rstrip(",")) for x in lines if x.startswith('  {"name": ')]
    assert [r["name"] for r in rows] == [t.name for t in rep.tensors]
    odd = {"a": [], "b": {}, "c": {"x": [1, {"y": float("nan")}]}, "d": [[1, 2], {"z": None}], "e": "é"}
    assert json.loads(json_text(odd), parse_constant=str) == json.loads(json.dumps(odd), parse_constant=str)
    assert json_text({}) == "{}" and json_text([1, 2]) == json.dumps([1, 2], indent=1)
    # keys json.dumps would convert (ints, None) are left to json.dumps itself
    assert json_text({1: {2: 3}}) == json.dumps({1: {2: 3}}, indent=1)
    assert json.loads(json_text({"k": {1: 2}})) == {"k": {"1": 2}}


def test_tolerance_order_is_the_users(tmp_path):
    a = torch.tensor([0.0, 0.0, 0.0, 0.0], dtype=torch.float32)
    b = torch.tensor([0.0, 5e-9, 5e-7, 5e-5], dtype=torch.float32)
    save_checkpoint({"w": a}, tmp_path / "a")
    save_checkpoint({"w": b}, tmp_path / "b")
    r = subnetscope.compare(tmp_path / "a", tmp_path / "b", [1e-5, 1e-8, 1e-6, 1e-4])
    assert r.tensors[0].counts.unchanged == [3, 2, 3, 4]
    assert r.primary_index == 0


def test_values_exactly_at_the_tolerance_fp32(tmp_path):
    tol = 2.0**-17  # exactly representable: |Δ| == tol is unchanged, the next float above is changed
    a = torch.zeros(3, dtype=torch.float32)
    b = torch.tensor([tol, np.nextafter(np.float32(tol), np.float32(1)), -tol], dtype=torch.float32)
    save_checkpoint({"w": a}, tmp_path / "a")
    save_checkpoint({"w": b}, tmp_path / "b")
    r = subnetscope.compare(tmp_path / "a", tmp_path / "b", [tol])
    assert r.tensors[0].counts.unchanged == [2]


def test_findings_are_collected_together(tmp_path):
    shapes = llama_names(layers=1, hidden=8, inter=16, vocab=10)
    base = random_state(shapes, seed=0)
    target = dict(base)
    del target["model.layers.0.mlp.up_proj.weight"]  # only in base
    target["model.layers.0.extra.weight"] = torch.zeros(4, dtype=torch.bfloat16)  # only in target
    target["model.embed_tokens.weight"] = torch.cat(
        [base["model.embed_tokens.weight"], torch.ones(2, 8).bfloat16()]
    )
    target["lm_head.weight"] = base["lm_head.weight"].float()  # dtype change, same values
    target["model.layers.0.mlp.down_proj.weight"] = torch.zeros(3, 3, dtype=torch.bfloat16)  # shape change
    bad = base["model.layers.0.self_attn.q_proj.weight"].clone()
    bad[0, 0] = float("nan")
    target["model.layers.0.self_attn.q_proj.weight"] = bad
    save_checkpoint(base, tmp_path / "b")
    save_checkpoint(target, tmp_path / "t")
    r = subnetscope.compare(tmp_path / "b", tmp_path / "t")
    kinds = {(f.kind, f.tensor) for f in r.findings}
    assert kinds == {
        ("only_in_base", "model.layers.0.mlp.up_proj.weight"),
        ("only_in_target", "model.layers.0.extra.weight"),
        ("rows_added", "model.embed_tokens.weight"),
        ("dtype_changed", "lm_head.weight"),
        ("shape_changed", "model.layers.0.mlp.down_proj.weight"),
        ("nonfinite", "model.layers.0.self_attn.q_proj.weight"),
    }
    t = {x.name: x for x in r.tensors}
    emb = t["model.embed_tokens.weight"]
    assert emb.counts.numel == 12 * 8 and emb.compared == 10 * 8 and emb.counts.identical == 80
    assert emb.counts.unchanged == [80] * 4  # the 16 new elements count as changed
    head = t["lm_head.weight"]
    assert head.base_dtype == "BF16" and head.dtype == "F32" and head.counts.identical == head.counts.numel
    q = t["model.layers.0.self_attn.q_proj.weight"]
    assert q.counts.nonfinite_target == 1 and q.counts.identical == q.counts.numel - 1
    assert "model.layers.0.mlp.down_proj.weight" not in t
    with pytest.raises(StrictCheckError, match=r"`strict=True`: 6 finding\(s\)") as ei:
        subnetscope.compare(tmp_path / "b", tmp_path / "t", strict=True)
    assert ei.value.report is not None and len(ei.value.report.findings) == 6


def test_mask_out_matches_changed_positions(llama_pair, tmp_path):
    bdir, tdir, base, target, changed = llama_pair
    out = tmp_path / "m.mask"
    subnetscope.compare(bdir, tdir, [1e-5], mask_out=out, jobs=2, chunk_elements=48)
    m = subnetscope.MaskFile(out)
    assert set(m) == set(base)
    for name in base:
        want = (bits(base[name]) != bits(target[name])).reshape(base[name].shape)
        assert np.array_equal(m[name], want), name
        assert m.count(name) == changed[name]
    assert m.tolerance == 1e-5 and m.semantics == "exact"


def test_bad_tolerances_and_semantics(llama_pair):
    bdir, tdir, *_ = llama_pair
    with pytest.raises(UsageError, match="no tolerance given"):
        subnetscope.compare(bdir, tdir, [])
    with pytest.raises(UsageError, match="not a finite non-negative number"):
        subnetscope.compare(bdir, tdir, [-1e-5])
    with pytest.raises(UsageError, match="duplicate tolerances"):
        subnetscope.compare(bdir, tdir, [1e-5, 1e-5])
    with pytest.raises(UsageError, match="unknown semantics 'approx'"):
        subnetscope.compare(bdir, tdir, semantics="approx")


def test_transformers_saved_llama(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False)  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(tmp_path / "base")
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[:2] += 1.0  # 2 rows × 16 changed, by 1.0 each
    model.save_pretrained(tmp_path / "target")
    r = subnetscope.compare(tmp_path / "base", tmp_path / "target")
    changed = {
        t.name: t.counts.numel - t.counts.identical for t in r.tensors if t.counts.identical != t.counts.numel
    }
    assert changed == {"model.layers.1.mlp.up_proj.weight": 32}
    up = r.by_kind()["up"]
    assert up.numel == 2 * 32 * 16 and up.changed == [32] * 4
    assert r.by_layer()[1].changed == [32] * 4 and r.by_layer()[0].changed == [0] * 4


class _Boom:
    key = "boom"

    def __init__(self) -> None:
        self.calls = 0

    def chunk(self, pair, start, a, b):
        self.calls += 1
        if self.calls == 5:
            raise KeyboardInterrupt
        return None

    def merge(self, pair, state, partial):
        return None

    def finish(self, pair, state):
        return None


@pytest.mark.parametrize("jobs", [1, 2])
def test_interrupted_run_leaves_no_output(llama_pair, tmp_path, jobs):
    bdir, tdir, *_ = llama_pair
    out = tmp_path / "m.mask"
    with pytest.raises(KeyboardInterrupt):
        subnetscope.compare(bdir, tdir, mask_out=out, consumers=[_Boom()], jobs=jobs, chunk_elements=64)
    assert list(tmp_path.iterdir()) == []
