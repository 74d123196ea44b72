"""Resumable runs: interrupt, resume, and get the uninterrupted report (and mask) without re-reading."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import subnetscope
from factory import perturb, save_checkpoint
from scale_helpers import Probe, comparable
from subnetscope.cli import cli
from subnetscope.engine.executors import ProcessExecutor
from subnetscope.engine.resume import JOURNAL, MASK_BITS, ResumeMismatchError, journaled
from subnetscope.errors import OutputConflictError
from subnetscope.measures.compare_resume import CompareResume

TOLS = [1e-8, 1e-6, 1e-5]


class Interrupt(Exception):
    """Stands for Ctrl-C in the middle of a run."""


def _interrupt_after(monkeypatch, n, exc=KeyboardInterrupt):
    """Make the journal raise ``exc`` once ``n`` tensors are recorded (as if Ctrl-C came then)."""
    real = CompareResume.record

    def record(self, st):
        if len(self.done) >= n:
            raise exc()
        real(self, st)

    monkeypatch.setattr(CompareResume, "record", record)


@pytest.fixture(scope="module")
def reference(llama_pair, tmp_path_factory):
    bdir, tdir, *_ = llama_pair
    d = tmp_path_factory.mktemp("ref")
    r = subnetscope.compare(bdir, tdir, TOLS, consumers=[Probe()], mask_out=d / "m")
    return comparable(r.to_json()), (d / "m").read_bytes()


@pytest.mark.parametrize("executor", ["threads", "serial", "processes"])
def test_interrupted_run_resumes_to_the_same_report(llama_pair, reference, tmp_path, monkeypatch, executor):
    bdir, tdir, *_ = llama_pair
    res = tmp_path / "resume"
    ex = ProcessExecutor(jobs=2, task_elements=3000) if executor == "processes" else executor
    _interrupt_after(monkeypatch, 7)
    first = Probe()
    with pytest.raises(KeyboardInterrupt):
        subnetscope.compare(
            bdir, tdir, TOLS, consumers=[first], mask_out=tmp_path / "m", resume=res, executor=ex
        )
    monkeypatch.undo()
    assert not (tmp_path / "m").exists()  # no half-written mask
    assert journaled(res) == 7
    done = {json.loads(line)["name"] for line in (res / JOURNAL).read_text().splitlines()}

    second = Probe()
    r = subnetscope.compare(
        bdir, tdir, TOLS, consumers=[second], mask_out=tmp_path / "m", resume=res, executor=ex
    )
    if executor != "processes":  # (a process worker's probe is its own copy)
        assert second.seen and not (second.seen & done)  # finished tensors were not read again
        assert second.seen | done == {t.name for t in r.tensors}
    assert (comparable(r.to_json()), (tmp_path / "m").read_bytes()) == reference
    assert journaled(res) == len(r.tensors)

    # a finished directory: nothing is read, same report
    third = Probe()
    r3 = subnetscope.compare(bdir, tdir, TOLS, consumers=[third], mask_out=tmp_path / "m3", resume=res)
    assert third.seen == set()
    assert (comparable(r3.to_json()), (tmp_path / "m3").read_bytes()) == reference


def test_without_mask_and_a_torn_last_line(llama_pair, tmp_path, monkeypatch):
    bdir, tdir, *_ = llama_pair
    res = tmp_path / "r"
    want = subnetscope.compare(bdir, tdir, TOLS).to_json()
    _interrupt_after(monkeypatch, 3, Interrupt)
    with pytest.raises(Interrupt):
        subnetscope.compare(bdir, tdir, TOLS, resume=res, jobs=2)
    monkeypatch.undo()
    assert not (res / MASK_BITS).exists()
    j = res / JOURNAL
    with open(j, "ab") as f:
        f.write(b'{"name": "model.norm.weight", "stats": {"na')  # a crash in the middle of a line
    assert journaled(res) == 3
    assert subnetscope.compare(bdir, tdir, TOLS, resume=res).to_json() == want
    assert all(json.loads(line) for line in j.read_text().splitlines())  # the torn line is gone


def test_stale_or_foreign_directories_are_refused(llama_pair, tmp_path):
    bdir, tdir, base, *_ = llama_pair
    res = tmp_path / "r"
    subnetscope.compare(bdir, tdir, TOLS, resume=res)
    with pytest.raises(
        ResumeMismatchError, match=r"made for other inputs or options \(differs in: tolerances\)"
    ) as ei:
        subnetscope.compare(bdir, tdir, [1e-5], resume=res)
    assert f"delete {res}" in (ei.value.hint or "")
    with pytest.raises(ResumeMismatchError, match=r"differs in: semantics"):
        subnetscope.compare(bdir, tdir, TOLS, semantics="reference", resume=res)
    with pytest.raises(ResumeMismatchError, match=r"differs in: mask_tolerance"):
        subnetscope.compare(bdir, tdir, TOLS, resume=res, mask_out=tmp_path / "m")
    with pytest.raises(ResumeMismatchError, match=r"differs in: consumers"):
        subnetscope.compare(bdir, tdir, TOLS, resume=res, consumers=[Probe()])
    other, _ = perturb(base, 0.1, seed=9)
    odir = save_checkpoint(other, tmp_path / "other")
    with pytest.raises(ResumeMismatchError, match=r"differs in: target"):
        subnetscope.compare(bdir, odir, TOLS, resume=res)

    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("mine")
    with pytest.raises(ResumeMismatchError, match=r"is not empty and has no manifest\.json"):
        subnetscope.compare(bdir, tdir, TOLS, resume=junk)
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputConflictError, match="file: resume exists and is not a directory"):
        subnetscope.compare(bdir, tdir, TOLS, resume=tmp_path / "file")

    lines = (res / JOURNAL).read_text().splitlines()
    lines[1] = "{broken"
    (res / JOURNAL).write_text("\n".join(lines) + "\n")
    with pytest.raises(ResumeMismatchError, match="line 2 is damaged"):
        subnetscope.compare(bdir, tdir, TOLS, resume=res)


def test_cli_resume(llama_pair, tmp_path):
    bdir, tdir, *_ = llama_pair
    args = ["compare", str(bdir), str(tdir), "--format", "json", "--resume", str(tmp_path / "r")]
    a = CliRunner().invoke(cli, args, catch_exceptions=False)
    b = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert a.exit_code == b.exit_code == 0
    assert a.stdout == b.stdout
    assert "resume: journal in" in a.stderr
    assert f"resume: {len(json.loads(a.stdout)['tensors'])} tensor(s) already done" in b.stderr


def test_group_commit(llama_pair, tmp_path):
    from subnetscope.io.checkpoint import open_checkpoint
    from subnetscope.measures.compare import PassOptions
    from subnetscope.measures.compare_resume import open_compare_resume as open_resume
    from subnetscope.plan import make_plan

    bdir, tdir, *_ = llama_pair
    plan = make_plan(open_checkpoint(bdir), open_checkpoint(tdir))
    r = subnetscope.compare(bdir, tdir, TOLS)
    for sync, after_two in ((0.0, 2), (1e9, 0)):
        d = tmp_path / f"s{sync}"
        state = open_resume(d, plan, PassOptions(TOLS), None, sync_seconds=sync)
        state.record(r.tensors[0])
        state.record(r.tensors[1])
        assert journaled(d) == after_two  # per tensor, or only queued
        state.close()
        assert journaled(d) == 2  # closing (also after an interruption) commits the queue
        state.close()
        again = open_resume(d, plan, PassOptions(TOLS), None)
        assert [s.to_json() for s in again.done.values()] == [t.to_json() for t in r.tensors[:2]]
        again.close()
