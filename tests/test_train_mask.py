"""Subnetwork finetuning in plain PyTorch: frozen entries stay byte-identical whatever the optimizer does."""

from __future__ import annotations

import pytest
import torch

from subnetscope.errors import MaskFormatError, MaskMismatchError, UsageError
from subnetscope.train import SubnetworkMask, UnsupportedSetupError
from train_helpers import (
    batches,
    bits_differ,
    lm_loss,
    mask_file_for,
    random_masks,
    snapshot,
    tiny_net,
)


def run(model, opt, steps=5, accum=1, clip=1.0, autocast=False, seed=0, manual_mask=None):
    """A training loop; with ``manual_mask`` it masks gradients and restores frozen entries by hand."""
    data = batches(steps * accum, seed=seed)
    init = snapshot(model)
    norms = []
    for s in range(steps):
        for ids in data[s * accum : (s + 1) * accum]:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = lm_loss(model, ids) / accum
            loss.backward()
        if manual_mask is not None:
            for n, p in model.named_parameters():
                p.grad.mul_(manual_mask[n])
        if clip:
            norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip)))
        opt.step()
        opt.zero_grad()
        if manual_mask is not None:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    p.copy_(torch.where(manual_mask[n], p, init[n]))
    return norms


def frozen_and_trainable_moves(model, init, masks):
    """(frozen elements whose bits changed, trainable elements whose bits changed, trainable count)."""
    frozen = moved = trainable = 0
    for n, p in model.named_parameters():
        d = bits_differ(p.detach(), init[n])
        frozen += int((d & ~masks[n]).sum())
        moved += int((d & masks[n]).sum())
        trainable += int(masks[n].sum())
    return frozen, moved, trainable


OPTIMIZERS = {
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=0.01),
    "sgd_momentum_wd": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
}


LAYOUTS = ["bitwise", "compact"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_frozen_entries_bit_identical(opt_name, layout):
    model = tiny_net()
    masks = random_masks(model, 0.3)
    init = snapshot(model)
    opt = OPTIMIZERS[opt_name](model.parameters())
    handle = SubnetworkMask(model, masks).attach(model, opt, layout=layout)
    run(model, opt)
    frozen, moved, trainable = frozen_and_trainable_moves(model, init, masks)
    assert frozen == 0
    assert handle.verify() == 0
    # weight decay alone moves every non-zero trainable weight
    assert moved >= 0.95 * trainable


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_without_mask_frozen_entries_move(opt_name):
    """The same run without the mask moves the would-be-frozen entries (so the test above can fail)."""
    model = tiny_net()
    masks = random_masks(model, 0.3)
    init = snapshot(model)
    opt = OPTIMIZERS[opt_name](model.parameters())
    run(model, opt)
    frozen, _, _ = frozen_and_trainable_moves(model, init, masks)
    total_frozen = sum(int((~m).sum()) for m in masks.values())
    assert frozen >= 0.9 * total_frozen


def test_zeroing_grads_alone_is_not_enough():
    """AdamW's decoupled weight decay moves entries whose gradient is masked to zero."""
    model = tiny_net()
    masks = random_masks(model, 0.3)
    init = snapshot(model)
    opt = OPTIMIZERS["adamw"](model.parameters())
    for n, p in model.named_parameters():
        p.register_hook(lambda g, m=masks[n]: g * m)
    run(model, opt)
    frozen, _, _ = frozen_and_trainable_moves(model, init, masks)
    assert frozen > 0


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("accum", [1, 3])
def test_equals_manual_definition(opt_name, accum, layout):
    """Bit for bit the paper's definition: grads times the mask before clipping, frozen entries held fixed."""
    masks = random_masks(tiny_net(), 0.4, seed=3)
    a, b = tiny_net(), tiny_net()
    opt_a, opt_b = OPTIMIZERS[opt_name](a.parameters()), OPTIMIZERS[opt_name](b.parameters())
    SubnetworkMask(a, masks).attach(a, opt_a, layout=layout)
    norms_a = run(a, opt_a, accum=accum, clip=0.05)
    norms_b = run(b, opt_b, accum=accum, clip=0.05, manual_mask=masks)
    assert norms_a == norms_b
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert not bits_differ(pa.detach(), pb.detach()).any(), n


@pytest.mark.parametrize("layout", LAYOUTS)
def test_clipping_uses_masked_norm(layout):
    model = tiny_net()
    masks = random_masks(model, 0.3, seed=5)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = batches(1, seed=7)[0]
    lm_loss(model, ids).backward()
    full = {n: p.grad.clone() for n, p in model.named_parameters()}
    opt.zero_grad()
    SubnetworkMask(model, masks).attach(model, opt, layout=layout)
    lm_loss(model, ids).backward()
    got = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1e-3))
    masked_norm = float(torch.sqrt(sum(((full[n] * masks[n]) ** 2).sum() for n in full)))
    unmasked_norm = float(torch.sqrt(sum((g**2).sum() for g in full.values())))
    assert got == pytest.approx(masked_norm, rel=1e-6)
    assert unmasked_norm > 1.2 * masked_norm
    for n, p in model.named_parameters():
        assert not (p.grad[~masks[n]] != 0).any()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_bf16_parameters(layout):
    model = tiny_net(dtype=torch.bfloat16)
    masks = random_masks(model, 0.3)
    init = snapshot(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    handle = SubnetworkMask(model, masks).attach(model, opt, layout=layout)
    run(model, opt)
    frozen, moved, trainable = frozen_and_trainable_moves(model, init, masks)
    assert frozen == 0 and handle.verify() == 0
    assert moved > 0.5 * trainable


def test_fp32_master_weights_with_bf16_autocast():
    model = tiny_net()
    masks = random_masks(model, 0.3)
    init = snapshot(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    SubnetworkMask(model, masks).attach(model, opt)
    run(model, opt, autocast=True)
    frozen, moved, trainable = frozen_and_trainable_moves(model, init, masks)
    assert frozen == 0
    assert moved >= 0.95 * trainable


@pytest.mark.parametrize("layout", LAYOUTS)
def test_optimizer_state_with_history_is_held_back(layout):
    """Adam moments from steps taken before the mask still push frozen entries; they are restored."""
    model = tiny_net()
    masks = random_masks(model, 0.3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    run(model, opt, steps=2)
    init = snapshot(model)
    handle = SubnetworkMask(model, masks).attach(model, opt, layout=layout)
    run(model, opt, steps=3, seed=1)
    frozen, _, _ = frozen_and_trainable_moves(model, init, masks)
    assert frozen == 0 and handle.verify() == 0


@pytest.mark.parametrize("layout", LAYOUTS)
def test_fully_frozen_parameter_gets_no_grad(layout):
    model = tiny_net()
    masks = random_masks(model, 0.3)
    masks["fc1.weight"][:] = False
    masks["norm.bias"][:] = True
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    init = snapshot(model)
    handle = SubnetworkMask(model, masks).attach(model, opt, layout=layout)
    lm_loss(model, batches(1)[0]).backward()
    assert model.fc1.weight.grad is None
    assert model.norm.bias.grad is not None and (model.norm.bias.grad != 0).any()
    opt.step()
    assert not bits_differ(model.fc1.weight.detach(), init["fc1.weight"]).any()
    assert handle.frozen == sum(int((~m).sum()) for m in masks.values())
    full = masks["fc1.weight"].numel() * 4
    partial = [m for n, m in masks.items() if 0 < int(m.sum()) < m.numel()]
    if layout == "bitwise":  # an int32 mask and the saved bits of every partly frozen parameter
        assert handle.memory_bytes == full + sum(m.numel() * 8 for m in partial)
    else:  # a bool mask and the frozen values
        assert handle.memory_bytes == full + sum(m.numel() + int((~m).sum()) * 4 for m in partial)


def test_unknown_layout():
    model = tiny_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(UsageError, match="layout='fast' is not one of"):
        SubnetworkMask(model, random_masks(model)).attach(model, opt, layout="fast")


def test_remove_uninstalls_hooks():
    model = tiny_net()
    masks = random_masks(model, 0.3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    with SubnetworkMask(model, masks).attach(model, opt):
        run(model, opt, steps=1)
    init = snapshot(model)
    run(model, opt, steps=1)
    frozen, _, _ = frozen_and_trainable_moves(model, init, masks)
    assert frozen > 0


def test_mapping_interface():
    model = tiny_net()
    masks = random_masks(model, 0.25)
    sm = SubnetworkMask(model, masks)
    assert list(sm) == [n for n, _ in model.named_parameters()]
    assert sm["fc1.weight"].dtype == torch.bool and sm["fc1.weight"].shape == model.fc1.weight.shape
    assert sm.trainable == sum(int(m.sum()) for m in masks.values())
    assert sm.numel == sum(p.numel() for p in model.parameters())
    assert "trainable" in repr(sm)
    with pytest.raises(TypeError):
        sm["fc1.weight"] = masks["fc1.weight"]  # type: ignore[index]
    with pytest.raises(MaskMismatchError, match="not a parameter of the model"):
        SubnetworkMask(model, {"nope.weight": masks["fc1.weight"]})
    with pytest.raises(MaskMismatchError, match=r"shape \[32, 16\], the parameter \[16, 32\]"):
        SubnetworkMask(model, {"fc2.weight": masks["fc1.weight"]})


# ---- loading mask files ------------------------------------------------------------------------------------
def test_load_from_mask_file_and_train(tmp_path):
    model = tiny_net()
    state = dict(model.state_dict())
    path, chosen = mask_file_for(state, tmp_path, density=0.3)
    sm = SubnetworkMask.load(path, model)
    for n in state:
        assert torch.equal(sm[n], chosen[n]), n
    init = snapshot(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    sm.attach(model, opt)
    run(model, opt)
    frozen, moved, trainable = frozen_and_trainable_moves(model, init, chosen)
    assert frozen == 0 and moved >= 0.95 * trainable


def test_load_refuses_other_weights(tmp_path):
    path, _ = mask_file_for(dict(tiny_net(seed=0).state_dict()), tmp_path)
    other = tiny_net(seed=1)
    with pytest.raises(
        MaskMismatchError, match="mask was made against a base with other weights than the given model"
    ):
        SubnetworkMask.load(path, other)
    sm = SubnetworkMask.load(path, other, check_content=False)
    assert len(sm) == 8


def test_load_refuses_other_architecture(tmp_path):
    path, _ = mask_file_for(dict(tiny_net().state_dict()), tmp_path)

    class Wider(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(32, 24)

    with pytest.raises(
        MaskMismatchError, match=r"no parameter for 7 of the mask's tensors, e\.g\. 'fc1\.bias'"
    ):
        SubnetworkMask.load(path, Wider())
    wider = tiny_net()
    wider.fc1 = torch.nn.Linear(16, 40)
    with pytest.raises(
        MaskMismatchError, match=r"tensor 'fc1.bias' has shape \[32\] in the mask but \[40\] in the model"
    ):
        SubnetworkMask.load(path, wider)


def test_load_refuses_non_mask_file(tmp_path):
    with pytest.raises(MaskFormatError, match="no such mask file"):
        SubnetworkMask.load(tmp_path / "missing.mask", tiny_net())


def test_uncovered_parameters(tmp_path):
    model = tiny_net()
    state = {k: v for k, v in model.state_dict().items() if k != "head.weight"}
    path, _ = mask_file_for(state, tmp_path)
    with pytest.raises(
        MaskMismatchError, match=r"trainable parameter 'head\.weight' is not covered by the mask"
    ):
        SubnetworkMask.load(path, model)
    assert not SubnetworkMask.load(path, model, uncovered="freeze")["head.weight"].any()
    assert SubnetworkMask.load(path, model, uncovered="train")["head.weight"].all()
    model.head.weight.requires_grad_(False)
    assert "head.weight" not in SubnetworkMask.load(path, model)


def test_load_through_wrapper_prefixes(tmp_path):
    inner = tiny_net()
    path, chosen = mask_file_for(dict(inner.state_dict()), tmp_path)

    class Wrapper(torch.nn.Module):  # like DDP's "module." or PEFT's "base_model.model."
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.module = m

    sm = SubnetworkMask.load(path, Wrapper(inner))
    assert torch.equal(sm["module.fc1.weight"], chosen["fc1.weight"])
    # a checkpoint with an extra "model." prefix maps onto a bare model
    prefixed = {f"model.{k}": v for k, v in inner.state_dict().items()}
    path2, chosen2 = mask_file_for(prefixed, tmp_path, name="prefixed.mask")
    sm2 = SubnetworkMask.load(path2, inner)
    assert torch.equal(sm2["fc2.weight"], chosen2["model.fc2.weight"])


def test_tied_weights_union(tmp_path):
    model = tiny_net()
    model.head.weight = model.embed.weight  # tied: one parameter, two names
    state = {
        "embed.weight": model.embed.weight.detach().clone(),
        "head.weight": model.embed.weight.detach().clone(),
    }
    state.update({k: v for k, v in model.state_dict().items() if k not in state})
    path, chosen = mask_file_for(state, tmp_path, density=0.2, seed=4)
    sm = SubnetworkMask.load(path, model)
    assert "head.weight" not in sm
    assert torch.equal(sm["embed.weight"], chosen["embed.weight"] | chosen["head.weight"])


# ---- unsupported setups --------------------------------------------------------------------------------------
def test_refuses_optimizer_over_other_tensors():
    model = tiny_net()
    master = [torch.nn.Parameter(p.detach().float().clone()) for p in model.parameters()]
    opt = torch.optim.AdamW(master, lr=1e-3)
    with pytest.raises(
        UnsupportedSetupError, match=r"optimizer holds a tensor of shape .* not a parameter of the model"
    ):
        SubnetworkMask(model, random_masks(model)).attach(model, opt)


def test_refuses_deepspeed_and_fsdp():
    model = tiny_net()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.fc1.weight.ds_id = 3  # what DeepSpeed ZeRO-3 puts on partitioned parameters
    with pytest.raises(UnsupportedSetupError, match=r"'fc1\.weight' is partitioned by DeepSpeed ZeRO"):
        SubnetworkMask(model, random_masks(model)).attach(model, opt)
    del model.fc1.weight.ds_id
    FakeFSDP = type(
        "FullyShardedDataParallel", (torch.nn.Module,), {"__module__": "torch.distributed.fsdp.fake"}
    )
    model.fc2 = FakeFSDP()
    with pytest.raises(UnsupportedSetupError, match="module 'fc2' is wrapped by FSDP"):
        SubnetworkMask(model, random_masks(model)).attach(model, opt)


def test_refuses_non_optimizer():
    model = tiny_net()
    with pytest.raises(
        UnsupportedSetupError, match=r"the optimizer \(object\) is not a torch.optim.Optimizer"
    ):
        SubnetworkMask(model, random_masks(model)).attach(model, object())


def test_buffers_in_the_mask_are_matched_not_trained(tmp_path):
    model = tiny_net()
    model.register_buffer("scale", torch.full((4,), 0.5))
    state = dict(model.state_dict())
    assert "scale" in state
    path, chosen = mask_file_for(state, tmp_path)
    sm = SubnetworkMask.load(path, model)
    assert "scale" not in sm and torch.equal(sm["fc1.weight"], chosen["fc1.weight"])
    model.scale.fill_(0.25)  # the buffer is part of the base's fingerprint
    with pytest.raises(MaskMismatchError, match="other weights"):
        SubnetworkMask.load(path, model)
