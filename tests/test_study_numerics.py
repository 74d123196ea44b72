"""The study's numerics worker (subnetscope.study.numerics): the pinned kernels are really in force in the
spawned process, errors come back with their hint, and a bad mode is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

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
    assert "MKL_CBWR" not in os.environ and "ATEN_CPU_CAPABILITY" not in os.environ  # restored here
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


@pytest.mark.slow
def test_pinned_even_when_the_callers_script_computes_with_torch_first(tmp_path):
    """The spawned worker re-imports the caller's main script before any code of ours runs in it; a script
    that multiplies matrices at import time must still get a pinned worker (the environment is set when
    the process is spawned, not by its initializer)."""
    script = tmp_path / "caller.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, sys
            import torch
            torch.ones(64, 4096) @ torch.ones(4096, 64)  # MKL and the dispatcher start here, in both processes
            torch.exp(torch.ones(1000))
            from subnetscope.study.numerics import NumericsWorker

            if __name__ == "__main__":
                with NumericsWorker("portable", threads=2) as w:
                    w.call(int)
                print(json.dumps(w.info))
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("MKL_CBWR", None)
    env.pop("ATEN_CPU_CAPABILITY", None)
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info["env"] == {"MKL_CBWR": "AVX2,STRICT", "ATEN_CPU_CAPABILITY": "avx2"}
    if not info["mkl"]:
        pytest.skip("torch without MKL")
    assert info["cpu_capability"] == "AVX2" and info["reproducible"] is True


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_worker_ends_with_its_parent(tmp_path):
    """A study killed mid-training must not leave its worker training on."""
    import signal
    import time

    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, time
            from subnetscope.study.numerics import NumericsWorker

            if __name__ == "__main__":
                w = NumericsWorker("native", 1)
                print(w.call(os.getpid), flush=True)
                w.call(time.sleep, 120)
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        worker = int(proc.stdout.readline())
        os.kill(worker, 0)  # alive
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        for _ in range(100):
            try:
                with open(f"/proc/{worker}/stat") as f:  # a zombie waiting for init to reap it is gone too
                    if f.read().split(") ")[1].startswith("Z"):
                        break
            except FileNotFoundError:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"worker {worker} still running 10 s after its parent was killed")
    finally:
        if proc.poll() is None:
            proc.kill()
