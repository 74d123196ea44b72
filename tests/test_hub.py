"""Hub ids resolved offline (HF_HUB_OFFLINE=1) by the real ``huggingface_hub.snapshot_download`` against a
cache laid out as huggingface_hub writes it (:mod:`hub_cache`: snapshot files are relative symlinks into the
repository's ``blobs/``), for single-file, sharded, Xet-shared and legacy ``.bin`` models; and the index
escape rule on such a cache."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from factory import bits, llama_names, perturb, random_state, save_checkpoint
from hub_cache import add_checkpoint, add_snapshot, hub_env, repo_dir
from subnetscope.errors import CheckpointFormatError
from subnetscope.refs import load_checkpoint

COMMIT_MAIN = "a" * 40
COMMIT_V1 = "b" * 40
COMMIT_V2 = "c" * 40
SHAPES = llama_names(layers=1, hidden=8, inter=16, vocab=12)
SHARD1 = "model-00001-of-00002.safetensors"


def changed_count(a: dict, b: dict) -> int:
    return sum(int((bits(a[n]) != bits(b[n])).sum()) for n in a)


def run(cache: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "subnetscope", *args], capture_output=True, text=True,
                          env=hub_env(cache))  # fmt: skip


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """acme/tiny: main = base (2 shards), v1 = target 1 (2 shards), v2 = target 2 (2 shards, Xet store);
    acme/one: a single-file model; acme/legacy: a sharded pytorch_model.bin model."""
    from scale_helpers import save_bin

    root = tmp_path_factory.mktemp("hub")
    base = random_state(SHAPES, seed=0)
    t1, _ = perturb(base, 0.3, seed=2)
    t2, _ = perturb(t1, 0.2, seed=3)
    cache = root / "cache"
    add_checkpoint(cache, "acme/tiny", save_checkpoint(base, root / "b", shards=2), COMMIT_MAIN)
    add_checkpoint(cache, "acme/tiny", save_checkpoint(t1, root / "t1", shards=2), COMMIT_V1, ("v1",))
    add_checkpoint(
        cache, "acme/tiny", save_checkpoint(t2, root / "t2", shards=2), COMMIT_V2, ("v2",), xet=True
    )
    add_checkpoint(cache, "acme/one", save_checkpoint(t1, root / "one"), COMMIT_MAIN)
    add_checkpoint(cache, "acme/legacy", save_bin(t2, root / "bin", shards=2), COMMIT_MAIN)
    return {"cache": cache, "base": base, "t1": t1, "t2": t2}


def test_the_cache_is_what_huggingface_hub_sees(hub):
    """huggingface_hub's own cache scanner reads the layout: repos, revisions, refs, files, blobs."""
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(hub["cache"])
    assert not info.warnings
    repos = {r.repo_id: r for r in info.repos}
    assert sorted(repos) == ["acme/legacy", "acme/one", "acme/tiny"]
    tiny = repos["acme/tiny"]
    assert sorted(r.commit_hash for r in tiny.revisions) == [COMMIT_MAIN, COMMIT_V1, COMMIT_V2]
    assert {ref: rev.commit_hash for ref, rev in tiny.refs.items()} == {
        "main": COMMIT_MAIN, "v1": COMMIT_V1, "v2": COMMIT_V2,
    }  # fmt: skip
    snap = repo_dir(hub["cache"], "acme/tiny") / "snapshots" / COMMIT_MAIN
    for f in snap.iterdir():
        assert f.is_symlink() and os.readlink(f).startswith("../../blobs/")
    shard = snap / SHARD1
    assert Path(os.readlink(shard)).name == hashlib.sha256(shard.read_bytes()).hexdigest()


def test_snapshot_download_reads_refs_and_the_tree_listing(tmp_path):
    """The real snapshot_download resolves refs offline and checks the snapshot against trees/<commit>.json."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache = tmp_path / "cache"
    snap = add_checkpoint(cache, "acme/t", save_checkpoint(random_state(SHAPES), tmp_path / "b", shards=2),
                          COMMIT_V1, ("v1",))  # fmt: skip
    got = snapshot_download("acme/t", revision="v1", cache_dir=cache, local_files_only=True)
    assert Path(got) == snap
    (snap / SHARD1).unlink()  # the listing says the snapshot is now incomplete
    with pytest.raises(LocalEntryNotFoundError, match=f"incomplete: 1 file.*{SHARD1}"):
        snapshot_download("acme/t", revision="v1", cache_dir=cache, local_files_only=True)


def test_compare_sharded_hub_ids(hub):
    p = run(hub["cache"], "compare", "acme/tiny", "acme/tiny@v1", "--format", "json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["base"]["ref"] == "acme/tiny" and doc["target"]["ref"] == "acme/tiny@v1"
    assert doc["target"]["path"].endswith(COMMIT_V1) and doc["target"]["files"] == 2
    numel = sum(t.numel() for t in hub["base"].values())
    assert doc["overall"]["numel"] == numel
    assert doc["overall"]["identical"] == numel - changed_count(hub["base"], hub["t1"])


def test_compare_single_file_and_xet_shared_blobs(hub):
    p = run(hub["cache"], "compare", "acme/one", "acme/tiny@v2", "--format", "json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    numel = sum(t.numel() for t in hub["base"].values())
    assert doc["overall"]["identical"] == numel - changed_count(hub["t1"], hub["t2"])


def test_compare_legacy_bin_hub_id(hub):
    p = run(hub["cache"], "compare", "acme/tiny", "acme/legacy", "--format", "json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    numel = sum(t.numel() for t in hub["base"].values())
    assert doc["overall"]["identical"] == numel - changed_count(hub["base"], hub["t2"])


def test_mask_on_hub_ids(hub, tmp_path):
    out = tmp_path / "m.mask"
    p = run(hub["cache"], "mask", "acme/tiny", "acme/tiny@v2", "-o", str(out), "--format", "json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["changed"] == changed_count(hub["base"], hub["t2"]) and doc["bytes"] == out.stat().st_size


def test_series_on_hub_ids(hub):
    p = run(hub["cache"], "series", "acme/tiny", "acme/tiny@v1", "acme/tiny@v2", "--format", "json")
    assert p.returncode == 0, p.stderr
    steps = json.loads(p.stdout)["steps"]
    assert [s["changed_vs_init"] for s in steps] == [
        changed_count(hub["base"], hub["t1"]),
        changed_count(hub["base"], hub["t2"]),
    ]
    assert steps[1]["changed_vs_prev"] == changed_count(hub["t1"], hub["t2"])


def test_delta_export_on_hub_ids_rebuilds_the_target(hub, tmp_path):
    from safetensors.torch import load_file

    d = tmp_path / "delta"
    p = run(hub["cache"], "delta", "export", "acme/tiny", "acme/tiny@v2", "-o", str(d), "--format", "json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["changed"] == changed_count(hub["base"], hub["t2"]) and doc["tensors"] == len(SHAPES)
    out = tmp_path / "rebuilt"
    p = run(hub["cache"], "delta", "apply", "acme/tiny", str(d), "-o", str(out), "--verify")
    assert p.returncode == 0, p.stderr
    rebuilt = {}
    for f in sorted(out.glob("*.safetensors")):
        rebuilt.update(load_file(f))
    assert changed_count(hub["t2"], rebuilt) == 0
    # the weights, the config copied from the delta, and apply's record of what it wrote (for --overwrite)
    assert sorted(p.name for p in out.iterdir()) == [
        ".subnetscope-apply.json",
        "config.json",
        "model.safetensors",
    ]


def test_nested_snapshot_folder(tmp_path):
    """A model in a subfolder of the repo: links are ../../../blobs/<etag>."""
    state = random_state(SHAPES, seed=5)
    snap = add_checkpoint(tmp_path / "c", "acme/nested", save_checkpoint(state, tmp_path / "s", shards=2),
                          COMMIT_MAIN, under="weights/")  # fmt: skip
    assert os.readlink(snap / "weights" / SHARD1).startswith("../../../blobs/")
    ck = load_checkpoint(snap / "weights")
    assert set(ck.tensors) == set(state) and ck.tensors["model.norm.weight"].path.parent == snap / "weights"


# -- the escape rule on a real cache layout ------------------------------------------------------------------


def _snap(tmp_path: Path) -> tuple[Path, Path]:
    cache = tmp_path / "cache"
    snap = add_checkpoint(cache, "acme/tiny", save_checkpoint(random_state(SHAPES), tmp_path / "b", shards=2),
                          COMMIT_MAIN)  # fmt: skip
    return cache, snap


def _relink(link: Path, target: Path) -> None:
    link.unlink()
    os.symlink(os.path.relpath(target, link.parent), link)


def test_shard_linked_into_another_repos_blobs_is_refused(tmp_path):
    cache, snap = _snap(tmp_path)
    other = add_snapshot(cache, "evil/other", {SHARD1: (snap / SHARD1).read_bytes()}, COMMIT_V1)
    _relink(snap / SHARD1, (other / SHARD1).resolve())
    with pytest.raises(CheckpointFormatError) as ei:
        load_checkpoint(snap)
    assert str(ei.value).startswith(
        f"{snap / 'model.safetensors.index.json'}: shard '{SHARD1}' points outside the checkpoint directory "
        f"(a symlink to {(other / SHARD1).resolve()})"
    )


def test_shard_linked_to_tmp_is_refused(tmp_path):
    cache, snap = _snap(tmp_path)
    elsewhere = tmp_path / "elsewhere.safetensors"
    elsewhere.write_bytes((snap / SHARD1).read_bytes())
    _relink(snap / SHARD1, elsewhere)
    with pytest.raises(
        CheckpointFormatError, match=r"points outside the checkpoint directory \(a symlink to "
    ):
        load_checkpoint(snap)


def test_repo_blob_linked_outside_the_shared_store_is_refused(tmp_path):
    cache, snap = _snap(tmp_path)
    blob = (snap / SHARD1).resolve()
    payload = tmp_path / "payload"
    payload.write_bytes(blob.read_bytes())
    _relink(blob, payload)  # blobs/<etag> -> somewhere that is not <cache>/blobs/<xx>/<hash>
    with pytest.raises(CheckpointFormatError, match="points outside the checkpoint directory"):
        load_checkpoint(snap)


def test_shared_store_without_its_marker_is_refused(tmp_path):
    cache = tmp_path / "cache"
    snap = add_checkpoint(cache, "acme/x", save_checkpoint(random_state(SHAPES), tmp_path / "b", shards=2),
                          COMMIT_MAIN, xet=True)  # fmt: skip
    assert load_checkpoint(snap).tensors  # accepted as huggingface_hub lays it out
    (cache / "blobs" / ".huggingface-shared-blobs").unlink()
    with pytest.raises(CheckpointFormatError, match="points outside the checkpoint directory"):
        load_checkpoint(snap)


def test_symlinked_directory_in_a_shard_name_is_refused(tmp_path):
    cache, snap = _snap(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / SHARD1).write_bytes((snap / SHARD1).read_bytes())
    local = tmp_path / "local"
    local.mkdir()
    for f in snap.iterdir():
        (local / f.name).write_bytes(f.read_bytes())
    os.symlink(outside, local / "sub")
    idx = json.loads((local / "model.safetensors.index.json").read_text())
    idx["weight_map"] = {k: f"sub/{v}" if v == SHARD1 else v for k, v in idx["weight_map"].items()}
    (local / "model.safetensors.index.json").write_text(json.dumps(idx))
    with pytest.raises(CheckpointFormatError, match=r"'sub/model-00001-of-00002.safetensors' points outside .*"
                                                     r"its directory 'sub' is a symlink to "):  # fmt: skip
        load_checkpoint(local)


@pytest.mark.parametrize(
    ("name", "why"),
    [("/etc/passwd", "an absolute path"), ("../b/" + SHARD1, "it climbs out with '..'"),
     ("sub/../../" + SHARD1, "it climbs out with '..'"), ("", "not a plain relative file name"),
     (".", "not a file name"), ("a\\..\\" + SHARD1, "not a plain relative file name")],
)  # fmt: skip
def test_names_that_leave_the_directory_are_refused(tmp_path, name, why):
    _, snap = _snap(tmp_path)
    local = tmp_path / "local"
    local.mkdir()
    for f in snap.iterdir():
        (local / f.name).write_bytes(f.read_bytes())
    idx = json.loads((local / "model.safetensors.index.json").read_text())
    idx["weight_map"] = {k: name if v == SHARD1 else v for k, v in idx["weight_map"].items()}
    (local / "model.safetensors.index.json").write_text(json.dumps(idx))
    with pytest.raises(CheckpointFormatError) as ei:
        load_checkpoint(local)
    assert f"shard {name!r} points outside the checkpoint directory ({why})" in str(ei.value)


def test_a_symlink_inside_the_directory_is_accepted(tmp_path):
    d = save_checkpoint(random_state(SHAPES), tmp_path / "d", shards=2)
    (d / "real").mkdir()
    (d / SHARD1).rename(d / "real" / SHARD1)
    os.symlink(f"real/{SHARD1}", d / SHARD1)
    assert len(load_checkpoint(d).tensors) == len(SHAPES)


def test_a_dangling_snapshot_link_is_a_missing_shard(tmp_path):
    _, snap = _snap(tmp_path)
    (snap / SHARD1).resolve().unlink()
    with pytest.raises(CheckpointFormatError, match=f"names shard '{SHARD1}', which does not exist"):
        load_checkpoint(snap)


def test_local_path_wins_over_hub_id(tmp_path, monkeypatch):
    local = tmp_path / "acme" / "tiny"
    save_checkpoint(random_state(SHAPES), local)
    monkeypatch.chdir(tmp_path)
    from subnetscope.refs import resolve_path

    assert resolve_path("acme/tiny") == Path("acme/tiny")


def test_a_legacy_bin_repository_fetches_its_bin_shards(tmp_path, monkeypatch):
    """No safetensors in the first fetch: the second asks for the legacy shards, and nothing else."""
    import huggingface_hub

    from scale_helpers import save_bin
    from subnetscope.refs import ALLOW_PATTERNS, LEGACY_PATTERNS

    state = random_state(SHAPES, seed=3)
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

    from subnetscope.refs import ALLOW_PATTERNS

    snap = save_checkpoint(random_state(SHAPES), tmp_path / "snap")
    calls = []
    monkeypatch.setattr(
        huggingface_hub,
        "snapshot_download",
        lambda repo_id, revision=None, allow_patterns=None: calls.append(list(allow_patterns)) or str(snap),
    )
    load_checkpoint("acme/tiny")
    assert calls == [ALLOW_PATTERNS]
