"""subnetscope's header reader against ``safetensors.safe_open`` itself, on every case of
:mod:`malformed_safetensors`: they must agree on accept / refuse (the deliberate differences are listed
there, each with its reason, and checked here too)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

from factory import llama_names, random_state, save_checkpoint
from malformed_safetensors import BAD, GOOD, STRICTER, UNSUPPORTED, file_bytes, nested, one
from subnetscope.errors import CheckpointFormatError, UnsupportedDtypeError
from subnetscope.io import strict_json
from subnetscope.io.safetensors_header import read_header
from subnetscope.refs import load_checkpoint


def _write(tmp: Path, data: bytes) -> Path:
    p = tmp / "case.safetensors"
    p.write_bytes(data)
    return p


def _safetensors_accepts(path: Path) -> bool:
    try:
        with safe_open(str(path), framework="np") as f:
            list(f.keys())
    except Exception:
        return False
    return True


def test_the_corpus_is_large_and_its_labels_unique():
    labels = [c[0] for c in GOOD + BAD + STRICTER + UNSUPPORTED]
    assert len(BAD) >= 50 and len(GOOD) >= 25
    assert len(labels) == len(set(labels))


@pytest.mark.parametrize(("label", "data"), GOOD, ids=[c[0] for c in GOOD])
def test_both_accept(tmp_path, label, data):
    path = _write(tmp_path, data)
    assert _safetensors_accepts(path), "the case is meant to be valid"
    h = read_header(path)
    with safe_open(str(path), framework="np") as f:
        assert sorted(h.tensors) == sorted(f.keys())
        assert h.metadata == (f.metadata() or {})
        for name in f.keys():  # noqa: SIM118 (a safe_open handle, not a dict)
            sl = f.get_slice(name)
            assert list(h.tensors[name].shape) == sl.get_shape()
            assert h.tensors[name].dtype.code == sl.get_dtype()


@pytest.mark.parametrize(("label", "data"), BAD, ids=[c[0] for c in BAD])
def test_both_refuse(tmp_path, label, data):
    path = _write(tmp_path, data)
    assert not _safetensors_accepts(path), "the case is meant to be refused by safetensors"
    with pytest.raises(CheckpointFormatError) as ei:
        read_header(path)
    assert not isinstance(ei.value, UnsupportedDtypeError)
    assert str(ei.value).startswith(f"{path}: ") and ei.value.hint
    assert "\n" not in str(ei.value)


@pytest.mark.parametrize(("label", "data"), STRICTER, ids=[c[0] for c in STRICTER])
def test_deliberately_stricter(tmp_path, label, data):
    path = _write(tmp_path, data)
    assert _safetensors_accepts(path)  # if safetensors starts refusing these, move them to BAD
    with pytest.raises(CheckpointFormatError, match=r"the header JSON names 'w' twice"):
        read_header(path)


@pytest.mark.parametrize(("label", "data"), UNSUPPORTED, ids=[c[0] for c in UNSUPPORTED])
def test_valid_but_unreadable_dtypes(tmp_path, label, data):
    path = _write(tmp_path, data)
    assert _safetensors_accepts(path)
    with pytest.raises(UnsupportedDtypeError, match=rf"unknown dtype '{label}'"):
        read_header(path)


def test_named_refusals(tmp_path):
    """The messages of the refusals the issue names (and that were accepted or crashed before)."""
    cases = {
        "bool": (
            one('"dtype": "F32", "shape": [true, 4], "data_offsets": [0, 16]', b"\0" * 16),
            "tensor 'w' has an invalid shape [True, 4]",
        ),
        "gap": (
            file_bytes(
                json.dumps(
                    {
                        "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                        "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]},
                    }
                ),
                b"\0" * 12,
            ),
            "tensor 'b' data_offsets [8, 12] leave a gap after 'a', which ends at 4",
        ),
        "trailing": (
            one('"dtype": "F32", "shape": [1], "data_offsets": [0, 4]', b"\0" * 7),
            "the tensors cover 4 of the 7 data bytes: 3 trailing byte(s)",
        ),
        "dup": (
            file_bytes(
                '{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
                '"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}',
                b"\0" * 8,
            ),
            "the header JSON names 'w' twice",
        ),
        "meta": (
            one('"dtype": "F32", "shape": [1], "data_offsets": [0, 4]', extra='"__metadata__": {"n": 3}, '),
            "__metadata__ value 'n' is int, not a string",
        ),
        "deep": (
            one('"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "x": ' + nested(100_000)),
            "header is not valid JSON (nested 100002 levels deep, more than the 127 levels allowed)",
        ),
    }
    for key, (data, fragment) in cases.items():
        path = tmp_path / f"{key}.safetensors"
        path.write_bytes(data)
        with pytest.raises(CheckpointFormatError) as ei:
            load_checkpoint(path)
        assert str(ei.value).startswith(f"{path}: {fragment}"), str(ei.value)


def test_deep_header_is_one_cli_line(tmp_path):
    ok = save_checkpoint(random_state(llama_names(layers=1, hidden=8, inter=16, vocab=12)), tmp_path / "ok")
    deep = tmp_path / "deep.safetensors"
    deep.write_bytes(file_bytes(nested(100_000)))
    p = subprocess.run([sys.executable, "-m", "subnetscope", "compare", str(deep), str(ok)],
                       capture_output=True, text=True, env=dict(os.environ))  # fmt: skip
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.splitlines() == [
        f"subnetscope: error: {deep}: header is not valid JSON (nested 100000 levels deep, more than the 127 "
        "levels allowed); the file is damaged or incomplete: re-download or re-save it"
    ]


def test_nesting_depth_ignores_brackets_in_strings_and_is_linear():
    assert strict_json.nesting_depth(b'{"a": "[[[[{{{{", "b": [[1]]}') == 3
    assert strict_json.nesting_depth(b'["\\"[[[", ["\\\\"], [[]]]') == 3
    assert strict_json.nesting_depth(b'"unterminated [[[[') == 0
    assert strict_json.nesting_depth(b"42") == 0
    assert strict_json.nesting_depth(b"[" * 3_000_000) == 3_000_000  # several numpy chunks
    # an unterminated string followed by many quotes: the scan stays linear
    assert strict_json.nesting_depth(b'["' + b'\\"' * 1_000_000 + b"[") == 1
    with pytest.raises(strict_json.StrictJSONError, match="nested 128 levels deep"):
        strict_json.loads("[" * 128 + "]" * 128)
    v, depth = strict_json.loads("[" * 127 + "]" * 127), 1
    while v:
        v, depth = v[0], depth + 1
    assert depth == 127
