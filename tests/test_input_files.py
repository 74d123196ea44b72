"""Inputs that are not regular files (FIFOs, devices, directories) and JSON nested 100,000 levels deep in an
index, a delta manifest or a config: each is one typed error line naming the file, never a hang or a
RecursionError. FIFO cases run in a subprocess with a timeout, so a regression fails instead of hanging."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from factory import llama_names, perturb, random_state, save_checkpoint
from subnetscope.errors import CheckpointFormatError, DeltaFormatError
from subnetscope.refs import load_checkpoint

SHAPES = llama_names(layers=1, hidden=8, inter=16, vocab=12)
SHARD2 = "model-00002-of-00002.safetensors"
DEEP = "[" * 100_000 + "]" * 100_000


def cli(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "subnetscope", *map(str, args)], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ))  # fmt: skip


def one_error_line(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("subnetscope: error: "), p.stderr
    assert "Traceback" not in p.stderr
    return lines[0].removeprefix("subnetscope: error: ")


@pytest.fixture
def pair(tmp_path):
    base = random_state(SHAPES, seed=0)
    target, _ = perturb(base, 0.3, seed=1)
    return save_checkpoint(base, tmp_path / "base", shards=2), save_checkpoint(
        target, tmp_path / "tgt", shards=2
    )


def _fifo_instead_of(path: Path) -> Path:
    path.unlink()
    os.mkfifo(path)
    return path


def test_fifo_shard_named_by_the_index(pair):
    base, tgt = pair
    fifo = _fifo_instead_of(tgt / SHARD2)
    msg = one_error_line(cli("compare", base, tgt))
    assert msg.startswith(
        f"{fifo}: is a FIFO (named pipe), not a regular file, so it cannot be a weights file;"
    )


def test_fifo_shard_in_a_directory_without_index(pair, tmp_path):
    base, _ = pair
    d = save_checkpoint(random_state(SHAPES), tmp_path / "single")
    fifo = _fifo_instead_of(d / "model.safetensors")
    os.mkfifo(d / "extra.safetensors")
    msg = one_error_line(cli("compare", base, d))
    assert msg.startswith(f"{d / 'extra.safetensors'}: is a FIFO (named pipe), not a regular file")
    assert fifo.exists()


def test_fifo_given_directly(pair, tmp_path):
    base, _ = pair
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    msg = one_error_line(cli("compare", fifo, base))
    assert msg.startswith(
        f"{fifo}: is a FIFO (named pipe), not a regular file, so it cannot be a checkpoint file;"
    )


def test_fifo_index(pair):
    base, tgt = pair
    fifo = _fifo_instead_of(tgt / "model.safetensors.index.json")
    msg = one_error_line(cli("compare", base, tgt))
    assert msg.startswith(
        f"{fifo}: is a FIFO (named pipe), not a regular file, so it cannot be a checkpoint index;"
    )


def test_fifo_legacy_bin(tmp_path, pair):
    base, _ = pair
    d = tmp_path / "legacy"
    d.mkdir()
    os.mkfifo(d / "pytorch_model.bin")
    msg = one_error_line(cli("compare", base, d))
    assert msg.startswith(f"{d / 'pytorch_model.bin'}: is a FIFO (named pipe), not a regular file")


def test_character_device_linked_as_a_shard(tmp_path, pair):
    base, _ = pair
    d = tmp_path / "dev"
    d.mkdir()
    os.symlink("/dev/zero", d / "model.safetensors")
    msg = one_error_line(cli("compare", base, d))
    assert msg.startswith(f"{d / 'model.safetensors'}: is a character device, not a regular file")
    with pytest.raises(CheckpointFormatError, match="is a character device, not a regular file"):
        load_checkpoint("/dev/null")


def test_directory_named_like_a_shard(tmp_path):
    d = save_checkpoint(random_state(SHAPES), tmp_path / "d")
    (d / "more.safetensors").mkdir()
    with pytest.raises(CheckpointFormatError, match=r"more.safetensors: is a directory, not a regular file"):
        load_checkpoint(d)


def test_deep_index(pair):
    base, tgt = pair
    idx = tgt / "model.safetensors.index.json"
    idx.write_text('{"weight_map": ' + DEEP + "}")
    with pytest.raises(CheckpointFormatError) as ei:
        load_checkpoint(tgt)
    assert str(ei.value).startswith(
        f"{idx}: not valid JSON (nested 100001 levels deep, more than the 127 levels allowed)"
    )
    assert "nested 100001 levels deep" in one_error_line(cli("compare", base, tgt))


def test_deep_legacy_index(tmp_path):
    d = tmp_path / "legacy"
    d.mkdir()
    (d / "pytorch_model.bin.index.json").write_text(DEEP)
    with pytest.raises(
        CheckpointFormatError, match=r"pytorch_model.bin.index.json: not valid JSON \(nested 100000"
    ):
        load_checkpoint(d)


def test_deep_config_is_ignored_like_any_unreadable_config(pair):
    base, tgt = pair
    (tgt / "config.json").write_text(DEEP)
    assert load_checkpoint(tgt).config() == {}
    p = cli("compare", base, tgt, "--format", "json")
    assert p.returncode == 0, p.stderr


def test_deep_delta_manifest(pair, tmp_path):
    from subnetscope.delta import export_delta, load_manifest

    base, tgt = pair
    d = tmp_path / "delta"
    export_delta(base, tgt, d)
    (d / "delta.json").write_text('{"format": "subnetscope.delta", "tensors": ' + DEEP + "}")
    with pytest.raises(DeltaFormatError) as ei:
        load_manifest(d)
    assert str(ei.value).startswith(
        f"{d / 'delta.json'}: not readable JSON (nested 100001 levels deep, more than the 127 levels allowed)"
    )
    msg = one_error_line(cli("delta", "apply", base, d, "-o", tmp_path / "out"))
    assert "not readable JSON (nested 100001 levels deep" in msg
    assert not (tmp_path / "out").exists()


def test_fifo_delta_manifest(pair, tmp_path):
    from subnetscope.delta import export_delta

    base, tgt = pair
    d = tmp_path / "delta"
    export_delta(base, tgt, d)
    _fifo_instead_of(d / "delta.json")
    msg = one_error_line(cli("delta", "apply", base, d, "-o", tmp_path / "out"))
    assert msg.startswith(f"{d / 'delta.json'}: is a FIFO (named pipe), not a regular file")


def test_real_manifest_and_index_still_parse(pair, tmp_path):
    """The bounded parser reads what subnetscope and save_pretrained write."""
    from subnetscope.delta import export_delta, load_manifest

    base, tgt = pair
    export_delta(base, tgt, tmp_path / "d")
    m = load_manifest(tmp_path / "d")
    assert len(m.tensors) == len(SHAPES)
    ck = load_checkpoint(tgt)
    assert len(ck.files) == 2 and set(
        json.loads((tgt / "model.safetensors.index.json").read_text())["weight_map"]
    ) == set(ck.tensors)
