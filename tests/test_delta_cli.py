"""``subnetscope delta export`` / ``delta apply`` through the real entry point."""

from __future__ import annotations

import json

import pytest

from delta_helpers import assert_same_bits, load_dir
from factory import random_state, save_checkpoint
from subnetscope.cli import main


def _run(capsys, *args):
    with pytest.raises(SystemExit) as info:
        main(list(args))
        raise SystemExit(0)
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


def test_export_and_apply(capsys, tmp_path, llama_pair):
    bdir, tdir, _base, target, changed = llama_pair
    code, out, _ = _run(capsys, "delta", "export", str(bdir), str(tdir), "-o", str(tmp_path / "d"))
    assert code == 0
    assert (
        f"changed    {sum(changed.values()):,} of" in out
        and "x TARGET" in out
        and "23 sparse, 7 unchanged" in out
    )
    code, out, _ = _run(
        capsys, "delta", "apply", str(bdir), str(tmp_path / "d"), "-o", str(tmp_path / "out"), "--verify",
        "--max-shard-size", "20KB",
    )  # fmt: skip
    assert code == 0
    assert "every tensor matches its sha256" in out
    assert "in 5 shards model-00001-of-00005.safetensors .. model-00005-of-00005.safetensors + index" in out
    assert_same_bits(load_dir(tmp_path / "out"), target)


def test_json_format(capsys, tmp_path, llama_pair):
    bdir, tdir, *_ = llama_pair
    code, out, _ = _run(
        capsys, "delta", "export", str(bdir), str(tdir), "-o", str(tmp_path / "d"), "--format", "json"
    )
    j = json.loads(out)
    assert code == 0 and j["report"] == "subnetscope.delta_export" and j["schema_version"] == "1.0"
    assert j["delta_bytes"] < j["target_bytes"] and j["encodings"] == {"sparse": 23, "unchanged": 7}
    code, out, _ = _run(
        capsys,
        "delta",
        "apply",
        str(bdir),
        str(tmp_path / "d"),
        "-o",
        str(tmp_path / "o"),
        "--format",
        "json",
    )
    j = json.loads(out)
    assert code == 0 and j["report"] == "subnetscope.delta_apply" and j["files"] == ["model.safetensors"]


def test_wrong_base_is_one_line_exit_2(capsys, tmp_path, llama_pair):
    bdir, tdir, *_ = llama_pair
    _run(capsys, "delta", "export", str(bdir), str(tdir), "-o", str(tmp_path / "d"))
    other = save_checkpoint(random_state(dict.fromkeys(["w"], (4, 4))), tmp_path / "other")
    code, out, err = _run(
        capsys, "delta", "apply", str(other), str(tmp_path / "d"), "-o", str(tmp_path / "o")
    )
    assert code == 2 and out == ""
    assert err.startswith("subnetscope: error: ") and "was made against another model" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_bad_options(capsys, tmp_path, llama_pair):
    bdir, tdir, *_ = llama_pair
    code, _, err = _run(
        capsys, "delta", "export", str(bdir), str(tdir), "-o", str(tmp_path / "d"), "--chunk-elements", "12"
    )
    assert code == 2 and "multiple of 8" in err
    code, _, err = _run(
        capsys,
        "delta",
        "apply",
        str(bdir),
        str(tmp_path / "d"),
        "-o",
        str(tmp_path / "o"),
        "--max-shard-size",
        "lots",
    )
    assert code == 2 and "'lots' is not a size" in err
    code, out, _ = _run(capsys, "delta", "--help")
    assert code == 0 and "export" in out and "apply" in out
