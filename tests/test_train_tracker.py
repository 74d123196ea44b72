"""UpdateTracker in plain PyTorch: exact counts on steps whose effect is known by construction."""

from __future__ import annotations

import json

import pytest
import torch

from subnetscope.errors import UsageError
from subnetscope.maskfile import MaskFile
from subnetscope.train import SubnetworkMask, UpdateTracker
from train_helpers import batches, bits_differ, lm_loss, random_masks, snapshot, tiny_net


class Two(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(8))
        self.v = torch.nn.Parameter(torch.full((2, 2), 2.0))


# step 1 and step 2 gradients of w: 0-1 go and come back (cancelled), 2-3 move once (final), 4-5 never get a
# gradient, 6-7 get a gradient too small to change an fp32 1.0 (1 - 1e-10 rounds back to 1.0)
G1 = [0.5, 0.5, 0.5, 0.5, 0.0, 0.0, 1e-10, 1e-10]
G2 = [-0.5, -0.5, 0.0, 0.0, 0.0, 0.0, 1e-10, 1e-10]


def known_run(tmp_path, every=1):
    model = Two()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    tracker = UpdateTracker(tmp_path / "track", every=every, tolerances=[1e-5, 0.6]).attach(model, opt)
    for g in (G1, G2):
        model.w.grad = torch.tensor(g)
        model.v.grad = torch.zeros(2, 2)
        opt.step()
    return model, tracker


def test_known_counts(tmp_path):
    model, tracker = known_run(tmp_path)
    s1, s2 = tracker.steps
    assert (s1["changed_vs_prev"], s1["grad_nonzero"], s1["ever_changed"], s1["ever_grad"]) == (4, 6, 4, 6)
    assert (s2["changed_vs_prev"], s2["grad_nonzero"], s2["ever_changed"], s2["ever_grad"]) == (2, 4, 4, 6)
    assert s1["sparsity_vs_prev"] == pytest.approx(1 - 4 / 12)
    assert s1["changed_vs_init"] == 4 and s2["changed_vs_init"] == 2
    # |Δ| = 0.5 at elements 2-3: changed at 1e-5, unchanged at 0.6
    assert s2["unchanged_vs_init"] == [10, 12]
    assert tracker.split() == {
        "never_updated": 4 + 4, "cancelled": 2, "final_subnetwork": 2,
        "never_grad": 2 + 4, "grad_cancelled": 4, "final_without_grad": 0, "numel": 12,
    }  # fmt: skip
    sets = tracker.sets()
    assert sets["ever_changed"]["w"].tolist() == [True] * 4 + [False] * 4
    assert sets["ever_grad"]["w"].tolist() == [True] * 4 + [False] * 2 + [True] * 2
    assert sets["final"]["w"].tolist() == [False] * 2 + [True] * 2 + [False] * 4


def test_every_n_steps(tmp_path):
    _, tracker = known_run(tmp_path, every=2)
    assert "changed_vs_init" not in tracker.steps[0]
    assert tracker.steps[1]["changed_vs_init"] == 2


def test_save_writes_json_and_mask(tmp_path):
    model, tracker = known_run(tmp_path, every=5)
    path = tracker.save()
    doc = json.loads(path.read_text())
    assert doc["report"] == "subnetscope.tracker" and doc["schema_version"] == "1.0"
    assert [s["step"] for s in doc["steps"]] == [1, 2]
    assert doc["steps"][-1]["changed_vs_init"] == 2  # measured at the end even off the every-N grid
    assert doc["split"]["never_updated"] + doc["split"]["cancelled"] + doc["split"]["final_subnetwork"] == 12
    assert {t["name"]: t["ever_changed"] for t in doc["tensors"]} == {"w": 4, "v": 0}
    mf = MaskFile(tmp_path / "track" / "ever_changed.mask")
    assert mf["w"].tolist() == [True] * 4 + [False] * 4
    assert not mf["v"].any()
    assert mf.metadata["set"] == "ever_changed"
    # the mask's base is the initial weights: it loads onto a fresh copy of them, not onto the trained model
    fresh = Two()
    assert SubnetworkMask.load(mf.path, fresh)["w"].tolist() == [True] * 4 + [False] * 4
    from subnetscope.errors import MaskMismatchError

    with pytest.raises(MaskMismatchError, match="other weights"):
        SubnetworkMask.load(mf.path, model)


def test_base_dtype_fingerprint(tmp_path):
    """fp32 weights holding bf16 values, tracked with base_dtype=bf16, match a bf16 copy of the start."""
    model = Two()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    tracker = UpdateTracker(tmp_path, base_dtype=torch.bfloat16).attach(model, opt)
    tracker.write_mask(tmp_path / "m.mask", which="final")
    mf = MaskFile(tmp_path / "m.mask")
    assert mf.dtypes == {"w": "BF16", "v": "BF16"}
    SubnetworkMask.load(mf.path, Two().to(torch.bfloat16))


def test_matches_oracle_on_real_training(tmp_path):
    """Counts of a real AdamW loop equal a brute-force diff taken in the loop by hand."""
    model = tiny_net()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    init = snapshot(model)
    tracker = UpdateTracker(every=2).attach(model, opt)
    ever_grad = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in model.named_parameters()}
    ever_changed = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in model.named_parameters()}
    per_step = []
    for ids in batches(4, seed=2, vocab=20):
        lm_loss(model, ids).backward()
        before = snapshot(model)
        for n, p in model.named_parameters():
            ever_grad[n] |= p.grad != 0
        opt.step()
        opt.zero_grad()
        changed = 0
        for n, p in model.named_parameters():
            d = bits_differ(p.detach(), before[n])
            ever_changed[n] |= d
            changed += int(d.sum())
        per_step.append(changed)
    assert [s["changed_vs_prev"] for s in tracker.steps] == per_step
    sets = tracker.sets()
    for n in init:
        assert torch.equal(sets["ever_grad"][n], ever_grad[n]), n
        assert torch.equal(sets["ever_changed"][n], ever_changed[n]), n
    final = sum(int(bits_differ(p.detach(), init[n]).sum()) for n, p in model.named_parameters())
    assert tracker.split()["final_subnetwork"] == final
    # the embedding rows of unused tokens never get a gradient
    assert tracker.split()["never_grad"] > 0


def test_tracker_sees_restored_values_whatever_the_order():
    """Attached before the mask, the tracker still measures after the frozen entries are restored."""
    model = tiny_net()
    masks = random_masks(model, 0.3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    tracker = UpdateTracker().attach(model, opt)
    SubnetworkMask(model, masks).attach(model, opt)
    for ids in batches(3):
        lm_loss(model, ids).backward()
        opt.step()
        opt.zero_grad()
    sets = tracker.sets()
    for n, m in masks.items():
        assert not (sets["ever_changed"][n] & ~m).any(), n
        assert not (sets["ever_grad"][n] & ~m).any(), n
    assert sum(int(v.sum()) for v in sets["ever_changed"].values()) > 0.9 * sum(
        int(m.sum()) for m in masks.values()
    )


def test_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="every=0 must be at least 1"):
        UpdateTracker(every=0)
    model = tiny_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tracker = UpdateTracker().attach(model, opt)
    with pytest.raises(UsageError, match="already attached"):
        tracker.attach(model, opt)
    with pytest.raises(UsageError, match="no output directory for the tracker"):
        tracker.save()
    with pytest.raises(UsageError, match="unknown set 'nope'"):
        tracker.write_mask(tmp_path / "x.mask", which="nope")


def test_json_is_readable_by_the_series_plots(tmp_path):
    """tracker.json uses the series report's keys: the series plots draw it."""
    pytest.importorskip("matplotlib")
    series_plots = pytest.importorskip("subnetscope.render.series_plots")
    _, tracker = known_run(tmp_path, every=1)
    doc = json.loads(tracker.save().read_text())
    for s in doc["steps"]:
        assert {"index", "step", "sparsity_vs_prev", "sparsity_vs_init", "ever_updated_share"} <= set(s)
    assert doc["split"]["shares"]["final_subnetwork"] == pytest.approx(2 / 12)
    written = series_plots.plot_series(doc, tmp_path / "plots")
    assert {p.name for p in written} >= {"series_sparsity.png", "series_split.png", "series_consecutive.svg"}
    from subnetscope.cli import main

    main(["plot", str(tracker.save()), "-o", str(tmp_path / "via_cli")])  # returns normally on success
    assert (tmp_path / "via_cli" / "series_split.png").is_file()
