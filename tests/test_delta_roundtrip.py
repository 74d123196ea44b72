"""export → apply rebuilds TARGET byte for byte, for every dtype and every kind of tensor change."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from delta_helpers import (
    assert_same_bits,
    flip_bits,
    load_dir,
    perturb_bits,
    random_weights,
    small_shapes,
    write_pair,
)
from factory import bits, save_checkpoint
from subnetscope.delta import apply_delta, export_delta, load_manifest
from subnetscope.io.checkpoint import INDEX_NAME, open_checkpoint

DTYPES = [torch.bfloat16, torch.float16, torch.float32, torch.float8_e4m3fn, torch.float8_e5m2]
EMBED, LM_HEAD = "model.embed_tokens.weight", "lm_head.weight"
Q0, UP1, NORM = (
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.1.mlp.up_proj.weight",
    "model.norm.weight",
)
DOWN0 = "model.layers.0.mlp.down_proj.weight"


def _mixed_pair(dtype: torch.dtype, seed: int = 0):
    """Base, target and exact changed counts: unchanged, sparse, fully changed, resized, new and removed tensors."""
    shapes = small_shapes()
    base = random_weights(shapes, dtype, seed)
    untouched = [NORM, Q0]
    target, changed = perturb_bits(base, 0.2, seed + 1, names=[n for n in base if n not in [*untouched, UP1]])
    target[UP1] = flip_bits(base[UP1], np.arange(base[UP1].numel()), seed + 2)  # every element changed
    changed[UP1] = base[UP1].numel()
    target[EMBED] = torch.cat(
        [target[EMBED], random_weights({"x": (3, 32)}, dtype, seed + 3)["x"]]
    )  # 3 new rows
    target["model.extra_adapter.weight"] = random_weights({"x": (5, 7)}, dtype, seed + 4)["x"]  # new tensor
    del target[LM_HEAD]  # tied in the finetune: removed
    return base, target, changed


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
def test_round_trip_every_dtype(tmp_path, dtype):
    base, target, changed = _mixed_pair(dtype)
    bdir, tdir = write_pair(tmp_path, base, target)
    res = export_delta(bdir, tdir, tmp_path / "delta", chunk_elements=256)
    m = res.manifest
    entries = {t.name: t for t in m.tensors}
    assert [t.name for t in m.tensors] == list(open_checkpoint(tdir).tensors)  # target storage order
    assert entries[NORM].encoding == entries[Q0].encoding == "unchanged"
    assert entries[UP1].encoding == "dense" and entries[UP1].changed == base[UP1].numel()
    assert (entries[EMBED].encoding, entries[EMBED].reason) == ("whole", "shape")
    assert (entries["model.extra_adapter.weight"].encoding, entries["model.extra_adapter.weight"].reason) == (
        "whole",
        "new",
    )
    assert [r["name"] for r in m.removed] == [LM_HEAD]
    for name, n in changed.items():
        if name in entries and entries[name].encoding in ("sparse", "unchanged", "dense"):
            assert entries[name].changed == n, name
    assert entries[DOWN0].encoding == "sparse"

    out = apply_delta(bdir, tmp_path / "delta", tmp_path / "out", verify=True)
    assert out.verified and out.side_files == ["config.json"] and out.side_files_from == "delta"
    assert_same_bits(load_dir(tmp_path / "out"), target)


def test_chunk_kinds_and_partial_last_chunk(tmp_path):
    """One tensor whose 64-element chunks are dense, unchanged, gaps and bitmap, the last one short."""
    base = random_weights({"w": (1000,)}, torch.bfloat16)
    pos = np.concatenate([np.arange(64), [64 * 2 + 5], 64 * 3 + np.arange(0, 64, 3), [999]])
    target = {"w": flip_bits(base["w"], pos)}
    bdir, tdir = write_pair(tmp_path, base, target, 1, 1)
    m = export_delta(bdir, tdir, tmp_path / "d", chunk_elements=64).manifest
    recs = {r.index: r for r in m.tensors[0].chunks}
    assert sorted(recs) == [0, 2, 3, 15]
    assert recs[0].positions == "all" and recs[0].changed == 64
    assert recs[2].positions == "gaps" and recs[2].changed == 1
    assert recs[3].positions == "bitmap" and recs[3].changed == 22
    assert recs[15].positions == "gaps" and m.chunk_span(m.tensors[0], 15) == (960, 40)
    assert m.tensors[0].changed == pos.size
    for verify in (False, True):
        apply_delta(bdir, tmp_path / "d", tmp_path / f"out{verify}", verify=verify)
        assert_same_bits(load_dir(tmp_path / f"out{verify}"), target)


def test_unchanged_model_has_no_data(tmp_path):
    base = random_weights(small_shapes(), torch.bfloat16)
    bdir, tdir = write_pair(tmp_path, base, base, 1, 3)
    res = export_delta(bdir, tdir, tmp_path / "d")
    assert res.manifest.files == [] and {t.encoding for t in res.manifest.tensors} == {"unchanged"}
    assert res.to_json()["changed"] == 0 and res.ratio < 0.2
    apply_delta(bdir, tmp_path / "d", tmp_path / "out", verify=True)
    assert_same_bits(load_dir(tmp_path / "out"), base)


def test_fully_changed_model_is_stored_whole(tmp_path):
    base = random_weights(small_shapes(), torch.float32)
    target = {n: flip_bits(t, np.arange(t.numel()), 7) for n, t in base.items()}
    bdir, tdir = write_pair(tmp_path, base, target)
    res = export_delta(bdir, tdir, tmp_path / "d", chunk_elements=512)
    assert {t.encoding for t in res.manifest.tensors} == {"dense"}
    assert all(r.positions == "all" for t in res.manifest.tensors for r in t.chunks)
    apply_delta(bdir, tmp_path / "d", tmp_path / "out", verify=True)
    assert_same_bits(load_dir(tmp_path / "out"), target)


def test_dtype_change_and_integer_tensors(tmp_path):
    base = random_weights({"a": (40, 3), "b": (17,)}, torch.bfloat16)
    base["steps"] = torch.arange(10, dtype=torch.int64)
    base["empty"] = torch.zeros(0, 4, dtype=torch.bfloat16)
    target = {
        "a": base["a"].float(),
        "b": base["b"].clone(),
        "steps": base["steps"] + (torch.arange(10) == 4),
        "empty": torch.zeros(0, 4, dtype=torch.bfloat16),
        "new_empty": torch.zeros(3, 0, dtype=torch.float16),
    }
    bdir, tdir = write_pair(tmp_path, base, target, 1, 2)
    m = export_delta(bdir, tdir, tmp_path / "d").manifest
    e = {t.name: t for t in m.tensors}
    assert (e["a"].encoding, e["a"].reason) == ("whole", "dtype")
    assert e["b"].encoding == "unchanged" and e["steps"].changed == 1
    assert e["empty"].encoding == "unchanged"
    assert (e["new_empty"].encoding, e["new_empty"].changed) == ("whole", 0)
    apply_delta(bdir, tmp_path / "d", tmp_path / "out", verify=True)
    assert_same_bits(load_dir(tmp_path / "out"), target)


def test_sharded_output_with_index(tmp_path, llama_pair):
    bdir, tdir, _base, target, changed = llama_pair
    export_delta(bdir, tdir, tmp_path / "d", jobs=3)
    res = apply_delta(bdir, tmp_path / "d", tmp_path / "out", max_shard_bytes=5000, jobs=2)
    shards = [f for f in res.files if f.endswith(".safetensors")]
    assert len(shards) > 3 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((tmp_path / "out" / INDEX_NAME).read_text())
    assert set(index["weight_map"]) == set(target) and index["metadata"]["total_size"] == res.nbytes
    for f in shards:
        assert (tmp_path / "out" / f).stat().st_size <= 5000 + 2000  # data bound + header
    assert_same_bits(load_dir(tmp_path / "out"), target)
    m = load_manifest(tmp_path / "d")
    assert {t.name: t.changed for t in m.tensors} == changed


def test_threads_do_not_change_the_delta(tmp_path, llama_pair):
    bdir, tdir, *_ = llama_pair
    a = export_delta(bdir, tdir, tmp_path / "a", jobs=1, chunk_elements=128).manifest
    b = export_delta(bdir, tdir, tmp_path / "b", jobs=4, chunk_elements=128).manifest
    key = [
        (t.name, t.sha256, t.encoding, t.changed, [(r.index, r.changed, r.positions) for r in t.chunks])
        for t in a.tensors
    ]
    assert key == [
        (t.name, t.sha256, t.encoding, t.changed, [(r.index, r.changed, r.positions) for r in t.chunks])
        for t in b.tensors
    ]
    assert a.data_bytes == b.data_bytes


def test_side_files_travel_with_the_delta_else_come_from_base(tmp_path):
    base = random_weights({"w": (64, 8)}, torch.bfloat16)
    target, _ = perturb_bits(base, 0.1)
    bdir, tdir = write_pair(tmp_path, base, target, 1, 1)
    (tdir / "tokenizer.json").write_text('{"version": "target"}')
    (tdir / "generation_config.json").write_text("{}")
    (tdir / "notes.txt").write_text("not copied")
    res = export_delta(bdir, tdir, tmp_path / "d")
    assert [f.name for f in res.manifest.side_files] == [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
    ]
    out = apply_delta(bdir, tmp_path / "d", tmp_path / "out")
    assert (tmp_path / "out" / "tokenizer.json").read_text() == '{"version": "target"}'
    assert not (tmp_path / "out" / "notes.txt").exists()
    assert out.side_files_from == "delta"

    # a bare .safetensors target carries no side files: apply takes BASE's
    bare = tmp_path / "bare"
    bare.mkdir()
    (tdir / "model.safetensors").rename(bare / "model.safetensors")
    (bdir / "tokenizer.json").write_text('{"version": "base"}')
    res = export_delta(bdir, bare / "model.safetensors", tmp_path / "d2")
    assert res.manifest.side_files == []
    out = apply_delta(bdir, tmp_path / "d2", tmp_path / "out2", verify=True)
    assert out.side_files_from == "base" and sorted(out.side_files) == ["config.json", "tokenizer.json"]
    assert (tmp_path / "out2" / "tokenizer.json").read_text() == '{"version": "base"}'
    assert_same_bits(load_dir(tmp_path / "out2"), target)


def test_rebuilt_file_matches_safetensors_library(tmp_path):
    """The shards are valid safetensors (the reference library reads them) with the target's metadata."""
    from safetensors import safe_open

    base = random_weights(small_shapes(), torch.bfloat16)
    target, _ = perturb_bits(base, 0.05)
    bdir, tdir = write_pair(tmp_path, base, target, 2, 1)
    export_delta(bdir, tdir, tmp_path / "d")
    apply_delta(bdir, tmp_path / "d", tmp_path / "out")
    with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt"}
        for name in f.keys():  # noqa: SIM118 - safe_open has no __iter__
            np.testing.assert_array_equal(bits(f.get_tensor(name)), bits(target[name]))


@pytest.mark.slow
def test_transformers_loads_the_rebuilt_checkpoint(tmp_path):
    """A tiny Llama saved with save_pretrained, finetuned sparsely, rebuilt, loads with from_pretrained."""
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False, torch_dtype="bfloat16",
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(tmp_path / "base")
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            if i % 3:
                mask = torch.rand(p.shape, generator=torch.Generator().manual_seed(i)) < 0.1
                p[mask] += 0.25
    model.save_pretrained(tmp_path / "target", max_shard_size="40KB")
    export_delta(tmp_path / "base", tmp_path / "target", tmp_path / "d")
    apply_delta(tmp_path / "base", tmp_path / "d", tmp_path / "out", verify=True, max_shard_bytes=30_000)
    assert (tmp_path / "out" / "generation_config.json").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.bfloat16)
    want, got = model.state_dict(), loaded.state_dict()
    assert sorted(want) == sorted(got)
    for name, t in want.items():
        assert torch.equal(t.view(torch.int16), got[name].view(torch.int16)), name


def test_single_file_base_and_written_order(tmp_path):
    base = random_weights(small_shapes(), torch.float16)
    target, _ = perturb_bits(base, 0.3)
    save_checkpoint(base, tmp_path / "b", shards=1)
    save_checkpoint(target, tmp_path / "t", shards=3)
    export_delta(tmp_path / "b" / "model.safetensors", tmp_path / "t", tmp_path / "d")
    apply_delta(tmp_path / "b" / "model.safetensors", tmp_path / "d", tmp_path / "out")
    out = open_checkpoint(tmp_path / "out")
    assert list(out.tensors) == list(open_checkpoint(tmp_path / "t").tensors)
    assert_same_bits(load_dir(tmp_path / "out"), target)
