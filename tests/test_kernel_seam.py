"""The kernel seam itself: one registry, the environment switches read in one place, numba entered through
one lazy helper, the four-thresholds loop, and commands that never import numba when the C kernels run."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from subnetscope.dtypes import DTYPES
from subnetscope.kernels import jit, native, registry
from subnetscope.kernels.thresholds import count_by_fours

SRC = Path(__file__).resolve().parents[1] / "src" / "subnetscope"
SWITCHES = ("SUBNETSCOPE_NO_NATIVE", "SUBNETSCOPE_NO_NUMBA", "SUBNETSCOPE_NO_AVX512")


def _sources() -> list[tuple[Path, ast.AST]]:
    return [(p, ast.parse(p.read_text(encoding="utf-8"))) for p in sorted(SRC.rglob("*.py"))]


def _child(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    src = str(SRC.parent)
    clean["PYTHONPATH"] = src + os.pathsep + clean.get("PYTHONPATH", "")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**clean, **env})
    assert p.returncode == 0, p.stderr
    return p.stdout.strip().splitlines()[-1]


# -- one registry --------------------------------------------------------------------------------------------


def test_numpy_is_always_a_backend_and_the_last():
    assert registry.BACKENDS[-1] == "numpy"
    assert (
        tuple(
            b
            for b in ("native", "numba", "numpy")
            if b == "numpy" or (native.AVAILABLE if b == "native" else jit.AVAILABLE)
        )
        == registry.BACKENDS
    )


@pytest.mark.parametrize("kernel", sorted(registry.IMPLEMENTED))
def test_every_kernel_family_defaults_to_its_fastest_backend(kernel):
    have = registry.backends_for(kernel)
    assert have[-1] == "numpy"
    assert registry.pick_backend(None, DTYPES["BF16"], kernel) == have[0]
    for b in have:
        assert registry.pick_backend(b, DTYPES["BF16"], kernel) == b


def test_the_ulp_and_magnitude_kernels_never_pick_c():
    for kernel in ("ulp", "magnitude"):
        assert "native" not in registry.backends_for(kernel)
        assert registry.pick_backend(None, None, kernel) != "native"


def test_an_unknown_backend_is_refused_by_name():
    with pytest.raises(ValueError, match=r"^kernel backend 'cuda' is not available here \(have .*numpy\)$"):
        registry.pick_backend("cuda", None, "series")


@pytest.mark.skipif(not native.AVAILABLE, reason="C extension not built")
def test_a_backend_a_kernel_lacks_is_refused_by_name():
    want = r"^the ulp kernel has no 'native' backend \(have (numba, )?numpy\)$"
    with pytest.raises(ValueError, match=want):
        registry.pick_backend("native", DTYPES["BF16"], "ulp")
    from subnetscope import magnitude_bins as mb

    dt = DTYPES["BF16"]
    p = np.zeros(1, np.uint8)
    with pytest.raises(ValueError, match=r"^the magnitude kernel has no 'native' backend"):
        mb.count_local(np.zeros(8, np.uint16), dt, p, p, mb.local_hist(dt), backend="native")


def test_an_unknown_kernel_family_is_a_key_error():
    with pytest.raises(KeyError, match="gemm"):
        registry.pick_backend(None, None, "gemm")


# -- the environment switches, read once in kernels/env.py ---------------------------------------------------


def test_the_switches_are_named_only_in_kernels_env():
    named = sorted(
        str(p.relative_to(SRC))
        for p, tree in _sources()
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in SWITCHES
    )
    assert named == ["kernels/env.py"] * 3


@pytest.mark.parametrize(
    ("env", "want"),
    [
        ({"SUBNETSCOPE_NO_NATIVE": "1"}, "('numba', 'numpy') numba False"),
        ({"SUBNETSCOPE_NO_NATIVE": "1", "SUBNETSCOPE_NO_NUMBA": "yes"}, "('numpy',) numpy False"),
        ({"SUBNETSCOPE_NO_NATIVE": "1", "SUBNETSCOPE_NO_NUMBA": "0"}, "('numba', 'numpy') numba False"),
        ({"SUBNETSCOPE_NO_NATIVE": " 0 ", "SUBNETSCOPE_NO_NUMBA": "1"}, "('native', 'numpy') native False"),
    ],
)
def test_the_switches_choose_the_backends_of_a_process(env, want):
    if "native" in want and not native.AVAILABLE:
        pytest.skip("C extension not built")
    if "numba" in want and not jit.AVAILABLE:
        pytest.skip("numba not available")
    code = (
        "import sys; from subnetscope.kernels import registry as r\n"
        "print(r.BACKENDS, r.pick_backend(None, None, 'compare'), 'numba' in sys.modules)"
    )
    assert _child(code, **env) == want


@pytest.mark.skipif(not native.AVAILABLE, reason="C extension not built")
def test_no_avx512_is_read_when_the_extension_loads():
    code = "from subnetscope.kernels import native; print(native.AVAILABLE, native.avx512_level())"
    assert _child(code, SUBNETSCOPE_NO_AVX512="1") == "True 0"


# -- numba, through one lazy helper --------------------------------------------------------------------------


def test_numba_is_imported_only_by_kernels_jit():
    importers = sorted(
        {
            str(p.relative_to(SRC))
            for p, tree in _sources()
            for node in ast.walk(tree)
            if (isinstance(node, ast.Import) and any(a.name.split(".")[0] == "numba" for a in node.names))
            or (isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "numba")
        }
    )
    assert importers == ["kernels/jit.py"]


def test_a_lazy_jit_without_numba_says_so():
    code = (
        "from subnetscope.kernels import compare\ntry:\n compare._jit()\nexcept RuntimeError as e:\n print(e)"
    )
    assert _child(code, SUBNETSCOPE_NO_NUMBA="1") == (
        "numba is not available here (not installed, or SUBNETSCOPE_NO_NUMBA=1)"
    )


_helper_j: Any = None  # bound by the LazyJit of the next test


def _helper(x):  # pragma: no cover - jitted
    return x + 1


def _kernel(x):  # pragma: no cover - jitted
    return _helper_j(x) * 2


@pytest.mark.skipif(not jit.AVAILABLE, reason="numba not available")
def test_a_lazy_jit_compiles_once_and_binds_its_helpers():
    lazy = jit.LazyJit(globals(), kernels={"k": _kernel}, inline={"_helper_j": _helper})
    assert _helper_j is None  # nothing happens before the first call
    first = lazy()
    assert lazy() is first
    assert first.k(20) == 42
    assert _helper_j is not None


# -- any number of tolerances, four at a time ----------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, 4, 5, 8, 9])
def test_count_by_fours_pads_the_last_group_and_adds_the_extras_once(k):
    thr = np.arange(1, k + 1, dtype=np.float64) * 10.0
    calls = []

    def count4(t4):
        calls.append(t4.tolist())
        return [int(t) for t in t4] + [7, 8, 9]

    out = np.zeros(k + 3, dtype=np.int64)
    count_by_fours(thr, out, count4)
    assert out.tolist() == [10 * (j + 1) for j in range(k)] + [7, 8, 9]
    assert len(calls) == -(-k // 4)
    assert calls[-1][-1] == 10.0 * k  # padded with the last threshold


def test_count_by_fours_with_no_threshold_calls_nothing():
    out = np.zeros(3, dtype=np.int64)
    count_by_fours(np.zeros(0), out, lambda t4: pytest.fail("called"))
    assert out.tolist() == [0, 0, 0]


# -- the commands that run on the C kernels never import numba -----------------------------------------------


@pytest.mark.skipif(not native.AVAILABLE, reason="C extension not built")
def test_compare_mask_series_and_delta_do_not_import_numba(llama_pair, tmp_path):
    bdir, tdir, *_ = llama_pair
    runs = [
        ["compare", str(bdir), str(tdir), "--format", "json", "--mask-out", str(tmp_path / "c.mask")],
        ["mask", str(bdir), str(tdir), "-o", str(tmp_path / "m.mask")],
        ["series", str(bdir), str(tdir), str(bdir), "--format", "json"],
        ["delta", "export", str(bdir), str(tdir), "-o", str(tmp_path / "d")],
        ["delta", "apply", str(bdir), str(tmp_path / "d"), "-o", str(tmp_path / "r")],
    ]
    code = (
        "import sys\nfrom subnetscope.cli import main\n"
        f"for argv in {runs!r}:\n"
        "    try:\n        main(argv)\n"
        "    except SystemExit as e:\n        assert not e.code, (argv, e.code)\n"
        "print('numba' in sys.modules, 'subnetscope.kernels.native' in sys.modules)"
    )
    assert _child(code) == "False True"


# -- the extension: where it lives, which sources built it ---------------------------------------------------


def test_the_abi_guard_matches_the_c_header():
    header = (SRC / "kernels" / "csrc" / "native.h").read_text(encoding="utf-8")
    assert f"#define SS_ABI_VERSION {native.ABI_VERSION}\n" in header


@pytest.mark.skipif(not native.AVAILABLE, reason="C extension not built")
def test_the_extension_is_loaded_from_the_kernels_package():
    import importlib

    mod = importlib.import_module("subnetscope.kernels._native")
    assert Path(mod.__file__).parent == SRC / "kernels"
    assert native._LIB.ss_abi_version() == native.ABI_VERSION
    with pytest.raises(ImportError):
        importlib.import_module("subnetscope._native")  # the old place: a stale build there is never used
