"""The fused delta loops (numba) against their numpy versions and a brute-force oracle, damaged input included."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from subnetscope.delta import kernels
from subnetscope.delta.encode import encode_chunk
from subnetscope.delta.varint import varint_encode

MODES = [pytest.param(True, id="numba"), pytest.param(False, id="numpy")]


def _pair(n: int, width: int, density: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, n * width, dtype=np.uint8).view(f"<u{width}")
    b = a.copy()
    sel = rng.random(n) < density
    b[sel] ^= np.array(1 << (8 * width - 1), dtype=b.dtype)  # flip the top bit: always a change
    return a, b


@pytest.mark.parametrize("use_numba", MODES)
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 2000), st.sampled_from([1, 2, 4, 8]), st.floats(0, 1), st.integers(0, 2**32 - 1))
def test_diff_pack_and_scatter_match_the_oracle(use_numba, n, width, density, seed):
    a, b = _pair(n, width, density, seed)
    idx = [i for i in range(n) if a[i] != b[i]]  # brute force
    bitmap = np.empty((n + 7) // 8, dtype=np.uint8)
    values = np.empty(n, dtype=b.dtype)
    k = kernels.diff_pack(a, b, bitmap, values, use_numba)
    assert k == len(idx)
    assert values[:k].tolist() == [int(b[i]) for i in idx]
    assert bitmap.tolist() == np.packbits(a != b, bitorder="little").tolist()
    gaps = kernels.bitmap_varint(bitmap, n, k, use_numba) if k else b""
    assert gaps == varint_encode(np.diff(np.array(idx, dtype=np.int64), prepend=-1) - 1)
    for scatter, blob in (
        (kernels.scatter_bitmap, bitmap),
        (kernels.scatter_varint, np.frombuffer(gaps, np.uint8)),
    ):
        if k == 0:
            continue
        out = a.copy()
        assert scatter(out, blob, values[:k].copy(), use_numba) == k
        np.testing.assert_array_equal(out, b)


@pytest.mark.parametrize("use_numba", MODES)
def test_scatter_refuses_damaged_input(use_numba):
    out = np.zeros(100, dtype=np.uint16)
    vals = np.arange(1, 4, dtype=np.uint16)
    buf = lambda gaps: np.frombuffer(varint_encode(np.array(gaps)), np.uint8)  # noqa: E731
    assert kernels.scatter_varint(out, buf([0, 5, 200]), vals, use_numba) == kernels.ERR_POSITION
    assert kernels.scatter_varint(out, buf([0, 1, 2, 3]), vals, use_numba) == kernels.ERR_VALUES
    assert (
        kernels.scatter_varint(out, np.array([0x80] * 6 + [1], np.uint8), vals, use_numba)
        == kernels.ERR_VARINT
    )
    assert kernels.scatter_varint(out, np.array([3, 0x85], np.uint8), vals, use_numba) == kernels.ERR_VARINT
    bitmap = np.full(13, 0xFF, np.uint8)
    assert kernels.scatter_bitmap(out, bitmap, vals, use_numba) == kernels.ERR_VALUES
    assert kernels.scatter_bitmap(out, bitmap, vals[:0], use_numba) == kernels.ERR_VALUES


def test_numba_and_numpy_encode_identically():
    a, b = _pair(50_000, 2, 0.01, 3)
    for density in (0.01, 0.3):
        a, b = _pair(50_000, 2, density, 3)
        x, y = encode_chunk(a, b, 1, use_numba=True), encode_chunk(a, b, 1, use_numba=False)
        assert x is not None and x == y
