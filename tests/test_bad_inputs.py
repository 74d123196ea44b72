"""Every kind of bad input: one clear line naming the file or tensor, exit code 2, no traceback, inputs untouched."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from factory import llama_names, random_state, save_checkpoint
from subnetscope.errors import CheckpointFormatError, HubError, InputNotFoundError, UnsupportedDtypeError
from subnetscope.refs import load_checkpoint


def write_raw(path: Path, header: dict | bytes, data: bytes = b"", length: int | None = None) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(raw) if length is None else length
    path.write_bytes(struct.pack("<Q", n) + raw + data)
    return path


def good_dir(tmp: Path, shards: int = 2) -> Path:
    return save_checkpoint(
        random_state(llama_names(layers=1, hidden=8, inter=16, vocab=12)), tmp / "ok", shards=shards
    )


# (name, builder(tmp) -> path, error type, message fragment)
def _missing(tmp: Path) -> Path:
    return tmp / "does-not-exist"


def _index_missing_shard(tmp: Path) -> Path:
    d = good_dir(tmp)
    (d / "model-00002-of-00002.safetensors").unlink()
    return d


def _index_outside(tmp: Path) -> Path:
    d = good_dir(tmp)
    idx = json.loads((d / "model.safetensors.index.json").read_text())
    (tmp / "evil.safetensors").write_bytes((d / "model-00001-of-00002.safetensors").read_bytes())
    idx["weight_map"] = {
        k: "../evil.safetensors" if v.startswith("model-00001") else v for k, v in idx["weight_map"].items()
    }
    (d / "model.safetensors.index.json").write_text(json.dumps(idx))
    return d


def _index_bad_json(tmp: Path) -> Path:
    d = good_dir(tmp)
    (d / "model.safetensors.index.json").write_text("{not json")
    return d


def _index_names_absent_tensor(tmp: Path) -> Path:
    d = good_dir(tmp)
    idx = json.loads((d / "model.safetensors.index.json").read_text())
    idx["weight_map"]["model.layers.9.ghost.weight"] = "model-00001-of-00002.safetensors"
    (d / "model.safetensors.index.json").write_text(json.dumps(idx))
    return d


def _truncated(tmp: Path) -> Path:
    d = good_dir(tmp, shards=1)
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    return f


def _too_short(tmp: Path) -> Path:
    (tmp / "x.safetensors").write_bytes(b"\x01\x02")
    return tmp / "x.safetensors"


def _header_length(tmp: Path) -> Path:
    return write_raw(
        tmp / "x.safetensors",
        {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}},
        b"\0" * 4,
        length=10**12,
    )


def _header_json(tmp: Path) -> Path:
    return write_raw(tmp / "x.safetensors", b'{"w": {"dtype": "F32", "shape": [1], ', b"\0" * 8)


def _offsets_out_of_range(tmp: Path) -> Path:
    return write_raw(
        tmp / "x.safetensors", {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8
    )


def _overlap(tmp: Path) -> Path:
    h = {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
    }
    return write_raw(tmp / "x.safetensors", h, b"\0" * 12)


def _size_mismatch(tmp: Path) -> Path:
    return write_raw(
        tmp / "x.safetensors", {"w": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8
    )


def _unknown_dtype(tmp: Path) -> Path:
    return write_raw(
        tmp / "x.safetensors", {"w": {"dtype": "F4", "shape": [2], "data_offsets": [0, 1]}}, b"\0"
    )


def _bad_shape(tmp: Path) -> Path:
    return write_raw(
        tmp / "x.safetensors", {"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4
    )


def _empty_dir(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


def _not_safetensors(tmp: Path) -> Path:
    (tmp / "weights.npz").write_bytes(b"PK")
    return tmp / "weights.npz"


CASES = [
    ("missing path", _missing, InputNotFoundError, "does-not-exist: no such file or directory"),
    (
        "index names a missing shard",
        _index_missing_shard,
        CheckpointFormatError,
        "names shard 'model-00002-of-00002.safetensors', which does not exist",
    ),
    (
        "index points outside",
        _index_outside,
        CheckpointFormatError,
        "points outside the checkpoint directory",
    ),
    (
        "index not JSON",
        _index_bad_json,
        CheckpointFormatError,
        "model.safetensors.index.json: not valid JSON",
    ),
    (
        "index names absent tensor",
        _index_names_absent_tensor,
        CheckpointFormatError,
        "names tensor 'model.layers.9.ghost.weight'",
    ),
    ("truncated shard", _truncated, CheckpointFormatError, "file truncated or header corrupt"),
    ("file too short", _too_short, CheckpointFormatError, "too short to hold a safetensors header"),
    (
        "corrupt header length",
        _header_length,
        CheckpointFormatError,
        "header length 1000000000000 is impossible",
    ),
    ("corrupt header JSON", _header_json, CheckpointFormatError, "header is not valid JSON"),
    (
        "offsets out of range",
        _offsets_out_of_range,
        CheckpointFormatError,
        "data_offsets [0, 16] lie outside the 8 data bytes",
    ),
    ("overlapping tensors", _overlap, CheckpointFormatError, "tensors 'a' and 'b' overlap"),
    (
        "bytes do not match shape",
        _size_mismatch,
        CheckpointFormatError,
        "tensor 'w' has 8 bytes but shape (3,) of BF16 needs 6",
    ),
    ("unknown dtype", _unknown_dtype, UnsupportedDtypeError, "unknown dtype 'F4'"),
    ("invalid shape", _bad_shape, CheckpointFormatError, "tensor 'w' has an invalid shape [-1]"),
    ("directory without weights", _empty_dir, InputNotFoundError, "no .safetensors files in this directory"),
    ("not a safetensors file", _not_safetensors, CheckpointFormatError, "not a .safetensors file"),
]


@pytest.mark.parametrize(("label", "build", "etype", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_library_raises_typed_error(tmp_path, label, build, etype, fragment):
    path = build(tmp_path)
    with pytest.raises(etype) as ei:
        load_checkpoint(path)
    assert fragment in str(ei.value)
    assert ei.value.hint  # every error says how to fix it


def _run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "subnetscope", *args], capture_output=True, text=True, env=e)


@pytest.mark.parametrize(("label", "build", "etype", "fragment"), CASES[::3], ids=[c[0] for c in CASES[::3]])
def test_cli_one_line_exit_2(tmp_path, label, build, etype, fragment):
    path = build(tmp_path)
    ok = good_dir(tmp_path / "other")
    p = _run_cli("compare", str(path), str(ok))
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("subnetscope: error: ") and fragment in lines[0]
    assert "Traceback" not in p.stderr and p.stdout == ""


def test_debug_variable_shows_traceback(tmp_path):
    p = _run_cli("compare", str(tmp_path / "nope"), str(tmp_path / "nope2"), env={"SUBNETSCOPE_DEBUG": "1"})
    assert p.returncode != 0 and "Traceback" in p.stderr and "InputNotFoundError" in p.stderr


def test_unknown_hub_id_offline(tmp_path):
    p = _run_cli("compare", "no-such-org/no-such-model", "no-such-org/other@v1",
                 env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache")})  # fmt: skip
    assert p.returncode == 2
    assert (
        "no-such-org/no-such-model: not a local path, and not in the Hugging Face cache while HF_HUB_OFFLINE is set"
        in p.stderr
    )


def test_inputs_are_never_written(llama_pair):
    bdir, tdir, *_ = llama_pair

    def snapshot(d: Path) -> dict:
        return {
            f.name: (f.stat().st_mtime_ns, hashlib.sha256(f.read_bytes()).hexdigest())
            for f in sorted(d.iterdir())
        }

    before = (snapshot(bdir), snapshot(tdir))
    p = _run_cli("compare", str(bdir), str(tdir), "--format", "json")
    assert p.returncode == 0
    assert (snapshot(bdir), snapshot(tdir)) == before


def test_hub_error_mapping_is_typed():
    from subnetscope.refs import parse_hub_id, resolve_path

    assert parse_hub_id("org/name@rev-1") == ("org/name", "rev-1")
    assert parse_hub_id("org/name") == ("org/name", None)
    assert parse_hub_id("./local/dir") is None
    with pytest.raises(InputNotFoundError, match="no such file or directory"):
        resolve_path("just-a-name")
    with pytest.raises(HubError, match="HF_HUB_OFFLINE"):
        resolve_path("org-that/does-not-exist-anywhere")


def test_float_tensor_helpers_roundtrip():
    # guards the factory used everywhere: bits() is the raw storage
    t = torch.tensor([1.0, -2.0], dtype=torch.bfloat16)
    from factory import bits

    assert bits(t).tolist() == [0x3F80, 0xC000]
