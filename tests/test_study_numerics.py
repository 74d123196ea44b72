"""The study's numerics worker (subnetscope.study.numerics): the pinned kernels are really in force in the
spawned process, errors come back with their hint, and a bad mode is refused."""

from __future__ import annotations

import pytest

from subnetscope.errors import InputNotFoundError
from subnetscope.study.numerics import NumericsError, NumericsWorker, describe, numerics_mode


def _raise_not_found(path: str) -> None:
    raise InputNotFoundError(f"{path}: no such model", "give a model directory")


@pytest.mark.slow
def test_portable_worker_is_pinned():
    with NumericsWorker("portable", threads=2) as w:
        info = w.info
        assert info == {}  # nothing started yet
        assert w.call(sorted, [3, 1, 2]) == [1, 2, 3]
        info = w.info
        with pytest.raises(InputNotFoundError) as e:
            w.call(_raise_not_found, "/nowhere")
        assert e.value.message == "/nowhere: no such model" and e.value.hint == "give a model directory"
    assert not w.started
    assert info["env"] == {"MKL_CBWR": "AVX2,STRICT", "ATEN_CPU_CAPABILITY": "avx2"}
    assert info["threads"] == 2
    if not info["mkl"]:
        pytest.skip("torch without MKL: no strict reproducible matrix products")
    assert info["cpu_capability"] == "AVX2"
    assert info["thread_independent"] is True
    assert info["reproducible"] is True and info["why_not"] == []


@pytest.mark.slow
def test_native_worker_is_marked_not_reproducible():
    with NumericsWorker("native", threads=1) as w:
        w.call(int)
        native = w.info
    assert native["mode"] == "native" and native["id"] == "native"
    assert native["reproducible"] is False
    assert "SUBNETSCOPE_NUMERICS=native" in native["why_not"][-1]


def test_bad_mode(monkeypatch):
    monkeypatch.setenv("SUBNETSCOPE_NUMERICS", "fast")
    with pytest.raises(NumericsError) as e:
        numerics_mode()
    assert e.value.message == "SUBNETSCOPE_NUMERICS='fast' is not a numerics mode"
    assert "portable" in (e.value.hint or "")
    monkeypatch.setenv("SUBNETSCOPE_NUMERICS", " Native ")
    assert numerics_mode() == "native"
    monkeypatch.delenv("SUBNETSCOPE_NUMERICS")
    assert numerics_mode() == "portable"


def test_describe_in_this_process_says_why_not():
    """In the test process nothing pinned the kernels before torch started: describe() must not claim
    reproducibility unless the kernels really are AVX2 and thread independent."""
    info = describe("portable")
    assert info["reproducible"] == (
        info["mkl"] and info["cpu_capability"] == "AVX2" and info["thread_independent"]
    )
    assert len(info["fingerprint"]) == 16
