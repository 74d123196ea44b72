"""Hub ids resolved offline against a fake local Hugging Face cache (HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from factory import llama_names, perturb, random_state, save_checkpoint

COMMIT_MAIN = "a" * 40
COMMIT_V1 = "b" * 40


def fake_cache(root: Path, repo: str, snapshots: dict[str, tuple[str, dict]]) -> Path:
    """Lay out ``models--org--name`` as huggingface_hub does: refs/<rev> -> commit, snapshots/<commit>/files."""
    d = root / f"models--{repo.replace('/', '--')}"
    (d / "refs").mkdir(parents=True)
    for rev, (commit, state) in snapshots.items():
        (d / "refs" / rev).write_text(commit)
        save_checkpoint(state, d / "snapshots" / commit, shards=2)
    return root


def test_hub_ids_with_revisions_offline(tmp_path):
    shapes = llama_names(layers=1, hidden=8, inter=16, vocab=12)
    base = random_state(shapes, seed=0)
    target, changed = perturb(base, 0.3, seed=2)
    cache = fake_cache(
        tmp_path / "hub", "acme/tiny", {"main": (COMMIT_MAIN, base), "v1": (COMMIT_V1, target)}
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache))
    p = subprocess.run([sys.executable, "-m", "subnetscope", "compare", "acme/tiny", "acme/tiny@v1", "--format", "json"],
                       capture_output=True, text=True, env=env)  # fmt: skip
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["base"]["ref"] == "acme/tiny" and doc["target"]["ref"] == "acme/tiny@v1"
    assert doc["target"]["path"].endswith(COMMIT_V1)
    total = sum(t.numel() for t in base.values())
    assert doc["overall"]["identical"] == total - sum(changed.values())


def test_local_path_wins_over_hub_id(tmp_path, monkeypatch):
    shapes = llama_names(layers=1, hidden=8, inter=16, vocab=12)
    local = tmp_path / "acme" / "tiny"
    save_checkpoint(random_state(shapes), local)
    monkeypatch.chdir(tmp_path)
    from subnetscope.refs import resolve_path

    assert resolve_path("acme/tiny") == Path("acme/tiny")


def test_a_legacy_bin_repository_fetches_its_bin_shards(tmp_path, monkeypatch):
    """No safetensors in the first fetch: the second asks for the legacy shards, and nothing else."""
    import huggingface_hub

    from scale_helpers import save_bin
    from subnetscope.refs import ALLOW_PATTERNS, LEGACY_PATTERNS, load_checkpoint

    shapes = llama_names(layers=1, hidden=8, inter=16, vocab=12)
    state = random_state(shapes, seed=3)
    full = save_bin(state, tmp_path / "repo", shards=2)  # what the hub holds
    calls = []

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None):
        calls.append(list(allow_patterns))
        snap = tmp_path / "snap"
        snap.mkdir(exist_ok=True)
        for f in full.iterdir():  # "download" the files that match
            if any(Path(f.name).match(p) for p in allow_patterns):
                (snap / f.name).write_bytes(f.read_bytes())
        return str(snap)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    ck = load_checkpoint("acme/legacy")
    assert calls == [ALLOW_PATTERNS, LEGACY_PATTERNS]
    assert set(ck.tensors) == set(state)
    assert sorted(p.name for p in (tmp_path / "snap").iterdir()) == sorted(p.name for p in full.iterdir())


def test_a_safetensors_repository_is_fetched_once(tmp_path, monkeypatch):
    import huggingface_hub

    from subnetscope.refs import ALLOW_PATTERNS, load_checkpoint

    shapes = llama_names(layers=1, hidden=8, inter=16, vocab=12)
    snap = save_checkpoint(random_state(shapes), tmp_path / "snap")
    calls = []
    monkeypatch.setattr(
        huggingface_hub,
        "snapshot_download",
        lambda repo_id, revision=None, allow_patterns=None: calls.append(list(allow_patterns)) or str(snap),
    )
    load_checkpoint("acme/tiny")
    assert calls == [ALLOW_PATTERNS]
