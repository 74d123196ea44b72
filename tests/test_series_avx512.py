"""The AVX-512 series kernel for bf16 (``_native_avx512.c``) against the numpy reference, with it on and off.

It runs on full blocks of 2048 elements only, so these rows span several blocks and a tail; special values
(NaN, Inf, signed zeros, subnormals) and exact returns to INIT are mixed in, and a tie in float32 must send
its block back to the float64 recount.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zlib

import numpy as np
import pytest

from subnetscope.dtypes import DTYPES
from subnetscope.kernels import env, native
from subnetscope.kernels import series as sk

BF16 = DTYPES["BF16"]
pytestmark = pytest.mark.skipif(not native.AVAILABLE, reason="C extension not built")


def _cpu_has_avx512() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return all(f" {x}" in flags for x in ("avx512f", "avx512bw", "avx512dq"))


@pytest.fixture(params=[True, False], ids=["avx512", "plain"])
def simd(request):
    on = native.set_avx512(request.param)
    yield on
    native.set_avx512(not env.NO_AVX512)  # as at import


def _rows(rng: np.random.Generator, n: int, k: int) -> list[np.ndarray]:
    r0 = rng.standard_normal(n).astype(np.float32) * rng.choice([1e-6, 1e-3, 1e-1], n).astype(np.float32)
    r0 = (r0.view(np.uint32) >> 16).astype(np.uint16)
    special = np.array([0x7FC0, 0xFFC1, 0x7F80, 0xFF80, 0x0000, 0x8000, 0x0001, 0x807F], np.uint16)
    r0[rng.integers(0, n, 64)] = rng.choice(special, 64)
    rows = [r0]
    for _ in range(k):
        r = rows[-1].copy()
        sel = rng.random(n) < 0.3
        r[sel] = (r[sel].astype(np.int32) + rng.integers(-3, 4, int(sel.sum()))).astype(np.uint16)
        r[rng.integers(0, n, 16)] = rng.choice(special, 16)
        back = rng.random(n) < 0.1
        r[back] = r0[back]
        rows.append(r)
    return rows


def _both(
    rows: list[np.ndarray], tol: float, semantics: str, k: int, fin: int
) -> list[tuple[np.ndarray, ...]]:
    outs = []
    for backend in ("native", "numpy"):
        out = np.zeros((k, sk.NSTEP), np.int64)
        split = np.zeros(sk.NSPLIT, np.int64)
        sk.series_chunk(np.stack(rows), BF16, tol, semantics, k, fin, out, split, backend=backend)
        outs.append((out, split))
    return outs


def _cpu_level() -> int:
    if not _cpu_has_avx512():
        return 0
    with open("/proc/cpuinfo") as f:
        return 2 if " avx512_vbmi2" in f.read() else 1


def test_the_kernels_are_used_where_the_cpu_has_them():
    # the other tests leave the level as SUBNETSCOPE_NO_AVX512 set it at import
    assert native.avx512_level() == (0 if env.NO_AVX512 else _cpu_level())
    assert native.set_avx512(True) == native.avx512_level() == _cpu_level()
    assert native.set_avx512(False) == native.avx512_level() == 0
    native.set_avx512(not env.NO_AVX512)


@pytest.mark.parametrize("value,want_off", [("1", True), ("0", False), ("", False)])
def test_the_environment_turns_them_off(value, want_off):
    code = "from subnetscope.kernels import native; print(native.avx512_level())"
    env = dict(os.environ, SUBNETSCOPE_NO_AVX512=value)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert int(out.stdout) == (0 if want_off else _cpu_level())


@pytest.mark.parametrize("tol", [0.0, 1e-5, 3e-3])
@pytest.mark.parametrize("semantics", ["exact", "reference"])
@pytest.mark.parametrize("k,fin", [(1, 1), (4, 4), (4, 5), (3, 2)])
def test_equals_numpy_over_blocks_and_tail(simd, tol, semantics, k, fin):
    rng = np.random.default_rng(zlib.crc32(repr((tol, semantics, k, fin)).encode()))
    n = 3 * 2048 + 77
    rows = _rows(rng, n, max(k, fin))
    got, want = _both(rows, tol, semantics, k, fin)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    assert want[0][:, 0].max() > 0  # changes are present
    assert want[1][sk.CANCELLED] > 0 or max(k, fin) == 1  # and, over several steps, cancellations


def test_a_float32_tie_sends_the_block_to_the_float64_recount(simd):
    """1 + 2**-7 is the bf16 after 1.0: with tol = 2**-7 the difference equals the tolerance (not changed
    in exact semantics), which float32 alone cannot tell from a larger one."""
    rng = np.random.default_rng(3)
    n, k = 2 * 2048, 2
    rows = _rows(rng, n, k)
    where = np.array([5, 2047, 2048 + 600])
    rows[0][where] = 0x3F80  # 1.0
    rows[1][where] = 0x3F81  # 1 + 2**-7: a tie against INIT
    rows[2][where] = 0x3F82  # 1 + 2**-6: changed against INIT, a tie against step 1
    got, want = _both(rows, 2.0**-7, "exact", k, k)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    ref = [r.copy() for r in rows]
    for r in ref:
        r[where] = rows[0][where]  # the same rows with the ties made identical
    base = _both(ref, 2.0**-7, "exact", k, k)[1]
    assert got[0][0, 0] == base[0][0, 0]  # step 1: the ties are not changed
    assert got[0][1, 0] == base[0][1, 0] + where.size  # step 2: changed vs INIT
    assert got[0][1, 2] == base[0][1, 2]  # ... but not vs step 1


def _gaps(x: np.ndarray, a: np.ndarray) -> np.ndarray:
    """The distinct finite, non-zero |fl32(x - a)| of bf16 bit patterns, computed as the kernels do."""
    xf, af = (x.astype(np.uint32) << 16).view(np.float32), (a.astype(np.uint32) << 16).view(np.float32)
    with np.errstate(all="ignore"):
        d = np.abs(xf - af)
    return np.unique(d[np.isfinite(d) & (d > 0)])


def test_no_tie_is_missed_by_the_tie_search():
    """Skipping the tie test is only safe where bf16_ties_possible is never wrongly False: every gap two
    bf16 values really have must be found, over random pairs and neighbours in every binade (subnormals,
    binade edges, both signs, across zero)."""
    rng = np.random.default_rng(7)
    a = rng.integers(0, 1 << 16, 4000, dtype=np.uint32).astype(np.uint16)
    b = rng.integers(0, 1 << 16, 4000, dtype=np.uint32).astype(np.uint16)
    near = np.concatenate([np.arange(0, 0x7F80, 97), np.arange(0x8000, 0xFF80, 89), [0x0000, 0x8000, 0x007F]])
    near = near.astype(np.uint16)
    gaps = np.concatenate([
        _gaps(a, b),
        *[_gaps((near + s).astype(np.uint16), near) for s in (1, 2, 3)],
        _gaps(near ^ np.uint16(0x8000), near + np.uint16(1)),  # across zero: x and -y
    ])  # fmt: skip
    gaps = np.unique(gaps)
    sample = gaps[:: max(1, gaps.size // 200)]
    native.bf16_ties_possible.cache_clear()
    missed = [float(g) for g in sample if not native.bf16_ties_possible(float(g))]
    assert not missed and sample.size > 150
    assert native.bf16_ties_possible(2.0**-7) and native.bf16_ties_possible(2.0**-133)  # the last: 0x0001
    assert native.bf16_ties_possible(0.0) and not native.bf16_ties_possible(float("nan"))


def test_usual_tolerances_are_never_a_bf16_gap():
    # so the series kernel runs without the tie test for them (each searched exhaustively)
    for tol in (1e-5, 1e-6, 1e-8, 1e-3):
        assert not native.bf16_ties_possible(float(np.float32(tol)))
