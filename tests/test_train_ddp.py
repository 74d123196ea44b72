"""Subnetwork finetuning under DDP (2 CPU processes, gloo): gradients are masked before the all-reduce."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from train_helpers import batches, bits_differ, ddp_worker, lm_loss, random_masks, snapshot, tiny_net

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")


def test_ddp_two_processes(tmp_path):
    masks = random_masks(tiny_net(), 0.3, seed=9)
    masks["fc1.bias"][:] = False  # a fully frozen parameter must not upset DDP's reducer
    mp.spawn(ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path), masks), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert r0["bad"] == 0 and r1["bad"] == 0
    init = snapshot(tiny_net(seed=0))
    for n, p in r0["state"].items():
        assert not bits_differ(p, r1["state"][n]).any(), n  # the replicas agree
        assert not (bits_differ(p, init[n]) & ~masks[n]).any(), n  # frozen entries kept their bits
    # first step's clipping norm = norm of the rank-averaged gradient times the mask
    model = tiny_net(seed=0)
    grads = []
    for rank in range(2):
        model.zero_grad()
        lm_loss(model, batches(1, seed=100 + rank)[0]).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    masked = [((grads[0][n] + grads[1][n]) / 2 * masks[n]).pow(2).sum() for n in masks]
    assert r0["norms"][0] == pytest.approx(float(torch.stack(masked).sum().sqrt()), rel=1e-5)
    assert r0["norms"] == r1["norms"]
