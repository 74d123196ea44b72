"""patch_state_dict writes the target's bits into loaded tensors, in place, or refuses before writing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from delta_helpers import flip_bits, perturb_bits, random_weights, small_shapes, write_pair
from factory import bits
from subnetscope.delta import DeltaBaseMismatchError, export_delta, patch_state_dict
from subnetscope.errors import DeltaFormatError, MismatchError

UP1 = "model.layers.1.mlp.up_proj.weight"


@pytest.fixture(params=[torch.bfloat16, torch.float8_e5m2], ids=["bf16", "fp8"])
def pair(request, tmp_path):
    """(delta_dir, base_state, target_state, changed): sparse, dense, unchanged and new tensors, no reshapes."""
    base = random_weights(small_shapes(), request.param)
    target, changed = perturb_bits(base, 0.1, names=[n for n in base if "norm" not in n])
    target[UP1] = flip_bits(base[UP1], np.arange(base[UP1].numel()))
    changed[UP1] = base[UP1].numel()
    target["model.new_head.weight"] = random_weights({"x": (6, 32)}, request.param, 9)["x"]
    bdir, tdir = write_pair(tmp_path, base, target)
    export_delta(bdir, tdir, tmp_path / "d", chunk_elements=256)
    return tmp_path / "d", base, target, changed


def _loaded(base, extra=()):
    sd = {n: t.clone() for n, t in base.items()}
    for n, shape, dtype in extra:
        sd[n] = torch.zeros(shape, dtype=dtype)
    return sd


def _same(a, b):
    assert sorted(a) == sorted(b)
    for n in a:
        np.testing.assert_array_equal(bits(a[n]), bits(b[n]), err_msg=n)


def test_patch_in_place(pair):
    d, base, target, changed = pair
    sd = _loaded(base, [("model.new_head.weight", (6, 32), base[UP1].dtype)])
    ptrs = {n: t.data_ptr() for n, t in sd.items()}
    res = patch_state_dict(sd, d, verify=True, jobs=2)
    _same(sd, target)
    assert {n: t.data_ptr() for n, t in sd.items()} == ptrs  # the same storage, patched in place
    assert res.verified and res.elements_written == sum(changed.values()) + 6 * 32
    assert set(res.tensors_written) == {n for n, c in changed.items() if c} | {"model.new_head.weight"}


def test_patch_refuses_the_wrong_weights_and_a_second_application(pair):
    d, base, target, _ = pair
    extra = [("model.new_head.weight", (6, 32), base[UP1].dtype)]
    other = _loaded(random_weights(small_shapes(), base[UP1].dtype, seed=3), extra)
    before = {n: t.clone() for n, t in other.items()}
    with pytest.raises(
        DeltaBaseMismatchError, match="a base with other weights than the state dict's tensors"
    ):
        patch_state_dict(other, d)
    _same(other, before)
    sd = _loaded(base, extra)
    patch_state_dict(sd, d)
    with pytest.raises(DeltaBaseMismatchError, match="other weights"):
        patch_state_dict(sd, d)  # already patched: the sparse tensors no longer hold the base's values
    _same(sd, target)


@pytest.mark.parametrize("problem", ["missing", "shape", "dtype", "layout"])
def test_patch_refuses_a_state_dict_that_does_not_fit(pair, problem):
    d, base, _target, _ = pair
    sd = _loaded(base, [("model.new_head.weight", (6, 32), base[UP1].dtype)])
    name = "model.layers.0.self_attn.q_proj.weight"
    if problem == "missing":
        del sd[name]
        words = f"{name!r} is missing"
    elif problem == "shape":
        sd[name] = sd[name][:16].clone()
        words = f"{name!r} is [16, 32]"
    elif problem == "dtype":
        sd[name] = sd[name].to(torch.float32)
        words = "F32, the target has [32, 32]"
    else:
        sd[name] = sd[name].t().contiguous().t()
        words = f"{name!r} is not contiguous"
    before = {n: t.clone() for n, t in sd.items()}
    with pytest.raises(MismatchError, match="the state dict does not fit the delta's target") as info:
        patch_state_dict(sd, d)
    assert words in str(info.value)
    _same(sd, before)


def test_patch_refuses_a_damaged_delta(pair):
    d, base, _target, _ = pair
    data = d / "data-00001.bin"
    data.write_bytes(data.read_bytes()[:-1])
    sd = _loaded(base, [("model.new_head.weight", (6, 32), base[UP1].dtype)])
    before = {n: t.clone() for n, t in sd.items()}
    with pytest.raises(DeltaFormatError, match="truncated"):
        patch_state_dict(sd, d)
    _same(sd, before)
