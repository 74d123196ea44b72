"""A mask's header is covered by a digest and every field is checked (format version 2).

Before, only the bits carried digests: editing ``tolerance`` from ``1e-05`` to ``1e-01`` or ``semantics``
from ``exact`` to ``EXACT`` by hand gave a mask that was accepted and displayed with the edited values.
Version 1 files (no header digest) are still read, their fields checked one by one.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from factory import bits, llama_names, perturb, random_state, save_checkpoint
from subnetscope.comparison import compare
from subnetscope.errors import MaskFormatError
from subnetscope.maskfile import FORMAT_VERSION, MaskFile, header_digest


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("maskhdr")
    shapes = llama_names(layers=1, hidden=16, inter=32, vocab=24)
    base = random_state(shapes, seed=3)
    target, changed = perturb(base, 0.3, seed=4)
    bdir = save_checkpoint(base, root / "base", shards=2)
    tdir = save_checkpoint(target, root / "target")
    mask = root / "run.mask"
    compare(bdir, tdir, [1e-5], mask_out=mask)
    return {"mask": mask, "base": base, "target": target, "changed": changed, "bdir": bdir}


def split(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def join(path: Path, header: dict, data: bytes) -> Path:
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def edited(src: Path, dst: Path, edit) -> Path:
    header, data = split(src)
    edit(header)
    return join(dst, header, data)


def _set(key, value):
    def f(h):
        h["__metadata__"][key] = value

    return f


def _drop(key):
    def f(h):
        del h["__metadata__"][key]

    return f


def _json_field(key, change):
    def f(h):
        obj = json.loads(h["__metadata__"][key])
        change(obj)
        h["__metadata__"][key] = json.dumps(obj)

    return f


def _first(obj):
    return next(iter(obj))


def _swap_digests(d):
    a, b = list(d)[:2]
    d[a], d[b] = d[b], d[a]


def _extra_tensor(h):
    h["ghost"] = {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}


def _retype_tensor(h):
    name = next(k for k in h if k != "__metadata__")
    h[name]["dtype"] = "I8"


DIGEST = "the mask header does not match its recorded sha256"
# (label, edit of the header dict, message fragment)
EDITS = [
    ("tolerance 1e-05 -> 1e-01", _set("tolerance", "1e-01"), DIGEST),
    ("tolerance 1e-05 -> 0.1", _set("tolerance", "0.1"), DIGEST),
    ("semantics exact -> reference", _set("semantics", "reference"), DIGEST),
    ("semantics exact -> EXACT", _set("semantics", "EXACT"), "semantics: 'EXACT' is neither 'exact' nor"),
    ("semantics missing", _drop("semantics"), "mask metadata is damaged (semantics: missing)"),
    ("tolerance -1", _set("tolerance", "-1"), "tolerance: '-1' is not a finite non-negative number"),
    ("tolerance nan", _set("tolerance", "nan"), "tolerance: 'nan' is not a finite non-negative number"),
    ("tolerance inf", _set("tolerance", "inf"), "tolerance: 'inf' is not a finite non-negative number"),
    ("tolerance abc", _set("tolerance", "abc"), "tolerance: 'abc' is not a number"),
    ("tolerance missing", _drop("tolerance"), "(tolerance: missing)"),
    ("bitorder big", _set("bitorder", "big"), "bitorder: 'big' is not 'little'"),
    ("tool_version missing", _drop("tool_version"), "(tool_version: missing)"),
    ("base_ref edited", _set("base_ref", "other/model"), DIGEST),
    ("target_ref added", _set("note", "hello"), DIGEST),
    ("header digest removed", _drop("header_sha256"), DIGEST),
    ("header digest zeroed", _set("header_sha256", "0" * 64), DIGEST),
    ("format version 3", _set("format_version", "3"), "mask format version '3' is not supported"),
    ("version 1 with a header digest", _set("format_version", "1"), "format_version: '1' but the header has"),
    ("shapes not JSON", _set("shapes", "{not json"), "(shapes: not valid JSON)"),
    ("shapes a list", _set("shapes", "[]"), "(shapes: not a JSON object)"),
    ("shape with a bool", _json_field("shapes", lambda o: o.__setitem__(_first(o), [True, 4])),
     "shapes: tensor 'lm_head.weight' has an invalid shape [true, 4]"),
    ("shape negative", _json_field("shapes", lambda o: o.__setitem__(_first(o), [-24, 16])),
     "has an invalid shape [-24, 16]"),
    ("shape edited", _json_field("shapes", lambda o: o.__setitem__(_first(o), [16, 24])), DIGEST),
    ("digest not hex", _json_field("sha256", lambda o: o.__setitem__(_first(o), "z" * 64)),
     "sha256: the digest of 'lm_head.weight' is not 64 lowercase hex digits"),
    ("digest of a tensor missing", _json_field("sha256", lambda o: o.pop(_first(o))),
     "sha256: does not list exactly the tensors of 'shapes'"),
    ("digests swapped", _json_field("sha256", _swap_digests), DIGEST),
    ("fingerprint edited", _json_field("base_fingerprint", lambda o: o.__setitem__("content", "a" * 64)), DIGEST),
    ("fingerprint key missing", _json_field("base_fingerprint", lambda o: o.pop("numel")),
     "base_fingerprint: needs exactly structure, content, tensors, numel"),
    ("fingerprint numel a string", _json_field("base_fingerprint", lambda o: o.__setitem__("numel", "9")),
     "base_fingerprint: tensors and numel must be non-negative integers"),
    ("fingerprint not a digest", _json_field("base_fingerprint", lambda o: o.__setitem__("structure", "x")),
     "base_fingerprint: structure and content must be sha256 digests"),
    ("dtypes names a stranger", _json_field("dtypes", lambda o: o.__setitem__("ghost", "BF16")),
     "dtypes: entry 'ghost' is not a tensor of the mask"),
    ("dtypes code a number", _json_field("dtypes", lambda o: o.__setitem__(_first(o), 16)),
     "dtypes: entry 'lm_head.weight' is not a tensor of the mask with a dtype code"),
    ("extra tensor in the header", _extra_tensor, "tensor 'ghost' is not listed in the mask's shapes"),
    ("tensor dtype U8 -> I8", _retype_tensor, "is missing or has the wrong size for shape"),
]  # fmt: skip


def test_written_masks_are_version_2_with_a_valid_header_digest(made):
    header, _ = split(made["mask"])
    meta = header["__metadata__"]
    assert meta["format_version"] == FORMAT_VERSION == "2"
    entries = {
        n: (e["dtype"], e["shape"], *e["data_offsets"]) for n, e in header.items() if n != "__metadata__"
    }
    assert meta["header_sha256"] == header_digest(meta, entries)
    m = MaskFile(made["mask"])
    assert m.tolerance == 1e-5 and m.semantics == "exact" and m.format_version == "2"
    for name, t in made["base"].items():
        want = (bits(t) != bits(made["target"][name])).reshape(t.shape)
        assert np.array_equal(m[name], want), name
        assert m.count(name) == made["changed"][name]


@pytest.mark.parametrize(("label", "edit", "fragment"), EDITS, ids=[e[0] for e in EDITS])
def test_hand_edited_header_is_refused(made, tmp_path, label, edit, fragment):
    bad = edited(made["mask"], tmp_path / "edited.mask", edit)
    with pytest.raises(MaskFormatError) as ei:
        MaskFile(bad)
    msg = str(ei.value)
    assert fragment in msg, msg
    assert msg.startswith(f"{bad}: ") and "regenerate" in msg


def test_refused_on_the_command_line_in_one_line(made, tmp_path, capsys):
    from subnetscope.cli import main

    bad = edited(made["mask"], tmp_path / "tol.mask", _set("tolerance", "1e-01"))
    with pytest.raises(SystemExit) as e:
        main(["overlap", str(made["mask"]), str(bad)])
    out, err = capsys.readouterr()
    assert e.value.code == 2 and out == ""
    assert err == f"subnetscope: error: {bad}: {DIGEST} (edited or damaged); regenerate the mask\n"


def _as_version_1(h):
    """The header version 1 wrote: the same fields, no header digest."""
    meta = h["__metadata__"]
    meta["format_version"] = "1"
    del meta["header_sha256"]


def test_version_1_masks_are_still_read(made, tmp_path):
    v1 = edited(made["mask"], tmp_path / "v1.mask", _as_version_1)
    m = MaskFile(v1)
    assert m.format_version == "1" and m.tolerance == 1e-5 and m.semantics == "exact"
    assert {n: m.count(n) for n in m} == made["changed"]
    assert m.fingerprint == MaskFile(made["mask"]).fingerprint


@pytest.mark.parametrize(
    ("label", "edit", "fragment"),
    [
        ("semantics EXACT", _set("semantics", "EXACT"), "semantics: 'EXACT' is neither"),
        ("tolerance -1", _set("tolerance", "-1"), "tolerance: '-1' is not a finite non-negative"),
        ("bitorder big", _set("bitorder", "big"), "bitorder: 'big' is not 'little'"),
        ("shape with a bool", _json_field("shapes", lambda o: o.__setitem__(_first(o), [True, 4])),
         "has an invalid shape [true, 4]"),
    ],
    ids=lambda x: x if isinstance(x, str) else "",
)  # fmt: skip
def test_version_1_fields_are_checked(made, tmp_path, label, edit, fragment):
    def both(h):
        _as_version_1(h)
        edit(h)

    bad = edited(made["mask"], tmp_path / "v1bad.mask", both)
    with pytest.raises(MaskFormatError, match="mask metadata is damaged") as ei:
        MaskFile(bad)
    assert fragment in str(ei.value)
