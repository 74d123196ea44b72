"""Chain safety: every wrong, replayed, missing, truncated or damaged patch is refused, receiver untouched."""

from __future__ import annotations

import struct

import pytest
import torch

from subnetscope import sync
from subnetscope.errors import SubnetscopeError, SyncError
from sync_helpers import clone_state, same_bits


def _model(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "a.weight": torch.randn(64, 32, generator=g).to(torch.bfloat16),
        "b.weight": torch.randn(128, generator=g).to(torch.bfloat16),
        "norm": torch.ones(32),
    }


def _step(state: dict[str, torch.Tensor], seed: int) -> None:
    g = torch.Generator().manual_seed(100 + seed)
    with torch.no_grad():
        for v in state.values():
            m = torch.rand(v.shape, generator=g) < 0.1
            v[m] = (v[m].float() * 1.05 + 0.01).to(v.dtype)


@pytest.fixture
def chain():
    """(trainer state, sender, patches 1..3 as bytes, a fresh receiver state at version 0)."""
    state = _model()
    start = clone_state(state)
    sender = sync.Sender(state)
    blobs = []
    for i in range(3):
        _step(state, i)
        blobs.append(sender.diff(meta={"step": i + 1}).to_bytes())
    return state, sender, blobs, start


def _untouched(
    receiver: sync.Receiver, held: dict[str, torch.Tensor], version: int, digest: sync.Digest
) -> None:
    assert receiver.version == version
    assert receiver.digest() == digest
    for k, v in receiver.tensors.items():
        assert same_bits(v, held[k]), k


def _refused(receiver, blob, err, match, **kw):
    held = {k: v.clone() for k, v in receiver.tensors.items()}
    version, digest = receiver.version, receiver.digest()
    with pytest.raises(err, match=match) as info:
        receiver.apply(blob, **kw)
    assert isinstance(info.value, SyncError) and isinstance(info.value, SubnetscopeError)
    assert info.value.hint
    _untouched(receiver, held, version, digest)


def test_chain_applies_in_order_and_refuses_replay_and_gap(chain):
    state, sender, blobs, start = chain
    r = sync.Receiver(start)
    _refused(
        r,
        blobs[1],
        sync.SyncGapError,
        r"applies on version 1, the receiver holds version 0 \(patch 1 is missing\)",
    )
    _refused(r, blobs[2], sync.SyncGapError, r"patches 1\.\.2 are missing")
    r.apply(blobs[0])
    _refused(r, blobs[0], sync.SyncReplayError, r"version 1 is not newer than the receiver's version 1")
    r.apply(blobs[1])
    r.apply(blobs[2], verify=True)
    _refused(r, blobs[1], sync.SyncReplayError, "version 2 is not newer than the receiver's version 3")
    assert r.digest() == sender.digest()
    for k, v in state.items():
        assert same_bits(v, start[k])


def test_wrong_parent_other_stream_and_other_start_are_refused(chain):
    _, _, blobs, start = chain
    # another sender (another stream) over the same weights
    other_state = clone_state(start)
    other = sync.Sender(other_state)
    r = sync.Receiver(clone_state(start))
    r.apply(blobs[0])
    _step(other_state, 0)
    other.diff()
    _step(other_state, 1)
    foreign = other.diff().to_bytes()
    _refused(
        r, foreign, sync.SyncParentError, r"belongs to sync stream [0-9a-f]{16}, the receiver follows stream"
    )
    # a receiver that did not start from the sender's weights
    wrong = sync.Receiver(_model(seed=5))
    _refused(
        wrong,
        blobs[0],
        sync.SyncParentError,
        r"applies on a state with digest [0-9a-f]{32}, the receiver's weights \(version 0\)",
    )


def test_receiver_written_outside_apply_is_refused_or_caught_by_verify(chain):
    _, _, blobs, start = chain
    ref = sync.Receiver(clone_state(start))
    ref.apply(blobs[0])
    differ = start["a.weight"].view(torch.int16) != ref.tensors["a.weight"].view(torch.int16)
    changed = int(torch.nonzero(differ.reshape(-1))[0])
    kept = int(torch.nonzero(~differ.reshape(-1))[0])
    # an element the patch changes was overwritten: the pre-write hash check refuses
    held = clone_state(start)
    r = sync.Receiver(held)
    with torch.no_grad():
        held["a.weight"].view(-1)[changed] = 123.0
    _refused(r, blobs[0], sync.SyncParentError, r"applying it would not give the sender's a\.weight")
    # an element it does not change got another exponent: the exponent-coded positions shift, refused too
    held3 = clone_state(start)
    r3 = sync.Receiver(held3)
    with torch.no_grad():
        held3["a.weight"].view(-1)[kept] *= 64
    _refused(r3, blobs[0], sync.SyncParentError, r"applying it would not give the sender's a\.weight")
    # its lowest bit flipped (same exponent): only verify=True sees it, and restores the receiver
    held2 = clone_state(start)
    r2 = sync.Receiver(held2)
    with torch.no_grad():
        held2["a.weight"].view(torch.int16).view(-1)[kept] ^= 1
    _refused(
        r2, blobs[0], sync.SyncVerifyError,
        r"1 tensor\(s\) do not hash to the sender's \(a\.weight\); the changed elements were restored", verify=True,
    )  # fmt: skip
    r2.apply(blobs[0])  # without verify the stale element goes unnoticed: what verify is for
    assert r2.version == 1


@pytest.mark.parametrize("where", ["magic", "version", "length", "header", "body", "trailer"])
def test_bit_flips_anywhere_are_refused(chain, where):
    _, _, blobs, start = chain
    blob = bytearray(blobs[0])
    hlen = struct.unpack_from("<I", blob, 16)[0]
    at = {
        "magic": 1,
        "version": 7,
        "length": 9,
        "header": 20 + hlen // 2,
        "body": 20 + hlen + 3,
        "trailer": len(blob) - 5,
    }[where]
    blob[at] ^= 0x10
    match = {"magic": "bad magic", "version": "sync format 17; this subnetscope reads format 1",
             "length": "is truncated|trailing bytes", "header": "sha256 does not match", "body": "sha256 does not match",
             "trailer": "sha256 does not match"}[where]  # fmt: skip
    _refused(sync.Receiver(clone_state(start)), bytes(blob), sync.SyncFormatError, match)


@pytest.mark.parametrize("cut", [0, 1, 19, 40, -33, -1])
def test_truncated_patches_are_refused(chain, cut):
    _, _, blobs, start = chain
    blob = blobs[0][:cut] if cut > 0 or cut < 0 else b""
    match = r"is truncated \(\d+ of \d+ bytes\)" if len(blob) >= 52 else r"is truncated \(\d+ bytes\)"
    _refused(sync.Receiver(clone_state(start)), blob, sync.SyncFormatError, match)
    _refused(sync.Receiver(clone_state(start)), blobs[0] + b"\0", sync.SyncFormatError, "1 trailing bytes")


def test_receivers_of_another_shape_dtype_or_tie_are_refused_by_name(chain):
    _, _, blobs, start = chain
    for change, match in [
        (lambda s: s.pop("norm"), r"norm is missing"),
        (
            lambda s: s.__setitem__("b.weight", torch.zeros(127, dtype=torch.bfloat16)),
            r"b\.weight is bfloat16\[127\] here, bfloat16\[128\] in the patch",
        ),
        (
            lambda s: s.__setitem__("norm", torch.ones(32, dtype=torch.float16)),
            r"norm is float16\[32\] here, float32\[32\]",
        ),
        (lambda s: s.__setitem__("extra", torch.ones(3)), r"extra is not in the patch"),
    ]:
        held = clone_state(start)
        change(held)
        r = sync.Receiver(held)
        _refused(r, blobs[0], sync.SyncMismatchError, match)


def test_ties_must_agree_where_both_sides_know_the_name():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(8, 4, generator=g).to(torch.bfloat16)
    untied = {"embed": w, "head": w.clone()}  # the sender keeps two tensors
    sender = sync.Sender(untied)
    tied_w = w.clone()
    r = sync.Receiver({"embed": tied_w, "head": tied_w})
    _refused(
        r, sender.diff().to_bytes(), sync.SyncMismatchError, r"head is tied to embed here, not in the sender"
    )
    # the other way round: the sender ties, the receiver holds two tensors
    tied = {"embed": w, "head": w}
    s2 = sync.Sender(tied)
    r2 = sync.Receiver({"embed": w.clone(), "head": w.clone()})
    _refused(
        r2, s2.diff().to_bytes(), sync.SyncMismatchError, r"head is tied to embed in the sender, not here"
    )
    # a receiver's own extra tied name (unknown to the sender) just follows its tensor
    own = w.clone()
    r3 = sync.Receiver({"embed": own, "head": own.clone(), "alias": own})
    s3 = sync.Sender(untied)
    with torch.no_grad():
        untied["embed"][0, 0] = 5.0
    r3.apply(s3.diff())
    assert float(r3.tensors["embed"][0, 0]) == 5.0 and "alias" not in r3.tensors


def test_sender_refuses_structure_changes_by_name_and_full_adopts_them():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2)).to(torch.bfloat16)
    sender = sync.Sender(model)
    model[1] = torch.nn.Linear(3, 5).to(torch.bfloat16)
    with pytest.raises(
        sync.SyncStructureError,
        match=r"since version 0: 1\.bias changed from bfloat16\[2\] to bfloat16\[5\]; 1\.weight changed from bfloat16\[2, 3\] to bfloat16\[5, 3\]",
    ):
        sender.diff()
    model.register_buffer("added", torch.zeros(2))
    with pytest.raises(sync.SyncStructureError, match=r"1 new tensor\(s\) \(added\)"):
        sender.diff()
    anchor = sender.full()
    fresh = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 5)).to(torch.bfloat16)
    fresh.register_buffer("added", torch.ones(2))
    r = sync.Receiver(fresh)
    r.apply(anchor, verify=True)
    assert r.digest() == sender.digest()
    with pytest.raises(sync.SyncStructureError, match=r"elements overlap in memory \(stride 0"):
        sync.Sender({"x": torch.zeros(1, 4).expand(3, 4)})


def test_patch_files_round_trip_and_missing_file_is_typed(tmp_path, chain):
    _, _, blobs, start = chain
    p = sync.Patch.from_bytes(blobs[0])
    path = p.save(tmp_path / "00001.patch")
    q = sync.Patch.load(path)
    assert q.to_bytes() == blobs[0] and q.meta == {"step": 1} and q.version == 1 and q.parent == 0
    with pytest.raises(SubnetscopeError, match="no such patch file"):
        sync.Patch.load(tmp_path / "missing.patch")


@pytest.mark.parametrize("positions", ["exponent", "flat"])
def test_apply_extra_memory_is_o_changed_and_snapshot_is_one_copy(positions):
    import tracemalloc

    g = torch.Generator().manual_seed(9)
    big = {"w": torch.randn(4096, 4096, generator=g).to(torch.bfloat16), "v": torch.randn(4096, generator=g)}
    sender = sync.Sender(big, positions=positions)
    assert sum(s.numel() * s.element_size() for s in sender.snapshot.values()) == 4096 * 4096 * 2 + 4096 * 4
    receiver = sync.Receiver(clone_state(big))
    with torch.no_grad():
        big["w"].view(-1)[:: 4096 * 41] += 1.0  # 410 changed elements of 16.8 M (a 32 MiB tensor)
    blob = sender.diff().to_bytes()
    tracemalloc.start()
    try:
        receiver.apply(blob)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert receiver.digest() == sender.digest()
    assert peak < 1 << 20, f"apply allocated {peak} bytes at its peak for 410 changed elements"
