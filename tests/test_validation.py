"""Every public entry point checks its arguments and raises the package's typed error naming the argument.

Before: ``compare(..., jobs=0)`` ran, ``compare(..., tolerances=["abc"])`` raised a bare ``ValueError``,
``MaskWriter(tolerance=-1)`` wrote a mask. Checks run before any input is opened or any output created:
the inputs below need not exist, and no output may appear.
"""

from __future__ import annotations

import math

import pytest

from subnetscope import validate
from subnetscope.errors import SubnetscopeError, UsageError

NAN = float("nan")
INF = float("inf")


def _compare(**kw):
    from subnetscope.comparison import compare

    return lambda b, t, out: compare(b, t, **kw)


def _series(**kw):
    from subnetscope.series import series

    return lambda b, t, out: series(b, [t], **kw)


def _overlap(**kw):
    from subnetscope.overlap import overlap

    return lambda b, t, out: overlap(out / "m1.mask", out / "m2.mask", **kw)


def _overlap_deltas(**kw):
    from subnetscope.overlap import overlap_deltas

    return lambda b, t, out: overlap_deltas(b, t, t, **kw)


def _rank(**kw):
    from subnetscope.anatomy.rank import rank_report

    return lambda b, t, out: rank_report(b, t, device="cpu", **kw)


def _export(**kw):
    from subnetscope.delta import export_delta

    return lambda b, t, out: export_delta(b, t, out / "delta", **kw)


def _apply(**kw):
    from subnetscope.delta import apply_delta

    return lambda b, t, out: apply_delta(b, out / "no-delta", out / "rebuilt", **kw)


def _conjecture(**kw):
    from subnetscope.train.sub_vs_full import conjecture

    return lambda b, t, out: conjecture(b, t, t, **kw)


def _tracker(**kw):
    from subnetscope.train import UpdateTracker

    return lambda b, t, out: UpdateTracker(out / "track", **kw)


def _mask_writer(**kw):
    from subnetscope.fingerprint import Fingerprint
    from subnetscope.maskfile import MaskWriter

    args = {"tolerance": 1e-5, "semantics": "exact", **kw}
    fp = Fingerprint("0" * 64, "0" * 64, 1, 8)
    return lambda b, t, out: MaskWriter(out / "w.mask", {"w": (8,)}, fp, **args)


def _ulp(**kw):
    from subnetscope.anatomy.ulp import ULPHistograms

    args = {"tolerances": [1e-5], **kw}
    return lambda b, t, out: ULPHistograms(**args)


def _compare_ulp(**kw):
    from subnetscope.anatomy.ulp import compare_ulp

    return lambda b, t, out: compare_ulp(b, t, [1e-5], **kw)


def _delta_rank(**kw):
    import numpy as np

    from subnetscope.anatomy.rank import delta_rank

    return lambda b, t, out: delta_rank(np.ones((3, 3), np.float32), **kw)


def _spectrum(**kw):
    import numpy as np

    from subnetscope.anatomy.spectrum import spectrum_metrics

    args = {"k": 1, **kw}
    w = np.ones((3, 3), np.float32)
    return lambda b, t, out: spectrum_metrics(w, w, **args)


# (label, call(base, target, tmp) -> anything, fragment of the message)
CASES = [
    ("compare jobs=0", _compare(jobs=0), "jobs=0 must be at least 1"),
    ("compare jobs=-2", _compare(jobs=-2), "jobs=-2 must be at least 1"),
    ("compare jobs=1.5", _compare(jobs=1.5), "jobs=1.5 is not an integer"),
    ("compare jobs='2'", _compare(jobs="2"), "jobs='2' is not an integer"),
    ("compare jobs=True", _compare(jobs=True), "jobs=True is not an integer"),
    ("compare tolerances=['abc']", _compare(tolerances=["abc"]), "tolerances='abc' is not a number"),
    ("compare tolerances=[1e-5, 'x']", _compare(tolerances=[1e-5, "x"]), "tolerances[1]='x' is not a number"),
    ("compare tolerances='1e-5'", _compare(tolerances="1e-5"), "tolerances='1e-5' is not a list of numbers"),
    ("compare tolerances=None", _compare(tolerances=None), "tolerances=None is not a list of numbers"),
    ("compare tolerances=[nan]", _compare(tolerances=[NAN]), "tolerances=nan is not a finite non-negative"),
    ("compare tolerances=[inf]", _compare(tolerances=[INF]), "tolerances=inf is not a finite non-negative"),
    ("compare tolerances=[-1e-5]", _compare(tolerances=[-1e-5]), "tolerances=-1e-05 is not a finite"),
    ("compare tolerances=[True]", _compare(tolerances=[True]), "tolerances=True is not a number"),
    ("compare tolerances=[]", _compare(tolerances=[]), "tolerances: no tolerance given"),
    ("compare duplicate tolerances", _compare(tolerances=[1e-5, 1e-5]), "duplicate tolerances"),
    ("compare semantics='EXACT'", _compare(semantics="EXACT"), "unknown semantics 'EXACT'"),
    ("compare semantics=None", _compare(semantics=None), "unknown semantics None"),
    ("compare chunk_elements=0", _compare(chunk_elements=0), "chunk_elements=0 must be at least 8"),
    ("compare chunk_elements=4", _compare(chunk_elements=4), "chunk_elements=4 must be at least 8"),
    ("compare chunk_elements='64'", _compare(chunk_elements="64"), "chunk_elements='64' is not an integer"),
    ("compare mask_tolerance=-1", _compare(mask_out="m.mask", mask_tolerance=-1), "mask_tolerance=-1.0 is not"),
    ("compare mask_tolerance=nan", _compare(mask_out="m.mask", mask_tolerance=NAN), "mask_tolerance=nan"),
    ("compare mask_tolerance='1e-5'", _compare(mask_tolerance="1e-5"), "mask_tolerance='1e-5' is not a number"),
    ("compare executor='gpu'", _compare(executor="gpu"), "unknown executor 'gpu'"),
    ("series tolerance=-1", _series(tolerance=-1), "tolerance=-1.0 is not a finite non-negative"),
    ("series tolerance='1e-5'", _series(tolerance="1e-5"), "tolerance='1e-5' is not a number"),
    ("series tolerance=nan", _series(tolerance=NAN), "tolerance=nan is not a finite"),
    ("series jobs=0", _series(jobs=0), "jobs=0 must be at least 1"),
    ("series chunk_elements=-8", _series(chunk_elements=-8), "chunk_elements=-8 must be at least 8"),
    ("series semantics='Exact'", _series(semantics="Exact"), "unknown semantics 'Exact'"),
    ("series executor='gpu'", _series(executor="gpu"), "unknown executor 'gpu'"),
    ("overlap jobs=0", _overlap(jobs=0), "jobs=0 must be at least 1"),
    ("overlap chunk_elements=1", _overlap(chunk_elements=1), "chunk_elements=1 must be at least 8"),
    ("overlap_deltas tolerance='x'", _overlap_deltas(tolerance="x"), "tolerance='x' is not a number"),
    ("overlap_deltas tolerance=inf", _overlap_deltas(tolerance=INF), "tolerance=inf is not a finite"),
    ("overlap_deltas jobs=0", _overlap_deltas(jobs=0), "jobs=0 must be at least 1"),
    ("rank sample=0", _rank(sample=0), "sample=0 must be at least 1"),
    ("rank sample=2.5", _rank(sample=2.5), "sample=2.5 is not an integer"),
    ("rank spectrum_k=0", _rank(spectrum_k=0), "spectrum_k=0 must be at least 1"),
    ("rank rtol_multipliers=[0]", _rank(rtol_multipliers=[0]), "rtol_multipliers[0]=0 is not a finite positive"),
    ("rank rtol_multipliers=['a']", _rank(rtol_multipliers=["a"]), "rtol_multipliers[0]='a' is not a finite"),
    ("rank rtol_multipliers=[]", _rank(rtol_multipliers=[]), "rtol_multipliers: no value given"),
    ("rank rtol_multipliers=[nan]", _rank(rtol_multipliers=[1, NAN]), "rtol_multipliers[1]=nan"),
    ("rank layers='0,1'", _rank(layers="0,1"), "layers='0,1' is not a list of layer numbers"),
    ("rank layers=[-1]", _rank(layers=[-1]), "layers[0]=-1 must be at least 0"),
    ("rank seed='1'", _rank(seed="1"), "seed='1' is not an integer"),
    ("export chunk_elements=12", _export(chunk_elements=12), "chunk_elements=12 is not a multiple of 8"),
    ("export chunk_elements=0", _export(chunk_elements=0), "chunk_elements=0 must be at least 8"),
    ("export jobs=0", _export(jobs=0), "jobs=0 must be at least 1"),
    ("export zstd_level=99", _export(zstd_level=99), "zstd_level=99 must be at most 22"),
    ("export zstd_level='1'", _export(zstd_level="1"), "zstd_level='1' is not an integer"),
    ("export max_file_bytes=0", _export(max_file_bytes=0), "max_file_bytes=0 must be at least 1"),
    ("apply jobs=0", _apply(jobs=0), "jobs=0 must be at least 1"),
    ("apply max_shard_bytes=0", _apply(max_shard_bytes=0), "max_shard_bytes=0 must be at least 1"),
    ("apply max_shard_bytes=1.5", _apply(max_shard_bytes=1.5), "max_shard_bytes=1.5 is not an integer"),
    ("conjecture tolerances=['abc']", _conjecture(tolerances=["abc"]), "tolerances='abc' is not a number"),
    ("conjecture subnetwork_tolerance=-1", _conjecture(subnetwork_tolerance=-1), "subnetwork_tolerance=-1.0"),
    ("conjecture jobs=0", _conjecture(jobs=0), "jobs=0 must be at least 1"),
    ("conjecture semantics='x'", _conjecture(semantics="x"), "unknown semantics 'x'"),
    ("UpdateTracker every=0", _tracker(every=0), "every=0 must be at least 1"),
    ("UpdateTracker every=1.5", _tracker(every=1.5), "every=1.5 is not an integer"),
    ("UpdateTracker tolerances=['a']", _tracker(tolerances=["a"]), "tolerances='a' is not a number"),
    ("UpdateTracker tolerances=[-1]", _tracker(tolerances=[-1]), "tolerances=-1.0 is not a finite"),
    ("ULPHistograms step_size=-1", _ulp(step_size=-1.0), "step_size=-1.0 is not a finite positive number"),
    ("ULPHistograms step_size='1e-6'", _ulp(step_size="1e-6"), "step_size='1e-6' is not a finite positive"),
    ("ULPHistograms tolerances=[nan]", _ulp(tolerances=[NAN]), "tolerances=nan is not a finite"),
    ("compare_ulp step_size=0", _compare_ulp(step_size=0), "step_size=0 is not a finite positive number"),
    ("delta_rank rtol_multipliers=[-1]", _delta_rank(rtol_multipliers=[-1]), "rtol_multipliers[0]=-1"),
    ("spectrum_metrics k=0", _spectrum(k=0), "k=0 must be at least 1"),
    ("spectrum_metrics principal_density=2", _spectrum(principal_density=2.0), "principal_density=2.0 is above 1"),
    ("MaskWriter tolerance=-1", _mask_writer(tolerance=-1), "tolerance=-1.0 is not a finite non-negative"),
    ("MaskWriter tolerance=nan", _mask_writer(tolerance=NAN), "tolerance=nan is not a finite"),
    ("MaskWriter tolerance='0.1'", _mask_writer(tolerance="0.1"), "tolerance='0.1' is not a number"),
    ("MaskWriter semantics='EXACT'", _mask_writer(semantics="EXACT"), "unknown semantics 'EXACT'"),
    ("MaskWriter extra_metadata sets tolerance", _mask_writer(extra_metadata={"tolerance": "0.5"}),
     "extra_metadata may not set tolerance"),
]  # fmt: skip


@pytest.mark.parametrize(("label", "call", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_entry_point_refuses_bad_argument(tmp_path, label, call, fragment):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UsageError) as ei:
        call(tmp_path / "base-not-read", tmp_path / "target-not-read", out)
    msg = str(ei.value)
    assert fragment in msg, msg
    assert ei.value.hint and isinstance(ei.value, SubnetscopeError)
    assert list(out.iterdir()) == []  # refused before anything was written


def test_valid_arguments_are_normalised():
    assert validate.tolerances([0, 1e-5]) == [0.0, 1e-5]
    assert validate.tolerances(1e-5) == [1e-5]  # one number is a list of one
    assert validate.tolerance(0) == 0.0 and isinstance(validate.tolerance(0), float)
    import numpy as np

    assert validate.jobs(np.int64(3)) == 3 and validate.jobs(None) is None
    assert validate.tolerance(np.float32(0.5)) == 0.5
    assert validate.chunk_elements(None) is None and validate.chunk_elements(16, multiple_of_8=True) == 16
    assert validate.semantics("reference") == "reference"
    assert validate.positive_reals((0.1, 1), "m") == [0.1, 1.0]
    assert math.isclose(validate.tolerances([1e-8, 1e-7])[1], 1e-7)


def test_the_command_line_uses_the_same_check(capsys, tmp_path):
    """``--mask-tol -1`` and ``--tol -1`` are refused by one rule, the library's, with the same words."""
    from subnetscope.cli import main

    lines = []
    for args in (["--tol", "-1"], ["--mask-out", str(tmp_path / "m.mask"), "--mask-tol", "-1"]):
        with pytest.raises(SystemExit) as e:
            main(["compare", "a", "b", *args])
        assert e.value.code == 2
        lines.append(capsys.readouterr().err)
    assert lines[0] == (
        "subnetscope: error: --tol=-1.0 is not a finite non-negative number; "
        "give a tolerance like 1e-5 (0 for bit identity)\n"
    )
    assert lines[1] == lines[0].replace("--tol=", "--mask-tol=")
    assert not (tmp_path / "m.mask").exists()
    with pytest.raises(UsageError) as ei:
        validate.tolerance(-1.0, "--tol")
    assert lines[0] == f"subnetscope: error: {ei.value.one_line()}\n"
