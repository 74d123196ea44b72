"""Shared fixtures: a base/target pair of tiny Llama checkpoints with known changes, sharded differently."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("SUBNETSCOPE_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from factory import llama_names, perturb, random_state, save_checkpoint


@pytest.fixture(scope="session")
def llama_pair(tmp_path_factory):
    """(base_dir, target_dir, base_state, target_state, changed_per_tensor): base in 3 shards, target in 2."""
    root = tmp_path_factory.mktemp("pair")
    shapes = llama_names(layers=3, hidden=32, inter=64, vocab=96)
    base = random_state(shapes, seed=0)
    target, changed = perturb(base, 0.2, seed=1)
    bdir = save_checkpoint(base, root / "base", shards=3)
    tdir = save_checkpoint(target, root / "target", shards=2, order=sorted(target))
    return bdir, tdir, base, target, changed


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray of 2 CPUs for the module (its workers import the test helpers)."""
    ray = pytest.importorskip("ray")
    tests_dir = str(Path(__file__).parent)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = tests_dir + (os.pathsep + old if old else "")  # workers import scale_helpers
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 2**20)
    try:
        yield ray
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
