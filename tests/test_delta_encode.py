"""Chunk encoding against brute force: positions, values, the choice of encoding, and damaged blobs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from subnetscope.delta.encode import (
    decode_positions,
    decode_values,
    encode_chunk,
    from_planes,
    to_planes,
    varint_decode,
    varint_encode,
    varint_sizes,
)
from subnetscope.errors import DeltaFormatError


def _rebuild(base: np.ndarray, enc) -> np.ndarray:
    values = decode_values(enc.val_codec, enc.val_blob, base.dtype, enc.changed, "test")
    pos = decode_positions(enc.positions, enc.pos_codec, enc.pos_blob, base.size, enc.changed, "test")
    if pos is None:
        return values.copy()
    out = base.copy()
    out[pos] = values
    return out


def test_varint_known_bytes():
    assert varint_encode(np.array([0, 1, 127, 128, 300, 2**35 - 1])) == (
        b"\x00\x01\x7f\x80\x01\xac\x02\xff\xff\xff\xff\x7f"
    )
    assert varint_sizes(np.array([0, 127, 128, 16383, 16384])).tolist() == [1, 1, 2, 2, 3]


@given(st.lists(st.integers(0, 2**35 - 1), max_size=200))
def test_varint_round_trip(values):
    v = np.array(values, dtype=np.int64)
    raw = varint_encode(v)
    assert len(raw) == int(varint_sizes(v).sum())
    assert varint_decode(raw, len(values), "t").tolist() == values


@pytest.mark.parametrize("width", [1, 2, 4, 8])
@pytest.mark.parametrize("density", [0.0, 0.001, 0.03, 0.2, 0.7, 1.0])
def test_chunk_round_trip_and_choice(width, density):
    rng = np.random.default_rng(int(density * 1000) + width)
    n = 5000
    dt = np.dtype(f"<u{width}")
    base = rng.integers(0, 2 ** (8 * width) - 1, n, dtype=np.uint64).astype(dt)
    target = base.copy()
    sel = rng.random(n) < density
    target[sel] ^= dt.type(1)
    enc = encode_chunk(base, target, 1)
    k = int(np.count_nonzero(base != target))
    if k == 0:
        assert enc is None
        return
    assert enc is not None and enc.changed == k
    np.testing.assert_array_equal(_rebuild(base, enc), target)
    bitmap = (n + 7) // 8
    idx = np.flatnonzero(base != target)
    gaps = int(varint_sizes(np.diff(idx, prepend=-1) - 1).sum())
    sparse = min(bitmap, gaps) + k * width
    if sparse >= n * width:
        assert enc.positions == "all"
    else:
        assert enc.positions == ("gaps" if gaps < bitmap else "bitmap")


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 3000),
    st.sampled_from([1, 2, 4]),
    st.floats(0, 1),
    st.integers(0, 2**32 - 1),
)
def test_chunk_round_trip_random(n, width, density, seed):
    rng = np.random.default_rng(seed)
    dt = np.dtype(f"<u{width}")
    base = rng.integers(0, 256, n * width, dtype=np.uint8).view(dt)
    target = base.copy()
    sel = rng.random(n) < density
    target[sel] = rng.integers(0, 256, int(sel.sum()) * width, dtype=np.uint8).view(dt)
    enc = encode_chunk(base, target, 3)
    if not np.any(base != target):
        assert enc is None
    else:
        np.testing.assert_array_equal(_rebuild(base, enc), target)


@pytest.mark.parametrize("width", [1, 2, 4, 8])
def test_planes_round_trip(width):
    v = (np.arange(37, dtype=np.uint64) * 977).astype(f"<u{width}")
    raw = to_planes(v)
    if width > 1:
        assert raw[:37] == v.view(np.uint8)[::width].tobytes()  # first plane: every value's first byte
    np.testing.assert_array_equal(from_planes(raw, v.dtype, 37), v)


def test_damaged_blobs_are_refused():
    base = np.zeros(4096, dtype=np.uint16)
    target = base.copy()
    target[[3, 70, 4000]] = 7
    enc = encode_chunk(base, target, 1)
    assert enc is not None and enc.positions == "gaps"
    with pytest.raises(DeltaFormatError, match="position gaps hold 3 values, the manifest says 4"):
        decode_positions("gaps", enc.pos_codec, enc.pos_blob, 4096, 4, "w")
    with pytest.raises(DeltaFormatError, match="beyond the chunk's 100 elements"):
        decode_positions("gaps", enc.pos_codec, enc.pos_blob, 100, 3, "w")
    bitmap = np.packbits(base != target, bitorder="little").tobytes()
    with pytest.raises(DeltaFormatError, match="does not hold 2 positions in 4096"):
        decode_positions("bitmap", "raw", bitmap, 4096, 2, "w")
    with pytest.raises(DeltaFormatError, match="holds 512 bytes, expected 1024"):
        decode_positions("bitmap", "raw", bitmap, 8192, 3, "w")
    with pytest.raises(DeltaFormatError, match="zstd frame is damaged"):
        decode_values("zstd", b"\x00" * 16, np.dtype("<u2"), 3, "w")
    with pytest.raises(DeltaFormatError, match="holds 6 bytes, expected 8"):
        decode_values("raw", enc.val_blob, np.dtype("<u2"), 4, "w")
