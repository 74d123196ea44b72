"""The delta loops (C, numba, numpy backends) against each other and a brute-force oracle, damaged input included."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from subnetscope.delta.encode import encode_chunk
from subnetscope.kernels import delta as kernels
from subnetscope.kernels import env, native
from subnetscope.kernels.registry import BACKENDS
from subnetscope.kernels.varint import varint_encode

MODES = list(BACKENDS)


def _pair(n: int, width: int, density: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, n * width, dtype=np.uint8).view(f"<u{width}")
    b = a.copy()
    sel = rng.random(n) < density
    b[sel] ^= np.array(1 << (8 * width - 1), dtype=b.dtype)  # flip the top bit: always a change
    return a, b


@pytest.mark.parametrize("backend", MODES)
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 2000), st.sampled_from([1, 2, 4, 8]), st.floats(0, 1), st.integers(0, 2**32 - 1))
def test_diff_pack_and_scatter_match_the_oracle(backend, n, width, density, seed):
    a, b = _pair(n, width, density, seed)
    idx = [i for i in range(n) if a[i] != b[i]]  # brute force
    bitmap = np.empty((n + 7) // 8, dtype=np.uint8)
    values = np.empty(n, dtype=b.dtype)
    k = kernels.diff_pack(a, b, bitmap, values, backend)
    assert k == len(idx)
    assert values[:k].tolist() == [int(b[i]) for i in idx]
    assert bitmap.tolist() == np.packbits(a != b, bitorder="little").tolist()
    gaps = kernels.bitmap_varint(bitmap, n, k, backend) if k else b""
    assert gaps == varint_encode(np.diff(np.array(idx, dtype=np.int64), prepend=-1) - 1)
    for scatter, blob in (
        (kernels.scatter_bitmap, bitmap),
        (kernels.scatter_varint, np.frombuffer(gaps, np.uint8)),
    ):
        if k == 0:
            continue
        out = a.copy()
        assert scatter(out, blob, values[:k].copy(), backend) == k
        np.testing.assert_array_equal(out, b)


@pytest.mark.skipif(not native.AVAILABLE, reason="C extension not built")
@settings(max_examples=60, deadline=None)
@given(st.integers(0, 700), st.sampled_from([1, 2, 4, 8]), st.floats(0, 1), st.integers(0, 2**32 - 1))
def test_diff_pack_with_and_without_avx512(n, width, density, seed):
    """The AVX-512 gather and scatter (full registers, then a masked tail) and the plain C loops both equal
    the oracle; the gather writes nothing past the bitmap's (n + 7) // 8 bytes, and the scatter refuses a
    bitmap with more set bits than values."""
    a, b = _pair(n, width, density, seed)
    want = a != b
    try:
        for on in (True, False):
            native.set_avx512(on)
            bitmap = np.full((n + 7) // 8 + 8, 0xA5, dtype=np.uint8)
            values = np.zeros(n, dtype=b.dtype)
            k = native.diff_pack(a, b, bitmap, values)
            assert k == int(want.sum())
            assert np.array_equal(values[:k], b[want])
            assert np.array_equal(bitmap[: (n + 7) // 8], np.packbits(want, bitorder="little"))
            assert (bitmap[(n + 7) // 8 :] == 0xA5).all()
            if k:  # and back: the scatter (AVX-512 VPEXPAND, or the set-bit loop) rebuilds b from a
                out = np.concatenate([a, np.full(3, 7, a.dtype)])[:n]  # writable, own memory
                assert native.scatter_bitmap(out, bitmap, values[:k].copy()) == k
                assert np.array_equal(out, b)
                assert native.scatter_bitmap(a.copy(), bitmap, values[: k - 1].copy()) == kernels.ERR_VALUES
                if n % 8:  # stray bits past n in the last byte do not count and write nothing
                    stray = bitmap.copy()
                    stray[(n - 1) // 8] |= 0xFF ^ ((1 << (n % 8)) - 1)
                    out = a.copy()
                    assert native.scatter_bitmap(out, stray, values[:k].copy()) == k
                    assert np.array_equal(out, b)
    finally:
        native.set_avx512(not env.NO_AVX512)  # as at import


@pytest.mark.parametrize("backend", MODES)
def test_scatter_refuses_damaged_input(backend):
    out = np.zeros(100, dtype=np.uint16)
    vals = np.arange(1, 4, dtype=np.uint16)
    buf = lambda gaps: np.frombuffer(varint_encode(np.array(gaps)), np.uint8)  # noqa: E731
    assert kernels.scatter_varint(out, buf([0, 5, 200]), vals, backend) == kernels.ERR_POSITION
    assert kernels.scatter_varint(out, buf([0, 1, 2, 3]), vals, backend) == kernels.ERR_VALUES
    assert (
        kernels.scatter_varint(out, np.array([0x80] * 6 + [1], np.uint8), vals, backend) == kernels.ERR_VARINT
    )
    assert kernels.scatter_varint(out, np.array([3, 0x85], np.uint8), vals, backend) == kernels.ERR_VARINT
    bitmap = np.full(13, 0xFF, np.uint8)
    assert kernels.scatter_bitmap(out, bitmap, vals, backend) == kernels.ERR_VALUES
    assert kernels.scatter_bitmap(out, bitmap, vals[:0], backend) == kernels.ERR_VALUES


def test_every_backend_encodes_identically():
    for density in (0.01, 0.3):
        a, b = _pair(50_000, 2, density, 3)
        got = [encode_chunk(a, b, 1, backend=be) for be in BACKENDS]
        assert got[0] is not None and all(g == got[0] for g in got)


def test_c_scatter_refuses_a_read_only_target():
    if "native" not in BACKENDS:
        pytest.skip("C kernels not built")
    out = np.zeros(16, dtype=np.uint16)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        kernels.scatter_bitmap(out, np.full(2, 0xFF, np.uint8), np.ones(16, np.uint16), "native")


def _before_guard_page(values: np.ndarray) -> tuple[np.ndarray, object]:
    """A copy of ``values`` that ends where an unreadable page begins: reading past it faults."""
    import ctypes
    import mmap

    page = mmap.PAGESIZE
    buf = mmap.mmap(-1, 2 * page)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.mprotect(ctypes.c_void_p(addr + page), ctypes.c_size_t(page), 0) == 0  # PROT_NONE
    out = np.frombuffer(buf, values.dtype, count=values.shape[0], offset=page - values.nbytes)
    out[:] = values
    return out, buf


@pytest.mark.skipif(not native.AVAILABLE or sys.platform != "linux", reason="C extension on Linux")
@pytest.mark.parametrize("on", [True, False])
@pytest.mark.parametrize("width", [1, 2, 4, 8])
def test_scatter_reads_no_value_past_the_last(on, width):
    """Stray bits past n in the bitmap's last byte must not make the scatter read more values (here the
    values end at an unreadable page, so such a read would crash the test)."""
    n = 8 * 37 + 3
    a, b = _pair(n, width, 0.5, 11)
    bitmap = np.packbits(a != b, bitorder="little")
    bitmap[-1] |= 0xF8  # bits 3..7 of the last byte lie past n
    vals, keep = _before_guard_page(b[a != b])
    try:
        native.set_avx512(on)
        out = a.copy()
        assert native.scatter_bitmap(out, bitmap, vals) == int((a != b).sum())
        assert np.array_equal(out, b)
    finally:
        native.set_avx512(not env.NO_AVX512)  # as at import
    del vals, keep
