"""Legacy pytorch_model.bin checkpoints: single and sharded, bin vs bin, bin vs safetensors, and refusals."""

from __future__ import annotations

import json

import pytest
import torch

import subnetscope
from factory import bits, llama_names, perturb, random_state, save_checkpoint
from scale_helpers import NotAWeight, save_bin, without_inputs
from subnetscope.errors import CheckpointFormatError, InputNotFoundError, UnsupportedDtypeError
from subnetscope.io.checkpoint import open_checkpoint
from subnetscope.io.legacy import read_legacy
from subnetscope.io.reader import read_tensor_bits


@pytest.fixture(scope="module")
def states():
    shapes = llama_names(layers=2, hidden=16, inter=32, vocab=40)
    base = random_state(shapes, seed=0)
    target, changed = perturb(base, 0.3, seed=2)
    return base, target, changed


@pytest.fixture(scope="module")
def layouts(states, tmp_path_factory):
    base, target, _ = states
    root = tmp_path_factory.mktemp("legacy")
    return {
        "st_base": save_checkpoint(base, root / "st_base", shards=2),
        "st_target": save_checkpoint(target, root / "st_target"),
        "bin_base": save_bin(base, root / "bin_base"),
        "bin_target_sharded": save_bin(target, root / "bin_target", shards=3),
    }


def test_tensors_index_to_the_right_bytes(states, layouts):
    base, target, _ = states
    ck = open_checkpoint(layouts["bin_target_sharded"])
    assert ck.format == "pytorch-bin" and len(ck.files) == 3
    assert set(ck) == set(target)
    for name, t in target.items():
        assert ck[name].shape == tuple(t.shape) and ck[name].dtype.code == "BF16"
        assert (read_tensor_bits(ck[name]) == bits(t)).all(), name
    # the memory-map fallback (torch without meta offsets) finds the same offsets
    for f in ck.files:
        h = read_legacy(f, use_meta=False)
        for name, info in h.tensors.items():
            assert info == ck[name]


@pytest.mark.parametrize(
    "b,t",
    [("bin_base", "bin_target_sharded"), ("bin_base", "st_target"), ("st_base", "bin_target_sharded")],
)
def test_same_report_as_safetensors(layouts, states, b, t):
    _, _, changed = states
    want = subnetscope.compare(layouts["st_base"], layouts["st_target"])
    got = subnetscope.compare(layouts[b], layouts[t])
    assert without_inputs(got.to_json()) == without_inputs(want.to_json())
    assert {x.name: x.counts.numel - x.counts.identical for x in got.tensors} == changed
    obj = got.to_json()
    for side, key in (("base", b), ("target", t)):
        if key.startswith("bin"):
            assert obj[side]["format"] == "pytorch-bin"
        else:
            assert "format" not in obj[side]


def test_file_and_index_paths(layouts):
    want = without_inputs(subnetscope.compare(layouts["bin_base"], layouts["bin_target_sharded"]).to_json())
    got = subnetscope.compare(
        layouts["bin_base"] / "pytorch_model.bin",
        layouts["bin_target_sharded"] / "pytorch_model.bin.index.json",
    )
    assert without_inputs(got.to_json()) == want


def test_views_tied_weights_and_dtypes(tmp_path):
    big = torch.arange(40, dtype=torch.float32).reshape(10, 4)
    emb = torch.randn(6, 4).to(torch.bfloat16)
    sd = {
        "view.weight": big[2:5],  # contiguous view at a storage offset
        "embed.weight": emb,
        "lm_head.weight": emb,  # tied: one storage, two names
        "ids": torch.arange(7, dtype=torch.int64),
        "flag": torch.tensor([True, False]),
        "scalar": torch.tensor(3.5, dtype=torch.float16),
        "empty": torch.zeros(0, 3),
        "fp8": torch.randn(3, 3).to(torch.float8_e4m3fn),
    }
    torch.save(sd, tmp_path / "pytorch_model.bin")
    ck = open_checkpoint(tmp_path)
    for name, t in sd.items():
        assert ck[name].shape == tuple(t.shape), name
        assert (read_tensor_bits(ck[name]) == bits(t.contiguous()).reshape(-1)).all(), name
    assert ck["embed.weight"].start == ck["lm_head.weight"].start
    assert ck["fp8"].dtype.code == "F8_E4M3" and ck["flag"].dtype.code == "BOOL"


def _refused(path, err, *needles):
    with pytest.raises(err) as ei:
        open_checkpoint(path)
    msg = str(ei.value)
    for n in needles:
        assert n in msg, msg
    return msg


def test_not_weights_only_pickle_is_refused(tmp_path):
    torch.save({"w": torch.ones(2), "evil": NotAWeight()}, tmp_path / "pytorch_model.bin")
    msg = _refused(tmp_path, CheckpointFormatError, str(tmp_path / "pytorch_model.bin"), "not weights-only")
    assert "NotAWeight" in msg and "never runs code" in msg


def test_other_refusals(tmp_path):
    d = tmp_path / "nc"
    d.mkdir()
    torch.save({"t": torch.randn(4, 3).t()}, d / "pytorch_model.bin")
    _refused(d, CheckpointFormatError, "'t'", "non-contiguous view", ".contiguous()")

    d = tmp_path / "nested"
    d.mkdir()
    torch.save({"model": {"w": torch.ones(2)}, "step": 3}, d / "pytorch_model.bin")
    _refused(d, CheckpointFormatError, "entry 'model' is a dict, not a tensor")

    d = tmp_path / "notdict"
    d.mkdir()
    torch.save([torch.ones(2)], d / "pytorch_model.bin")
    _refused(d, CheckpointFormatError, "holds a list, not a state dict")

    d = tmp_path / "complex"
    d.mkdir()
    torch.save({"c": torch.ones(2, dtype=torch.complex64)}, d / "pytorch_model.bin")
    _refused(d, UnsupportedDtypeError, "'c' has dtype complex64")

    d = tmp_path / "old"
    d.mkdir()
    torch.save({"w": torch.ones(2)}, d / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    _refused(d, CheckpointFormatError, "not a zip-format torch.save file")

    d = tmp_path / "garbage"
    d.mkdir()
    (d / "pytorch_model.bin").write_bytes(b"not a checkpoint at all")
    _refused(d, CheckpointFormatError, "pytorch_model.bin")

    d = tmp_path / "args_only"
    d.mkdir()
    torch.save({"lr": 1.0}, d / "training_args.bin")
    _refused(d, InputNotFoundError, "no .safetensors files", "pytorch_model.bin")


def test_sharded_index_checked_like_safetensors(states, tmp_path):
    base, *_ = states
    d = save_bin(base, tmp_path / "b", shards=2)
    idx = d / "pytorch_model.bin.index.json"
    obj = json.loads(idx.read_text())
    (d / "pytorch_model-00002-of-00002.bin").unlink()
    _refused(d, CheckpointFormatError, "names shard 'pytorch_model-00002-of-00002.bin', which does not exist")
    obj["weight_map"] = {k: "pytorch_model-00001-of-00002.bin" for k in obj["weight_map"]}
    idx.write_text(json.dumps(obj))
    _refused(d, CheckpointFormatError, "but that shard does not contain it")


def test_safetensors_win_over_bin(states, tmp_path):
    base, *_ = states
    d = save_checkpoint(base, tmp_path / "both")
    torch.save({"other": torch.ones(1)}, d / "pytorch_model.bin")
    ck = open_checkpoint(d)
    assert ck.format == "safetensors" and "other" not in ck
