"""`rank` across worker threads (the speed change of issue 18): ranks known by construction, the same report
for 1 and 3 workers, and a bad SUBNETSCOPE_RANK_WORKERS refused."""

from __future__ import annotations

import pytest

from factory import llama_names, random_state, save_checkpoint
from subnetscope.anatomy.rank import cpu_workers, rank_report
from subnetscope.errors import UsageError


def _pair(tmp_path):
    """A Llama checkpoint and a target whose every 2-D update is non-zero in exactly r rows (r = 1 + the
    matrix's index mod 5), so its rank is r (generic random rows); the tied 4096 x 48 embedding is tall,
    so it goes through the blocked Gram path."""
    shapes = llama_names(layers=3, hidden=48, inter=96, vocab=4096, kv=16, tied=True)
    base = random_state(shapes, seed=0)
    other = random_state(shapes, seed=7)
    target = {k: v.clone() for k, v in base.items()}
    want = {}
    for i, (name, t) in enumerate(sorted(base.items())):
        if t.ndim != 2:
            continue
        r = 1 + i % 5
        target[name][:r] = other[name][:r]
        want[name] = r
    return save_checkpoint(base, tmp_path / "base"), save_checkpoint(target, tmp_path / "target"), want


def test_ranks_by_construction_and_workers_do_not_matter(tmp_path, monkeypatch):
    b, t, want = _pair(tmp_path)
    monkeypatch.setenv("SUBNETSCOPE_RANK_WORKERS", "1")
    one = rank_report(b, t, device="cpu")
    monkeypatch.setenv("SUBNETSCOPE_RANK_WORKERS", "3")
    three = rank_report(b, t, device="cpu")
    assert {m.name: m.rank for m in one.tensors} == want
    assert len(want) == 1 + 3 * 7
    assert [m.to_json() for m in three.tensors] == [m.to_json() for m in one.tensors]
    assert [m.name for m in three.tensors] == [m.name for m in one.tensors]  # plan order kept


def test_on_matrix_sees_every_matrix_in_order(tmp_path, monkeypatch):
    b, t, want = _pair(tmp_path)
    monkeypatch.setenv("SUBNETSCOPE_RANK_WORKERS", "2")
    seen = []
    rep = rank_report(b, t, device="cpu", on_matrix=lambda m: seen.append(m.name))
    assert seen == [m.name for m in rep.tensors] and len(seen) == len(want)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("two", "SUBNETSCOPE_RANK_WORKERS='two' is not a number"),
        ("0", "SUBNETSCOPE_RANK_WORKERS=0: must be at least 1"),
    ],
)
def test_bad_workers(monkeypatch, value, message):
    monkeypatch.setenv("SUBNETSCOPE_RANK_WORKERS", value)
    with pytest.raises(UsageError) as e:
        cpu_workers(10)
    assert e.value.message == message


def test_workers_capped_by_matrices(monkeypatch):
    monkeypatch.setenv("SUBNETSCOPE_RANK_WORKERS", "8")
    assert cpu_workers(3) == 3
    monkeypatch.delenv("SUBNETSCOPE_RANK_WORKERS")
    import os

    assert 1 <= cpu_workers(100) <= len(os.sched_getaffinity(0))
