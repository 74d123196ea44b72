"""Executors: serial, threads, processes and Ray give the same report and the same mask bytes."""

from __future__ import annotations

import sys

import pytest
from click.testing import CliRunner

import subnetscope
from scale_helpers import CrashOnce, comparable, fp8_pair, save_fp8
from subnetscope.cli import cli
from subnetscope.engine.executors import (
    AutoExecutor,
    ExecutorError,
    ProcessExecutor,
    RayExecutor,
    Task,
    make_executor,
    make_tasks,
    run_task,
)
from subnetscope.engine.executors.tasks import raise_remote
from subnetscope.engine.job import Job
from subnetscope.errors import CheckpointFormatError, UsageError
from subnetscope.io.checkpoint import open_checkpoint
from subnetscope.measures.compare import PairCounter, Thresholds, pair_rows
from subnetscope.plan import make_plan

TOLS = [1e-8, 1e-6, 1e-5]
VICTIM = "model.layers.1.mlp.up_proj.weight"


def _run(bdir, tdir, tmp_path, tag, **kw):
    mask = tmp_path / f"{tag}.mask"
    r = subnetscope.compare(bdir, tdir, TOLS, mask_out=mask, **kw)
    return comparable(r.to_json()), mask.read_bytes()


@pytest.fixture(scope="module")
def serial(llama_pair, tmp_path_factory):
    bdir, tdir, *_ = llama_pair
    return _run(bdir, tdir, tmp_path_factory.mktemp("serial"), "serial", executor="serial")


def _job(plan, chunk=1000):
    th = Thresholds(TOLS, "exact", None)
    return Job(pair_rows(plan.pairs), [PairCounter(th, None)], chunk)


def test_make_tasks_cuts_contiguous_runs_of_bounded_size(llama_pair):
    bdir, tdir, *_ = llama_pair
    plan = make_plan(open_checkpoint(bdir), open_checkpoint(tdir))
    job = _job(plan)
    tasks = make_tasks(job, 1000, workers=2, max_elements=5000)
    flat = [u for t in tasks for u in t.units]
    assert flat == sorted(flat)  # every unit exactly once, in row order: each task a contiguous run
    assert sum(u[2] for u in flat) == sum(p.compare_numel for p in plan.pairs)
    assert len({(u[0], u[1]) for u in flat}) == len(flat)
    total = sum(t.elements for t in tasks)
    assert len(tasks) >= max(8, -(-total // 5000))  # four per worker, or more to stay under the bound
    for t in tasks:
        assert t.elements <= 5000 + 1000  # a run ends at the first unit past its share
        rows = {u[0] for u in t.units}
        assert {f for f, _ in t.files} == {str(x.path) for i in rows for x in job.rows[i].infos}
        assert t.nbytes == sum(u[2] * 4 for u in t.units)  # bf16 on both sides
    one = make_tasks(job, 1000, workers=1)  # a small pass is not cut up
    assert len(one) == 1 and len(one[0].units) == len(flat)


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_same_report_and_mask_as_serial(llama_pair, serial, tmp_path, executor):
    bdir, tdir, *_ = llama_pair
    ex = make_executor(executor, jobs=2)
    if isinstance(ex, ProcessExecutor):
        ex.task_elements = 3000  # many small tasks, completing in any order
    got = _run(bdir, tdir, tmp_path, executor, executor=ex)
    assert got == serial
    if isinstance(ex, ProcessExecutor):
        assert ex.last_run["tasks"] > 4 and ex.last_run["retries"] == 0 and ex.last_run["workers"] == 2


def test_auto_picks_processes_only_for_large_plain_passes(llama_pair, serial, tmp_path):
    bdir, tdir, *_ = llama_pair
    plan = make_plan(open_checkpoint(bdir), open_checkpoint(tdir))
    job = _job(plan)
    fork = sys.platform.startswith("linux")
    assert AutoExecutor(2, min_bytes=0).pick(job).name == ("processes" if fork else "threads")
    assert AutoExecutor(2).pick(job).name == "threads"  # a small pass: threads start faster
    assert AutoExecutor(1, min_bytes=0).pick(job).name == "threads"  # one job
    # forked workers inherit the job: a consumer that does not pickle still runs there
    job.consumers = [*job.consumers, CrashOnce(lambda: 0, "y")]
    assert AutoExecutor(2, min_bytes=0).pick(job).name == ("processes" if fork else "threads")
    ex = AutoExecutor(2, min_bytes=0)
    assert _run(bdir, tdir, tmp_path, "auto", executor=ex) == serial
    assert ex.chose == ("processes" if fork else "threads")


def test_auto_sends_ulp_histograms_to_workers(llama_pair):
    from subnetscope.anatomy.ulp import ULPHistograms

    bdir, tdir, *_ = llama_pair
    want = subnetscope.compare(bdir, tdir, TOLS, executor="serial", consumers=[ULPHistograms(TOLS)])
    ex = AutoExecutor(2, min_bytes=0)
    got = subnetscope.compare(bdir, tdir, TOLS, executor=ex, consumers=[ULPHistograms(TOLS)])
    assert ex.chose == ("processes" if sys.platform.startswith("linux") else "threads")
    assert comparable(got.to_json()) == comparable(want.to_json())
    assert any("ulp" in str(t.extra) for t in got.tensors)


def test_processes_carry_consumers_fp8(tmp_path):
    base, target, _ = fp8_pair(seed=4)
    b, t = save_fp8(base, tmp_path / "b"), save_fp8(target, tmp_path / "t", shards=2)
    want = subnetscope.compare(b, t, TOLS, executor="serial").to_json()
    got = subnetscope.compare(b, t, TOLS, executor=ProcessExecutor(jobs=2, task_elements=200)).to_json()
    assert got == want and "fp8" in got


def test_killed_process_worker_is_retried(llama_pair, serial, tmp_path):
    bdir, tdir, *_ = llama_pair
    crash = CrashOnce(str(tmp_path / "crashed"), VICTIM)
    ex = ProcessExecutor(jobs=2, task_elements=3000)
    got = _run(bdir, tdir, tmp_path, "crash", executor=ex, consumers=[crash])
    assert (tmp_path / "crashed").exists()  # it really died once
    assert ex.last_run["retries"] == 1
    want = comparable(subnetscope.compare(bdir, tdir, TOLS, consumers=[crash], executor="serial",
                                          mask_out=tmp_path / "s.mask").to_json())  # fmt: skip
    assert got == (want, serial[1])


def test_worker_that_always_dies_fails_clearly(llama_pair, tmp_path):
    bdir, tdir, *_ = llama_pair
    crash = CrashOnce(str(tmp_path / "m"), VICTIM, always=True)
    with pytest.raises(ExecutorError, match=r"a worker process died 2 times; \d+ task\(s\) unfinished"):
        subnetscope.compare(
            bdir, tdir, TOLS, consumers=[crash], executor=ProcessExecutor(jobs=2, max_retries=1)
        )


def test_worker_errors_keep_their_type_and_hint(llama_pair, tmp_path):
    bdir, tdir, *_ = llama_pair
    plan = make_plan(open_checkpoint(bdir), open_checkpoint(tdir))
    job = _job(plan)
    task = make_tasks(job, 1000, workers=1)[0]
    path = task.files[0][0]
    bad = Task(task.index, task.units, ((path, 1),), task.nbytes, task.label)
    res = run_task(job, bad, 1000)
    assert res.error is not None and res.rows == []
    with pytest.raises(CheckpointFormatError, match="but 1 on the driver") as ei:
        raise_remote(res.error)
    assert "same revision everywhere" in (ei.value.hint or "")
    gone = Task(task.index, task.units, ((str(tmp_path / "missing.safetensors"), 1),), 0, "x")
    with pytest.raises(CheckpointFormatError, match="not found on worker node"):
        raise_remote(run_task(job, gone, 1000).error)


def test_executor_choice_errors(monkeypatch, llama_pair):
    with pytest.raises(UsageError, match="ray_address is only used with the ray executor"):
        make_executor("threads", ray_address="auto")
    with pytest.raises(UsageError, match="unknown executor 'gpu'"):
        make_executor("gpu")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    bdir, tdir, *_ = llama_pair
    with pytest.raises(ExecutorError, match="needs the 'ray' package") as ei:
        subnetscope.compare(bdir, tdir, executor="ray")
    assert "subnetscope[ray]" in (ei.value.hint or "")
    res = CliRunner().invoke(cli, ["compare", str(bdir), str(tdir), "--executor", "ray"])
    assert res.exit_code != 0 and isinstance(res.exception, ExecutorError)


def test_unreachable_ray_address_fails_fast(llama_pair):
    pytest.importorskip("ray")
    bdir, tdir, *_ = llama_pair
    with pytest.raises(ExecutorError, match=r"cannot reach the Ray cluster at 127\.0\.0\.1:1") as ei:
        subnetscope.compare(bdir, tdir, executor="ray", ray_address="127.0.0.1:1")
    assert "ray start --head" in (ei.value.hint or "")


class _Local:
    key = "local"

    def chunk(self, *a):
        return None

    def merge(self, *a):
        return None

    def finish(self, *a):
        return None


def test_unpicklable_consumer_runs_in_forked_workers_and_is_refused_by_spawned_ones(llama_pair):
    bdir, tdir, *_ = llama_pair
    local = _Local()
    local.fn = lambda: 0  # a lambda: cannot be pickled
    if sys.platform.startswith("linux"):
        r = subnetscope.compare(bdir, tdir, consumers=[local], executor=ProcessExecutor(jobs=2))
        assert r.to_json()["overall"] == subnetscope.compare(bdir, tdir).to_json()["overall"]
    with pytest.raises(UsageError, match="cannot be sent to process workers"):
        subnetscope.compare(
            bdir, tdir, consumers=[local], executor=ProcessExecutor(jobs=2, start_method="spawn")
        )


def test_cli_processes_json_equals_threads(llama_pair):
    bdir, tdir, *_ = llama_pair
    out = {}
    for ex in ("threads", "processes"):
        res = CliRunner().invoke(cli, ["compare", str(bdir), str(tdir), "--format", "json", "-j", "2",
                                       "--executor", ex], catch_exceptions=False)  # fmt: skip
        assert res.exit_code == 0
        out[ex] = res.stdout
    assert out["threads"] == out["processes"]


# -- Ray (a local instance, started once for the module) ------------------------------------------------------


@pytest.mark.slow
def test_ray_report_and_mask_equal_serial(ray_local, llama_pair, serial, tmp_path):
    bdir, tdir, *_ = llama_pair
    ex = RayExecutor(task_elements=3000)
    assert _run(bdir, tdir, tmp_path, "ray", executor=ex) == serial
    assert ex.last_run["tasks"] > 4 and ex.last_run["cluster_cpus"] == 2
    assert ray_local.is_initialized()  # a Ray it did not start is left running


@pytest.mark.slow
def test_ray_killed_worker_is_retried(ray_local, llama_pair, serial, tmp_path):
    bdir, tdir, *_ = llama_pair
    crash = CrashOnce(str(tmp_path / "crashed"), VICTIM)
    ex = RayExecutor(task_elements=3000, max_retries=2)
    got = _run(bdir, tdir, tmp_path, "ray_crash", executor=ex, consumers=[crash])
    assert (tmp_path / "crashed").exists()
    want = comparable(subnetscope.compare(bdir, tdir, TOLS, consumers=[crash], executor="serial",
                                          mask_out=tmp_path / "s.mask").to_json())  # fmt: skip
    assert got == (want, serial[1])
    # without retries the lost task is an error, not a silently missing tensor
    crash2 = CrashOnce(str(tmp_path / "crashed2"), VICTIM)
    with pytest.raises(ExecutorError, match=r"Ray task \d+: .* failed after 0 retries"):
        subnetscope.compare(
            bdir, tdir, TOLS, consumers=[crash2], executor=RayExecutor(task_elements=3000, max_retries=0)
        )
