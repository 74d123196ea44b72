"""A damaged delta, a wrong base and bad arguments give clear, typed errors and write nothing."""

from __future__ import annotations

import json

import pytest
import torch

from delta_helpers import edit_manifest, random_weights, small_shapes, tensor_entry, write_pair
from factory import perturb, random_state, save_checkpoint
from subnetscope.delta import (
    DeltaBaseMismatchError,
    DeltaVerifyError,
    apply_delta,
    export_delta,
    load_manifest,
)
from subnetscope.delta.format import MANIFEST_NAME
from subnetscope.errors import DeltaFormatError, MismatchError, UsageError

Q0 = "model.layers.0.self_attn.q_proj.weight"


@pytest.fixture
def delta(tmp_path):
    """(base_dir, delta_dir, out_dir) for a 20 % bf16 finetune."""
    base = random_state(small_shapes())
    target, _ = perturb(base, 0.2)  # realistic value changes: the value blobs compress
    bdir, tdir = write_pair(tmp_path, base, target)
    export_delta(bdir, tdir, tmp_path / "delta", chunk_elements=4096)
    return bdir, tmp_path / "delta", tmp_path / "out"


def _refused(base, d, out, exc, *words, verify=False):
    with pytest.raises(exc) as info:
        apply_delta(base, d, out, verify=verify)
    for w in words:
        assert w in str(info.value), str(info.value)
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".tmp-")]
    return info.value


def test_wrong_base_weights(delta, tmp_path):
    _bdir, d, out = delta
    other = save_checkpoint(
        random_weights(small_shapes(), torch.bfloat16, seed=5), tmp_path / "other", shards=2
    )
    e = _refused(other, d, out, DeltaBaseMismatchError, "a base with other weights", "fingerprint")
    assert isinstance(e, MismatchError) and e.hint and "base.ref" in e.hint


def test_wrong_base_model(delta, tmp_path):
    _bdir, d, out = delta
    shapes = small_shapes()
    shapes[Q0] = (16, 32)
    other = save_checkpoint(random_weights(shapes, torch.bfloat16), tmp_path / "other")
    _refused(
        other,
        d,
        out,
        DeltaBaseMismatchError,
        "another model",
        f"{Q0!r} is [16, 32] BF16, expected [32, 32] BF16",
    )


def test_truncated_data_file(delta):
    bdir, d, out = delta
    data = d / "data-00001.bin"
    data.write_bytes(data.read_bytes()[:-10])
    _refused(bdir, d, out, DeltaFormatError, "data-00001.bin: is", "truncated")


def test_altered_data_file(delta):
    bdir, d, out = delta
    data = d / "data-00001.bin"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    _refused(bdir, d, out, DeltaFormatError, "data-00001.bin: its sha256 does not match")


def test_missing_data_file(delta):
    bdir, d, out = delta
    (d / "data-00001.bin").unlink()
    _refused(bdir, d, out, DeltaFormatError, "file data-00001.bin is missing")


def test_edited_manifest(delta):
    bdir, d, out = delta
    edit_manifest(d, lambda m: tensor_entry(m, Q0).update(changed=1), reseal=False)
    _refused(bdir, d, out, DeltaFormatError, "does not match its own manifest_sha256")


def test_wrong_tensor_sha_caught_by_verify(delta):
    bdir, d, out = delta
    edit_manifest(d, lambda m: tensor_entry(m, Q0).update(sha256="0" * 64))
    _refused(bdir, d, out, DeltaVerifyError, f"rebuilt tensor {Q0!r} does not match the sha256", verify=True)
    apply_delta(bdir, d, out)  # without --verify the sha is not checked
    assert out.is_dir()


def test_damaged_blob_mid_run_leaves_nothing(delta):
    """A blob damaged consistently with the file digest (so only decoding notices) still writes nothing."""
    bdir, d, out = delta
    m = load_manifest(d)
    rec = next(r for t in m.tensors for r in t.chunks if r.val_codec == "zstd")
    data = d / "data-00001.bin"
    raw = bytearray(data.read_bytes())
    raw[rec.offset + rec.pos_bytes : rec.offset + rec.pos_bytes + rec.val_bytes] = b"\x00" * rec.val_bytes
    data.write_bytes(bytes(raw))
    import hashlib

    digest = hashlib.sha256(bytes(raw)).hexdigest()
    edit_manifest(d, lambda o: o["files"][0].update(sha256=digest))
    _refused(bdir, d, out, DeltaFormatError, "zstd frame is damaged")


def test_record_beyond_file(delta):
    bdir, d, out = delta

    def edit(o):
        tensor_entry(o, Q0)["chunks"][0][8] = 10**9

    edit_manifest(d, edit)
    _refused(
        bdir, d, out, DeltaFormatError, f"tensor {Q0!r} chunk record 0 lies beyond the end of data-00001.bin"
    )


def test_manifest_damage_kinds(delta):
    bdir, d, out = delta
    text = (d / MANIFEST_NAME).read_text()
    (d / MANIFEST_NAME).write_text(text[:100])
    _refused(bdir, d, out, DeltaFormatError, "not readable JSON")
    (d / MANIFEST_NAME).write_text(text)
    edit_manifest(d, lambda o: o.update(format_version="9"))
    _refused(bdir, d, out, DeltaFormatError, "delta format version '9' is not supported")
    edit_manifest(d, lambda o: o.update(format="something.else"))
    _refused(bdir, d, out, DeltaFormatError, "not a subnetscope delta manifest")
    (d / MANIFEST_NAME).unlink()
    _refused(bdir, d, out, DeltaFormatError, "no delta.json in this directory")


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (
            lambda o: tensor_entry(o, Q0).update(changed=tensor_entry(o, Q0)["changed"] + 1),
            f"tensor {Q0!r} says",
        ),
        (lambda o: tensor_entry(o, Q0).update(encoding="unchanged"), "is 'unchanged' but has chunk records"),
        (lambda o: tensor_entry(o, Q0).update(encoding="dense"), "is 'dense' but its chunks do not cover it"),
        (lambda o: tensor_entry(o, Q0).update(dtype="F9"), "dtype is 'F9', not a valid value"),
        (lambda o: tensor_entry(o, Q0)["chunks"][0].__setitem__(2, "rle"), "positions is 'rle'"),
        (lambda o: tensor_entry(o, Q0)["chunks"][0].__setitem__(0, 7), "index 7 is out of order"),
        (lambda o: o["files"][0].update(name="../escape.bin"), "is not a plain file name"),
        (lambda o: o["tensors"].append(o["tensors"][0]), "a tensor is listed twice"),
    ],
    ids=["changed", "unchanged", "dense", "dtype", "positions", "index", "path", "twice"],
)
def test_inconsistent_records(delta, edit, words):
    bdir, d, out = delta
    edit_manifest(d, edit)
    _refused(bdir, d, out, DeltaFormatError, words)


def test_output_exists_or_is_an_input(delta, tmp_path):
    bdir, d, out = delta
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(UsageError, match="already exists"):
        apply_delta(bdir, d, out)
    assert (out / "keep.txt").read_text() == "x"
    with pytest.raises(UsageError, match=r"the output directory is an input \(BASE directory\)"):
        apply_delta(bdir, d, bdir, overwrite=True)
    with pytest.raises(UsageError, match=r"the delta directory is an input \(BASE directory\)"):
        export_delta(bdir, bdir, bdir, overwrite=True)
    assert json.loads((bdir / "config.json").read_text())


def test_export_bad_arguments(delta, tmp_path):
    bdir, _d, _out = delta
    with pytest.raises(UsageError, match="chunk_elements=12"):
        export_delta(bdir, bdir, tmp_path / "x", chunk_elements=12)
    assert not (tmp_path / "x").exists()


def test_wrong_base_that_differs_only_where_the_delta_replaces(tmp_path):
    """The base's structure is checked whole, even for tensors the rebuild does not read."""
    base = random_state(small_shapes())
    target, _ = perturb(base, 0.2)
    target["model.embed_tokens.weight"] = target["model.embed_tokens.weight"][:40].clone()
    bdir, tdir = write_pair(tmp_path, base, target)
    export_delta(bdir, tdir, tmp_path / "d")
    _refused(
        tdir, tmp_path / "d", tmp_path / "out", DeltaBaseMismatchError, "was made against another model",
        "the delta's base has 21 tensors and 22,688 elements, this one 21 and 21,408",
    )  # fmt: skip


# -- side files never take a weight's place (issue 14, item 4) ----------------------------------------------

WEIGHT_NAMES = [
    "model.safetensors",
    "model-00001-of-00002.safetensors",
    "model.safetensors.index.json",
    "adapter.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model-00001-of-00002.bin",
    "pytorch_model.bin.index.json",
    "MODEL.SAFETENSORS",
    ".subnetscope-apply.json",
]


@pytest.mark.parametrize("name", [*WEIGHT_NAMES, MANIFEST_NAME])
def test_a_side_file_named_like_a_weight_or_index_file_is_refused(delta, tmp_path, name):
    """A delta whose side files include model.safetensors (here: the base's weights, so that a copy after
    the rebuild would leave the base under the target's name) is refused by that name, writing nothing."""
    import hashlib

    bdir, d, out = delta
    evil = tmp_path / "evil.safetensors"
    save_checkpoint(random_state(small_shapes()), tmp_path / "evil")
    evil.write_bytes((tmp_path / "evil" / "model.safetensors").read_bytes())
    if name != MANIFEST_NAME:
        (d / name).write_bytes(evil.read_bytes())
    entry = {
        "name": name,
        "bytes": evil.stat().st_size,
        "sha256": hashlib.sha256(evil.read_bytes()).hexdigest(),
    }
    edit_manifest(d, lambda m: m["side_files"].append(entry))
    words = f"side file {name!r} is not a config or tokenizer file: a weight, index or manifest name"
    _refused(bdir, d, out, DeltaFormatError, words, verify=True)
    with pytest.raises(DeltaFormatError, match="would replace what the rebuild writes"):
        load_manifest(d)


def test_verify_checks_what_is_finally_on_disk(delta, monkeypatch):
    """Anything that changes the directory after the tensors are rebuilt (here: a side-file copy that lands
    on the weights) is caught by --verify, which reads the finished directory back."""
    import subnetscope.delta.apply as apply_mod

    bdir, d, out = delta
    real_copy = apply_mod.copy_side_files

    def copy_and_clobber(files, dest):
        got = real_copy(files, dest)
        weights = dest / "model.safetensors"
        raw = bytearray(weights.read_bytes())
        raw[-1] ^= 0x01  # one bit of the last tensor
        weights.write_bytes(bytes(raw))
        return got

    monkeypatch.setattr(apply_mod, "copy_side_files", copy_and_clobber)
    e = _refused(bdir, d, out, DeltaVerifyError, "does not match the sha256 in the manifest; nothing was written",
                 verify=True)  # fmt: skip
    assert "rebuilt tensor" in str(e)
    monkeypatch.undo()
    res = apply_delta(bdir, d, out, verify=True)
    assert res.verified and (out / "model.safetensors").is_file()
