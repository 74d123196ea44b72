"""sync's value and position codes, hashes and kernels: exact round trips against numpy oracles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from subnetscope import sync
from subnetscope.sync import bits as B
from subnetscope.sync import hashing, kernels
from sync_helpers import bits, clone_state, n_differ, same_bits, special_bf16, sync_once


def test_keys_are_an_order_preserving_bijection_on_all_bf16_patterns():
    u = np.arange(1 << 16, dtype=np.uint64)
    k = B.keys(u, 2, True)
    assert np.array_equal(np.sort(k), u)  # a bijection
    assert np.array_equal(B.unkeys(k, 2, True), u)
    f = torch.from_numpy(u.astype(np.uint16).view(np.int16)).view(torch.bfloat16).float().numpy()
    finite = np.isfinite(f)
    order = np.argsort(k[finite], kind="stable")
    assert np.all(np.diff(f[finite][order]) >= 0)  # keys sort like the floats
    # -0 and +0 are one step apart; the smallest subnormal is one step above +0
    assert (
        int(B.keys(np.array([0x0000], np.uint64), 2, True)[0])
        - int(B.keys(np.array([0x8000], np.uint64), 2, True)[0])
        == 1
    )
    assert (
        int(B.keys(np.array([0x0001], np.uint64), 2, True)[0])
        - int(B.keys(np.array([0x0000], np.uint64), 2, True)[0])
        == 1
    )


@pytest.mark.parametrize(
    ("size", "floating"), [(1, True), (1, False), (2, True), (2, False), (4, True), (4, False), (8, True)]
)
def test_value_codes_round_trip_and_numba_matches_numpy(size, floating):
    rng = np.random.default_rng(size)
    n = 20000
    hi = (1 << (8 * size)) - 1
    old = rng.integers(0, hi, n, dtype=np.uint64, endpoint=True)
    # half small steps (1-3 ULPs either way), half arbitrary new patterns
    small = B.unkeys(
        (B.keys(old, size, floating) + rng.choice(np.array([1, 2, 3, hi, hi - 1], dtype=np.uint64), n))
        & np.uint64(hi),
        size,
        floating,
    )
    new = np.where(rng.random(n) < 0.5, small, rng.integers(0, hi, n, dtype=np.uint64, endpoint=True))
    keep = new != old
    old, new = old[keep], new[keep]
    idx = np.sort(rng.choice(10 * n, old.shape[0], replace=False)).astype(np.int64)
    u = np.dtype(f"u{size}")
    ref = kernels.encode(idx, old.astype(u), new.astype(u), size, floating, 5, jit=False)
    got = kernels.encode(idx, old.astype(u), new.astype(u), size, floating, 5)
    assert got == ref
    pos8, posx, codes, esc, h = got
    assert h == hashing.add(5, hashing.delta(idx, old, new))
    cd = np.frombuffer(codes, np.uint8)
    if size < 8:  # one code byte per value; steps of 1 ULP cost exactly one byte and no escape
        ones = (B.keys(new, size, floating) - B.keys(old, size, floating)) & np.uint64(hi)
        assert np.all(cd[(ones == 1) | (ones == hi)] <= 1)
    for jit in (False, True):
        p = kernels.positions(np.frombuffer(pos8, np.uint8), posx, 10 * n, "t", jit=jit)
        assert np.array_equal(p, idx)
        v, h2 = kernels.values(idx, old.astype(u), cd, esc, size, floating, 5, "t", jit=jit and size < 8)
        assert np.array_equal(v.astype(np.uint64), new) and h2 == h


def test_damaged_streams_are_refused_by_both_paths():
    idx = np.array([3, 400, 100000], dtype=np.int64)
    old = np.array([1, 2, 3], dtype=np.uint16)
    new = np.array([2, 40000, 4], dtype=np.uint16)
    pos8, posx, codes, esc, _ = kernels.encode(idx, old, new, 2, True, 0)
    for jit in (False, True):
        with pytest.raises(sync.SyncFormatError, match="beyond the tensor's 1000 elements"):
            kernels.positions(np.frombuffer(pos8, np.uint8), posx, 1000, "t", jit=jit)
        with pytest.raises(sync.SyncFormatError, match=r"hold 3 values|stray bytes"):
            kernels.positions(np.frombuffer(pos8, np.uint8), posx + b"\x01", 10**6, "t", jit=jit)
        with pytest.raises(sync.SyncFormatError, match=r"value escape is malformed|hold 0 values"):
            kernels.values(idx, old, np.frombuffer(codes, np.uint8), esc[:-1], 2, True, 0, "t", jit=jit)


def test_hash_paths_agree_and_move_with_every_bit():
    g = torch.Generator().manual_seed(0)
    t = special_bf16(100_003, g)
    u = bits(t).numpy().view(np.uint16).astype(np.uint64)
    ref = int(np.sum(hashing.mix_np(np.arange(u.shape[0]), u), dtype=np.uint64))
    assert hashing.tensor_hash(t) == ref
    assert hashing._hash_torch(bits(t), 0) == ref
    nc = t.reshape(-1)[:100_000].reshape(400, 250).t()  # non-contiguous: hashed in row-major order
    assert hashing.tensor_hash(nc) == hashing.tensor_hash(nc.contiguous())
    flipped = t.clone()
    bits(flipped)
    flipped.view(torch.int16)[777] ^= 1
    assert hashing.tensor_hash(flipped) != ref
    swapped = t.clone()
    swapped[[5, 6]] = t[[6, 5]]
    assert hashing.tensor_hash(swapped) != ref or same_bits(t[5], t[6])


def _state(g: torch.Generator) -> dict[str, torch.Tensor]:
    emb = special_bf16(64 * 48, g).reshape(64, 48)
    return {
        "embed.weight": emb,
        "head.weight": emb,  # tied: one storage, two names
        "fp16": torch.randn(300, generator=g).half(),
        "fp32.t": torch.randn(40, 70, generator=g).t(),  # non-contiguous
        "fp64": torch.randn(33, generator=g).double(),
        "all_changed": torch.randn(17, 5, generator=g).to(torch.bfloat16),
        "none_changed": torch.randn(99, generator=g).to(torch.bfloat16),
        "scalar": torch.tensor(1.5),
        "steps": torch.arange(10, dtype=torch.int64),
        "flags": torch.zeros(12, dtype=torch.bool),
        "empty": torch.zeros(0, 4),
    }


def _mutate(state: dict[str, torch.Tensor], g: torch.Generator, density: float) -> int:
    """Change random elements in place (to special and ordinary values); returns how many differ now."""
    before = {k: v.clone() for k, v in state.items() if k != "head.weight"}
    with torch.no_grad():
        e = state["embed.weight"]
        m = torch.rand(e.shape, generator=g) < density
        e[m] = special_bf16(int(m.sum()), g)
        for k in ("fp16", "fp32.t", "fp64"):
            v = state[k]
            m = torch.rand(v.shape, generator=g) < density
            v[m] = (
                v[m].double() * (1 + 1e-2 * torch.randn(int(m.sum()), generator=g, dtype=torch.float64))
            ).to(v.dtype)
            if v.dim() == 1:
                v[0] = float("nan")
            else:
                v[0, 0] = -0.0
        a = state["all_changed"]
        a.view(torch.int16).add_(1)  # every element one bit pattern further: all changed
        state["scalar"].fill_(-0.0)
        state["steps"].add_(torch.randint(-3, 4, (10,), generator=g))
        state["flags"][::3] = ~state["flags"][::3]
    return sum(n_differ(before[k], state[k]) for k in before)


@pytest.mark.parametrize(
    ("positions", "numba"),
    [("exponent", True), ("exponent", False), ("flat", True), ("flat", False), ("device", True)],
)
def test_random_patterns_sync_bit_exact_with_exact_counts(positions, numba, monkeypatch):
    if not numba:  # the numpy reference paths
        monkeypatch.setenv("SUBNETSCOPE_NO_NUMBA", "1")
    if positions == "device":  # the GPU code path (torch compare on the device, flat positions), on the CPU
        from subnetscope.sync import sender as sender_mod

        monkeypatch.setattr(sender_mod, "TORCH_COMPARE", True)
    g = torch.Generator().manual_seed(1)
    state = _state(g)
    mirror = clone_state(state)
    mode = "flat" if positions == "device" else positions
    sender, receiver = sync.Sender(state, positions=mode), sync.Receiver(mirror)
    assert receiver.digest() == sender.digest()
    assert mirror["head.weight"] is mirror["embed.weight"]
    for step in range(6):
        expected = _mutate(state, g, density=[0.005, 0.01, 0.05, 0.1, 0.5, 1.0][step])
        patch = sync_once(sender, receiver, verify=True)
        assert patch.stats.changed == expected
        assert patch.version == step + 1 and patch.parent == step
        rows = {t.name: t for t in patch.tensors}
        assert "head.weight" not in rows and patch.aliases == {"head.weight": "embed.weight"}
        assert rows["all_changed"].changed == 85 and rows["none_changed"].changed == 0
        assert rows["empty"].changed == 0 and rows["scalar"].changed == (1 if step == 0 else 0)
        coded = {n: r.positions for n, r in rows.items() if r.changed}
        want = {
            n: int(positions == "exponent" and rows[n].dtype in ("bfloat16", "float16", "float32"))
            for n in coded
        }
        assert coded == want
        for k, v in state.items():
            assert same_bits(v, mirror[k]), k
        assert receiver.digest() == sender.digest()
        assert sorted(n for n, _ in receiver.changed_tensors(patch)) == sorted(patch.changed_names())
    assert not mirror["fp32.t"].is_contiguous()


def test_full_patch_starts_any_receiver_and_none_changed_diff_is_empty():
    g = torch.Generator().manual_seed(2)
    state = _state(g)
    sender = sync.Sender(state)
    _mutate(state, g, 0.1)
    anchor = sender.full(meta={"step": 7})
    blank = {k: torch.zeros_like(v) for k, v in clone_state(state).items()}
    blank["head.weight"] = blank["embed.weight"]
    receiver = sync.Receiver(blank)
    receiver.apply(anchor.to_bytes(), verify=True)
    assert receiver.version == 1 and sync.Patch.from_bytes(anchor.to_bytes()).meta == {"step": 7}
    for k, v in state.items():
        assert same_bits(v, blank[k]), k
    nothing = sync_once(sender, receiver)
    assert nothing.stats.changed == 0 and nothing.stats.tensors == 0 and receiver.version == 2
    assert receiver.digest() == sender.digest()


def test_exponent_coding_jitted_and_numpy_paths_agree():
    rng = np.random.default_rng(4)
    n = 3 * 4096 + 17
    a0 = rng.integers(0, 1 << 16, n).astype(np.uint16)
    b = a0.copy()
    ch = rng.random(n) < 0.03
    b[ch] ^= 1
    bitmap = np.zeros((n + 63) // 64 * 8, dtype=np.uint8)
    bitmap[: (n + 7) // 8] = np.packbits(ch, bitorder="little")
    k = int(ch.sum())
    out = []
    for numba in (True, False):
        import os

        os.environ["SUBNETSCOPE_NO_NUMBA"] = "" if numba else "1"
        try:
            a = a0.copy()
            cnt = np.zeros(256, dtype=np.int64)
            got = kernels.rank_take(bitmap, a, b[ch], k, cnt, "bfloat16")
            assert np.array_equal(a, b)
            order, pos, table = kernels.bucket_order(*got[:1], got[2], got[3])
            ids, counts = kernels.read_table(table, k, "t")
            ranks, ptr, end = kernels.scan_targets(pos, ids, counts)
            blocks = [(s, a0[s : s + 1000]) for s in range(0, n, 1000)]
            idx, old = kernels.scan(iter(blocks), "bfloat16", ranks, ptr, end, "t")
            assert np.array_equal(idx, got[0][order]) and np.array_equal(old, a0[idx])
            out.append((got, pos.tobytes(), table, cnt.copy()))
        finally:
            os.environ.pop("SUBNETSCOPE_NO_NUMBA", None)
    (g1, p1, t1, c1), (g2, p2, t2, c2) = out
    assert (
        all(np.array_equal(x, y) for x, y in zip(g1, g2)) and p1 == p2 and t1 == t2 and np.array_equal(c1, c2)
    )
    expect = np.bincount((a0.astype(np.int64) >> 7) & 0xFF, minlength=256)
    assert np.array_equal(c1, expect)
    # a damaged table, and ranks beyond their bucket, are refused
    with pytest.raises(sync.SyncFormatError, match=f"does not add up to {k + 1} changes"):
        kernels.read_table(t1, k + 1, "t")
    ranks2 = ranks.copy()
    ranks2[-1] = n
    with pytest.raises(sync.SyncFormatError, match=r"1 coded position\(s\) lie beyond their exponent bucket"):
        kernels.scan(iter([(0, a0)]), "bfloat16", ranks2, ptr, end, "t")
