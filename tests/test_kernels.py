"""The fused kernel (C, numba and numpy backends) against the brute-force oracle, on constructed and random bits."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oracle import exact_counts, reference_counts
from subnetscope.dtypes import DTYPES, reference_threshold
from subnetscope.kernels import compare as kernels
from subnetscope.kernels import registry

FLOAT_CODES = ["BF16", "F16", "F32", "F64", "F8_E4M3", "F8_E5M2"]
TOLS = [0.0, 1e-8, 1e-7, 1e-6, 1e-5, 1e-3]
PATHS = list(registry.BACKENDS)


def run(a, b, code, tols, semantics="exact", mask_tol_index=0, backend=None):
    dt = DTYPES[code]
    order = sorted(range(len(tols)), key=lambda i: tols[i])
    st_tols = [tols[i] for i in order]
    if semantics == "reference":
        thr = np.array([reference_threshold(t, dt) for t in st_tols])
    else:
        thr = np.array(st_tols, dtype=np.float64)
    out = np.zeros(len(tols) + 3, dtype=np.int64)
    mask = np.zeros((a.size + 7) // 8, dtype=np.uint8)
    mk = order.index(mask_tol_index)
    kernels.count_chunk(a, b, dt, thr, semantics == "reference", out, mask, mk, backend=backend)
    unchanged = [0] * len(tols)
    for j, i in enumerate(order):
        unchanged[i] = int(out[j])
    k = len(tols)
    changed = np.unpackbits(mask, count=a.size, bitorder="little").astype(bool)
    return {
        "unchanged": unchanged,
        "identical": int(out[k]),
        "nonfinite_base": int(out[k + 1]),
        "nonfinite_target": int(out[k + 2]),
        "mask": changed,
    }


def random_pair(rng, code, n, scale):
    dt = DTYPES[code]
    bits = dt.bits_dtype
    if dt.itemsize <= 2:
        a = rng.integers(0, 1 << (8 * dt.itemsize), n, dtype=np.uint64).astype(bits)
    else:
        f = np.float32 if dt.itemsize == 4 else np.float64
        a = (rng.standard_normal(n) * scale).astype(f).view(bits)
    b = a.copy()
    sel = rng.random(n) < 0.5
    step = rng.integers(-3, 4, n)
    b[sel] = (a[sel].astype(np.int64) + step[sel]).astype(bits)
    return a, b


@pytest.mark.parametrize("backend", PATHS)
@pytest.mark.parametrize("code", FLOAT_CODES)
def test_random_against_oracle(code, backend):
    rng = np.random.default_rng(hash(code) % 2**32)
    for scale in (1e-7, 1e-3, 1.0):
        a, b = random_pair(rng, code, 4099, scale)
        got = run(a, b, code, TOLS, mask_tol_index=4, backend=backend)
        want = exact_counts(a, b, code, TOLS)
        assert got["unchanged"] == want["unchanged"]
        assert got["identical"] == want["identical"]
        assert got["nonfinite_base"] == want["nonfinite_base"]
        assert got["nonfinite_target"] == want["nonfinite_target"]
        assert np.array_equal(got["mask"], want["changed_mask"][4])


@pytest.mark.parametrize("backend", PATHS)
@pytest.mark.parametrize("code", ["BF16", "F16", "F32"])
def test_reference_semantics_matches_torch_isclose(code, backend):
    rng = np.random.default_rng(7)
    for scale in (1e-6, 1e-4, 1e-2):
        a, b = random_pair(rng, code, 5001, scale)
        got = run(a, b, code, TOLS[1:], semantics="reference", backend=backend)
        assert got["unchanged"] == reference_counts(a, b, code, TOLS[1:])


def bf16(x: float) -> int:
    import torch

    return int(torch.tensor([x], dtype=torch.bfloat16).view(torch.int16).item()) & 0xFFFF


def test_bf16_edge_cases_by_construction():
    pairs = [
        (0.0, -0.0),  # bit change, zero difference: unchanged at every tol, not identical
        (1.0, 1.0),  # identical
        (float("nan"), float("nan")),  # identical bits (NaN): identical
        (1.0, float("nan")),  # changed, target non-finite
        (float("inf"), float("inf")),  # identical, both non-finite
        (1e-5, 0.0),  # |Δ| = bf16(1e-5) = 1.0013580e-5 > 1e-5: changed at 1e-5 exactly
        (9.953975677490234e-06, 0.0),  # the bf16 just below 1e-5: unchanged at 1e-5
        (1e-40, 0.0),  # subnormal vs 0: |Δ| ~ 1e-40, unchanged at 1e-8
        (0.5, 0.50390625),  # one ulp at 0.5: 2**-8, changed everywhere
    ]
    a = np.array([bf16(x) for x, _ in pairs], dtype=np.uint16)
    b = np.array([bf16(y) for _, y in pairs], dtype=np.uint16)
    for backend in PATHS:
        got = run(a, b, "BF16", [1e-8, 1e-5], backend=backend)
        assert got["identical"] == 3
        # unchanged at 1e-8: identical 3 + (0,-0) + subnormal = 5; at 1e-5 also the bf16 below 1e-5 = 6
        assert got["unchanged"] == [5, 6]
        assert got["nonfinite_base"] == 2  # nan, inf
        assert got["nonfinite_target"] == 3  # nan, nan, inf
        ref = run(a, b, "BF16", [1e-8, 1e-5], semantics="reference", backend=backend)
        # the reference rounds the tolerance to bf16, so |Δ| == bf16(1e-5) is unchanged there
        assert ref["unchanged"] == [5, 7]


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(FLOAT_CODES),
    st.lists(st.integers(0, 2**16 - 1), min_size=1, max_size=200),
    st.lists(st.integers(-2, 2), min_size=1, max_size=200),
    st.lists(st.floats(0, 1e-2), min_size=1, max_size=4, unique=True),
)
def test_hypothesis_fast_path_equals_oracle(code, base_codes, steps, tols):
    dt = DTYPES[code]
    n = min(len(base_codes), len(steps))
    bits = dt.bits_dtype
    width = 8 * dt.itemsize
    a = (
        (np.array(base_codes[:n], dtype=np.uint64) << max(0, width - 16)).astype(bits)
        if width > 16
        else (np.array(base_codes[:n], dtype=np.uint64) % (1 << width)).astype(bits)
    )
    b = (a.astype(np.int64) + np.array(steps[:n]) * (1 << max(0, width - 16))).astype(np.uint64).astype(bits)
    want = exact_counts(a, b, code, tols)
    for backend in PATHS:
        got = run(a, b, code, tols, backend=backend)
        assert got["unchanged"] == want["unchanged"]
        assert got["identical"] == want["identical"]
        assert np.array_equal(got["mask"], want["changed_mask"][0])


def _bits(code: str, x: float) -> int:
    import torch

    from oracle import TORCH_DT

    t = torch.tensor([x], dtype=TORCH_DT[code])
    return int(t.view({1: torch.uint8, 2: torch.int16, 4: torch.int32}[t.element_size()]).item()) & (
        (1 << (8 * t.element_size())) - 1
    )


@pytest.mark.parametrize(("code", "big", "tiny"), [("BF16", 1.0, 2.0**-30), ("F32", 1.0, 2.0**-30),
                                                    ("F16", 1024.0, 2.0**-20)])  # fmt: skip
def test_float32_ties_are_decided_in_float64(code, big, tiny):
    """The C kernels take differences in float32 and recount a block in float64 when the float32
    difference equals float32(tol). Here |big - tiny| rounds to big in float32, while the tolerances just
    above the exact difference (big - tiny / 2) and just below it (big - 2 tiny) round to big as well: a
    float32 verdict would be wrong for one of them. The pairs sit at both ends of the 2048-element blocks."""
    rng = np.random.default_rng(3)
    n = 5000
    a, b = random_pair(rng, code, n, 1e-3)
    where = [0, 1, 2047, 2048, 2049, 4095, 4096, n - 1]
    a[where] = _bits(code, big)
    b[where] = _bits(code, tiny)
    a[3000], b[3000] = 0, _bits(code, big)  # |Δ| exactly big: a tie at tol big that float32 holds exactly
    tols = [big - tiny / 2, big - 2 * tiny, big, 1e-5]
    assert len({float(np.float32(t)) for t in tols[:3]}) == 1  # the three round to the same float32
    want = exact_counts(a, b, code, tols)
    assert want["changed_mask"][0][where].sum() == 0 and want["changed_mask"][1][where].all()
    for backend in PATHS:
        for mk in range(len(tols)):
            got = run(a, b, code, tols, mask_tol_index=mk, backend=backend)
            assert got["unchanged"] == want["unchanged"], backend
            assert np.array_equal(got["mask"], want["changed_mask"][mk]), (backend, mk)


def test_c_kernels_are_built_where_a_compiler_is():
    """`pip install -e .` compiles the C kernels when a C compiler exists; a silent fallback would leave
    them untested."""
    import shutil

    from subnetscope.kernels import native

    if os.environ.get("SUBNETSCOPE_NO_NATIVE", "").strip() not in ("", "0"):
        pytest.skip("SUBNETSCOPE_NO_NATIVE is set")
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler here: the numba kernels run")
    assert native.AVAILABLE, "the C kernels were not built: rerun `pip install -e .` and read its output"
    assert registry.BACKENDS[0] == "native"


def test_an_unavailable_backend_is_refused_by_name():
    a = np.zeros(8, dtype=np.uint16)
    out = np.zeros(4, dtype=np.int64)
    with pytest.raises(ValueError, match=r"kernel backend 'cuda' is not available here \(have .*numpy\)"):
        kernels.count_chunk(a, a, DTYPES["BF16"], np.array([1e-5]), False, out, np.zeros(0, np.uint8),
                            backend="cuda")  # fmt: skip


@pytest.mark.parametrize("code", ["F8_E4M3", "F8_E5M2"])
@pytest.mark.parametrize("semantics", ["exact", "reference"])
def test_every_pair_of_fp8_codes(code, semantics):
    """All 256 x 256 code pairs (NaN, Inf, subnormals, ±0 included) on every backend: the C kernels decode
    FP8 by bit arithmetic, not by the table the others use."""
    a = np.repeat(np.arange(256, dtype=np.uint8), 256)
    b = np.tile(np.arange(256, dtype=np.uint8), 256)
    tols = [0.0, 1e-3, 0.0625, 1.0, 240.0]
    want = run(a, b, code, tols, semantics, mask_tol_index=2, backend="numpy")
    if semantics == "exact":
        oracle = exact_counts(a, b, code, tols)
        assert want["unchanged"] == oracle["unchanged"]
    for backend in PATHS:
        got = run(a, b, code, tols, semantics, mask_tol_index=2, backend=backend)
        for key in ("unchanged", "identical", "nonfinite_base", "nonfinite_target"):
            assert got[key] == want[key], (backend, key)
        assert np.array_equal(got["mask"], want["mask"]), backend
