"""One engine under every pass: each pass gives the same result on every executor, and a run killed with
SIGKILL and resumed gives the same result as an uninterrupted one."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import subnetscope
from factory import perturb, save_checkpoint
from scale_helpers import comparable
from subnetscope.anatomy.rank import rank_report
from subnetscope.delta import apply_delta, export_delta
from subnetscope.engine.executors import ProcessExecutor, RayExecutor, SerialExecutor, ThreadExecutor
from subnetscope.engine.resume import ResumeMismatchError
from subnetscope.overlap import overlap, overlap_deltas
from subnetscope.series import series

TOLS = [1e-8, 1e-6, 1e-5]
FORK = sys.platform.startswith("linux")


def executors():
    """One of each executor, with small tasks so that work is cut across tensors and completes in any order."""
    out = [SerialExecutor(), ThreadExecutor(jobs=3)]
    if FORK:
        out.append(ProcessExecutor(jobs=2, task_elements=2000))
    return out


def tree_digest(d: Path) -> dict[str, str]:
    """sha256 of every file under ``d`` (relative names)."""
    return {
        str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(d.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def trio(llama_pair, tmp_path_factory):
    """base, target (the shared pair) and a second finetune of base, plus two masks."""
    bdir, tdir, base, target, _ = llama_pair
    root = tmp_path_factory.mktemp("trio")
    t2, _ = perturb(base, 0.1, seed=7)
    t2dir = save_checkpoint(t2, root / "t2", shards=1)
    m1, m2 = root / "1.mask", root / "2.mask"
    subnetscope.compare(bdir, tdir, [1e-5], mask_out=m1, executor="serial")
    subnetscope.compare(bdir, t2dir, [1e-5], mask_out=m2, executor="serial")
    return bdir, tdir, t2dir, m1, m2


def passes(trio, out: Path):
    """Every pass, as ``name -> fn(executor) -> comparable result``."""
    bdir, tdir, t2dir, m1, m2 = trio
    n = itertools.count()

    def cmp(ex):
        mask = out / f"m{next(n)}"
        r = subnetscope.compare(bdir, tdir, TOLS, mask_out=mask, executor=ex)
        return comparable(r.to_json()), mask.read_bytes()

    def delta(ex):
        d = out / f"d{next(n)}"
        export_delta(bdir, tdir, d, chunk_elements=512, executor=ex)
        return tree_digest(d)

    made: list[Path] = []

    def rebuilt(ex):
        if not made:  # one delta, small chunks and shards: tensors span many chunks and several shards
            made.append(out / "src-delta")
            export_delta(bdir, tdir, made[0], chunk_elements=512, executor="serial")
        o = out / f"a{next(n)}"
        apply_delta(bdir, made[0], o, max_shard_bytes=50_000, executor=ex)
        return tree_digest(o)

    return {
        "compare+mask": cmp,
        "series": lambda ex: series(bdir, [tdir, t2dir], executor=ex, chunk_elements=512).to_json(),
        "overlap": lambda ex: overlap(m1, m2, base=bdir, executor=ex, chunk_elements=512).to_json(),
        "overlap-deltas": lambda ex: overlap_deltas(
            bdir, tdir, t2dir, executor=ex, chunk_elements=512
        ).to_json(),
        "delta-export": delta,
        "delta-apply": rebuilt,
        "rank": lambda ex: rank_report(
            bdir, tdir, device="cpu", rtol_multipliers=[0.5, 2], executor=ex
        ).to_json(),
    }


@pytest.mark.parametrize(
    "name", ["compare+mask", "series", "overlap", "overlap-deltas", "delta-export", "delta-apply", "rank"]
)
def test_every_pass_gives_the_same_result_on_every_executor(trio, tmp_path, name):
    fn = passes(trio, tmp_path)[name]
    want = fn(SerialExecutor())
    for ex in executors():
        assert fn(ex) == want, f"{name} on {ex.name}"


def test_delta_apply_on_spawned_workers_writes_the_same_bytes(trio, tmp_path):
    # spawned workers get pickled copies: they reopen the base, the delta and the output shards by path
    fn = passes(trio, tmp_path)["delta-apply"]
    want = fn(SerialExecutor())
    assert fn(ProcessExecutor(jobs=2, task_elements=2000, start_method="spawn")) == want
    assert sum(1 for f in want if f.endswith(".safetensors")) > 1  # several shards, and their index
    assert "model.safetensors.index.json" in want


@pytest.mark.slow
def test_every_pass_gives_the_same_result_on_ray(ray_local, trio, tmp_path):
    for name, fn in passes(trio, tmp_path).items():
        assert fn(RayExecutor(task_elements=2000)) == fn(SerialExecutor()), name


# -- SIGKILL, then --resume --------------------------------------------------------------------------------

KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from subnetscope.engine import resume
    real = resume.ResumeState.record
    def record(self, *a, **k):
        real(self, *a, **k)
        self.commit()
        if len(self.done) >= int(os.environ["KILL_AFTER"]):
            os.kill(os.getpid(), signal.SIGKILL)
    resume.ResumeState.record = record
    from subnetscope.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _cli(args, env=None, killer: Path | None = None):
    cmd = [sys.executable, str(killer)] if killer else [sys.executable, "-m", "subnetscope"]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, env=env)


@pytest.mark.parametrize("executor", ["threads", "processes"] if FORK else ["threads"])
def test_series_killed_then_resumed_equals_an_uninterrupted_run(trio, tmp_path, executor):
    bdir, tdir, t2dir, *_ = trio
    args = ["series", bdir, tdir, t2dir, "--format", "json", "--executor", executor, "-j", "2",
            "--chunk-elements", "512"]  # fmt: skip
    want = _cli(args)
    assert want.returncode == 0, want.stderr
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    res = tmp_path / "resume"
    env = dict(os.environ, KILL_AFTER="5")
    dead = _cli([*args, "--resume", res], env, killer)
    assert dead.returncode == -signal.SIGKILL
    lines = (res / "tensors.jsonl").read_text().splitlines()
    assert 5 <= len(lines) < len(json.loads(want.stdout)["tensors"])  # killed part-way, its rows journaled
    again = _cli([*args, "--resume", res])
    assert again.returncode == 0, again.stderr
    assert "tensor(s) already done" in again.stderr
    assert json.loads(again.stdout) == json.loads(want.stdout)


@pytest.mark.parametrize("executor", ["threads", "processes"] if FORK else ["threads"])
def test_delta_export_killed_then_resumed_writes_the_same_bytes(trio, tmp_path, executor):
    bdir, tdir, *_ = trio
    ref = tmp_path / "ref"
    ok = _cli(["delta", "export", bdir, tdir, "-o", ref, "--format", "json"])
    assert ok.returncode == 0, ok.stderr
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    out, res = tmp_path / "out", tmp_path / "resume"
    args = ["delta", "export", bdir, tdir, "-o", out, "--executor", executor, "-j", "2", "--resume", res]
    dead = _cli(args, dict(os.environ, KILL_AFTER="4"), killer)
    assert dead.returncode == -signal.SIGKILL
    assert not out.exists()  # the output appears only when complete
    assert len((res / "tensors.jsonl").read_text().splitlines()) >= 4
    again = _cli(args)
    assert again.returncode == 0, again.stderr
    assert tree_digest(out) == tree_digest(ref)
    # a finished resume directory can be kept: running again reads it back, with the same bytes
    out2 = tmp_path / "out2"
    third = _cli(["delta", "export", bdir, tdir, "-o", out2, "--resume", res])
    assert third.returncode == 0, third.stderr
    assert tree_digest(out2) == tree_digest(ref)


def _delta(trio, tmp_path) -> tuple[Path, Path, Path]:
    bdir, tdir, *_ = trio
    d = tmp_path / "delta"
    export_delta(bdir, tdir, d, chunk_elements=512, executor="serial")
    ref = tmp_path / "ref"
    apply_delta(bdir, d, ref, max_shard_bytes=50_000, executor="serial")
    return bdir, d, ref


@pytest.mark.parametrize("executor", ["threads", "processes"] if FORK else ["threads"])
def test_delta_apply_killed_then_resumed_writes_the_same_bytes(trio, tmp_path, executor):
    bdir, d, ref = _delta(trio, tmp_path)
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    out, res = tmp_path / "out", tmp_path / "resume"
    args = ["delta", "apply", bdir, d, "-o", out, "--max-shard-size", "50000", "--executor", executor, "-j", "2",
            "--resume", res]  # fmt: skip
    dead = _cli(args, dict(os.environ, KILL_AFTER="4"), killer)
    assert dead.returncode == -signal.SIGKILL
    assert not out.exists()  # the output appears only when complete
    done = len((res / "tensors.jsonl").read_text().splitlines())
    assert 4 <= done < len(json.loads((d / "delta.json").read_text())["tensors"])
    assert (res / "output" / "model-00001-of-00002.safetensors").is_file() or any((res / "output").iterdir())
    again = _cli([*args, "--verify"])
    assert again.returncode == 0, again.stderr
    assert f"resume: {done} tensor(s) already done" in again.stderr
    assert tree_digest(out) == tree_digest(ref)
    # the shards moved into the output and the journal is cleared: the directory is used up, and running
    # again with it starts over, with the same bytes
    assert not (res / "tensors.jsonl").exists() and not any((res / "output").iterdir())
    out2 = tmp_path / "out2"
    third = _cli(["delta", "apply", bdir, d, "-o", out2, "--max-shard-size", "50000", "--resume", res])
    assert third.returncode == 0, third.stderr
    assert tree_digest(out2) == tree_digest(ref)


def _interrupted_apply(bdir, d, out, res, monkeypatch, after: int = 3) -> int:
    """An apply interrupted (Ctrl-C) after ``after`` tensors; how many the journal holds."""
    from subnetscope.delta import rebuild

    real = rebuild.Rebuilder.finish
    seen = []

    def finish(self, row, state):
        seen.append(row.name)
        if len(seen) > after:
            raise KeyboardInterrupt
        return real(self, row, state)

    monkeypatch.setattr(rebuild.Rebuilder, "finish", finish)
    with pytest.raises(KeyboardInterrupt):
        apply_delta(bdir, d, out, max_shard_bytes=50_000, executor="serial", resume=res)
    monkeypatch.setattr(rebuild.Rebuilder, "finish", real)
    assert not out.exists()
    return len((res / "tensors.jsonl").read_text().splitlines())


def test_delta_apply_interrupted_then_resumed_in_the_library(trio, tmp_path, monkeypatch):
    bdir, d, ref = _delta(trio, tmp_path)
    res, out = tmp_path / "resume", tmp_path / "out"
    assert _interrupted_apply(bdir, d, out, res, monkeypatch) == 3
    apply_delta(bdir, d, out, max_shard_bytes=50_000, executor="threads", jobs=2, resume=res, verify=True)
    assert tree_digest(out) == tree_digest(ref)


def test_delta_apply_resume_refuses_another_run_and_a_lost_or_cut_partial_output(trio, tmp_path, monkeypatch):
    bdir, d, _ref = _delta(trio, tmp_path)
    res = tmp_path / "resume"
    assert _interrupted_apply(bdir, d, tmp_path / "o1", res, monkeypatch) == 3
    # the same directory for another shard size: another run
    with pytest.raises(
        ResumeMismatchError, match=r"made for other inputs or options \(differs in: max_shard_bytes\)"
    ):
        apply_delta(bdir, d, tmp_path / "o2", max_shard_bytes=60_000, resume=res)
    # a partial shard cut short: refused, nothing written
    victim = sorted((res / "output").iterdir())[-1]
    os.truncate(victim, victim.stat().st_size - 1)
    with pytest.raises(
        ResumeMismatchError, match=r"partial output of the finished tensors .* missing or damaged"
    ):
        apply_delta(bdir, d, tmp_path / "o3", max_shard_bytes=50_000, resume=res)
    # a partial shard gone
    victim.unlink()
    with pytest.raises(
        ResumeMismatchError, match=r"partial output of the finished tensors .* missing or damaged"
    ):
        apply_delta(bdir, d, tmp_path / "o4", max_shard_bytes=50_000, resume=res)
    assert not any((tmp_path / n).exists() for n in ("o2", "o3", "o4"))


@pytest.mark.parametrize("executor", ["threads", "processes"] if FORK else ["threads"])
def test_rank_killed_then_resumed_equals_an_uninterrupted_run(trio, tmp_path, executor):
    bdir, tdir, *_ = trio
    args = ["rank", bdir, tdir, "--device", "cpu", "--format", "json", "--executor", executor, "-j", "2"]
    want = _cli(args)
    assert want.returncode == 0, want.stderr
    ranked = json.loads(want.stdout)["selection"]["ranked"]
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    res = tmp_path / "resume"
    dead = _cli([*args, "--resume", res], dict(os.environ, KILL_AFTER="3"), killer)
    assert dead.returncode == -signal.SIGKILL
    done = len((res / "tensors.jsonl").read_text().splitlines())
    assert 3 <= done < ranked
    again = _cli([*args, "--resume", res])
    assert again.returncode == 0, again.stderr
    assert f"resume: {done} tensor(s) already done" in again.stderr
    assert json.loads(again.stdout) == json.loads(want.stdout)


def test_rank_on_a_gpu_device_refuses_worker_processes(trio):
    from subnetscope.anatomy import rank as rank_mod
    from subnetscope.errors import UsageError

    with pytest.raises(
        UsageError, match=r"device 'cuda' ranks on the calling process only \(got executor 'processes'\)"
    ):
        rank_mod._rank_executor("processes", 2, None, "cuda", 10, True)
