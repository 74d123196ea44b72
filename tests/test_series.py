"""``series``: exact counts on a run whose changes (and returns to the initial value) are chosen by the test,
the fused kernel against the numpy oracle, checkpoint-* ordering, the CLI and the plots."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys

import numpy as np
import pytest
import torch

from masks_helpers import SHAPES, base_state, moved, pick, save, to_f64
from subnetscope.cli import main
from subnetscope.dtypes import DTYPES
from subnetscope.errors import InputNotFoundError, MismatchError, SubnetscopeError, UsageError
from subnetscope.kernels import registry
from subnetscope.kernels import series as sk
from subnetscope.series import expand_checkpoints, series, step_of

HAND = "model.layers.0.self_attn.o_proj.weight"  # the tensor whose history is written out by hand
TINY = "model.layers.0.self_attn.v_proj.weight"  # its first 16 weights are 1e-6 in init


def set_values(state, name, idx, values):
    out = {k: v.clone() for k, v in state.items()}
    flat = out[name].view(-1)
    flat[torch.as_tensor(idx)] = torch.as_tensor(values, dtype=torch.float32).to(flat.dtype)
    return out


def restore(state, init, name, idx):
    out = {k: v.clone() for k, v in state.items()}
    out[name].view(-1)[torch.as_tensor(idx)] = init[name].view(-1)[torch.as_tensor(idx)]
    return out


def without(positions, name, lo, hi):
    p = dict(positions)
    p[name] = p[name][(p[name] < lo) | (p[name] >= hi)]
    return p


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """INIT and three checkpoints with chosen changes; some parameters change and then return exactly."""
    root = tmp_path_factory.mktemp("series")
    init = base_state(seed=0)
    a = without(without(pick(init, 0.3, seed=21), HAND, 0, 1 << 30), TINY, 0, 16)
    b = without(without(pick(init, 0.2, seed=22), HAND, 0, 1 << 30), TINY, 0, 16)
    c = without(without(pick(init, 0.1, seed=23), HAND, 0, 1 << 30), TINY, 0, 16)
    h0 = to_f64(init[HAND])
    c1 = moved(init, a)
    c1 = set_values(c1, HAND, list(range(10)), h0[:10] + 0.5)
    c1 = set_values(c1, TINY, [0, 1, 2], [2e-6] * 3)  # bits change, |Δ| = 1e-6 < tol: not updated
    # step 2: half of a goes back exactly; b moves
    back = {k: v[: len(v) // 2] for k, v in a.items()}
    c2 = moved(c1, b, step=0.125)
    for k, v in back.items():
        c2 = restore(c2, init, k, v)
    c2 = restore(c2, init, HAND, list(range(5)))
    c2 = set_values(c2, HAND, list(range(10, 15)), h0[10:15] - 0.5)
    # step 3: c moves, HAND 10, 11 go back, 20..22 move
    c3 = moved(c2, c, step=0.5)
    c3 = restore(c3, init, HAND, [10, 11])
    c3 = set_values(c3, HAND, [20, 21, 22], h0[20:23] + 0.75)
    dirs = [save(init, root / "init")]
    for k, st in enumerate((c1, c2, c3), 1):
        dirs.append(save(st, root / "run" / f"checkpoint-{k * 50}", shards=k))
    return {"root": root, "states": [init, c1, c2, c3], "dirs": dirs}


def oracle(states, tol=1e-5, fin=None):
    """Everything by brute force on whole float64 arrays (exact semantics)."""
    names = list(SHAPES)
    vals = [np.concatenate([to_f64(s[n]) for n in names]) for s in states]
    bits = [np.concatenate([s[n].view(torch.int16).reshape(-1).numpy() for n in names]) for s in states]

    def chg(i, j):
        same = bits[i] == bits[j]
        return ~same & ~(np.abs(vals[j] - vals[i]) <= tol), same

    fin = len(states) - 1 if fin is None else fin
    f, fs = chg(0, fin)
    ever = np.zeros(f.size, bool)
    everb = np.zeros(f.size, bool)
    steps = []
    for k in range(1, len(states)):
        ci, ii = chg(0, k)
        cp, ip = chg(k - 1, k)
        ever |= ci
        everb |= ~ii
        steps.append({"changed_vs_init": int(ci.sum()), "identical_vs_init": int(ii.sum()),
                      "changed_vs_prev": int(cp.sum()), "identical_vs_prev": int(ip.sum()),
                      "outside_final": int((ci & ~f).sum()), "outside_final_step": int((cp & ~f).sum()),
                      "ever_updated": int(ever.sum()), "ever_touched_bits": int(everb.sum())})  # fmt: skip
    ever |= f
    everb |= ~fs
    split = {
        "never_updated": int((~ever).sum()),
        "cancelled": int((ever & ~f).sum()),
        "final_subnetwork": int(f.sum()),
    }
    splitb = {"never_updated": int((~everb).sum()), "cancelled": int((everb & fs).sum()),
              "final_subnetwork": int((~fs).sum())}  # fmt: skip
    return steps, split, splitb, f.size


def check_against_oracle(j, states, fin=None):
    steps, split, splitb, n = oracle(states, fin=fin)
    assert j["numel"] == n
    for got, want in zip(j["steps"], steps):
        for k, v in want.items():
            assert got[k] == v, k
        assert got["sparsity_vs_init"] == pytest.approx(1 - want["changed_vs_init"] / n)
        assert got["sparsity_vs_prev"] == pytest.approx(1 - want["changed_vs_prev"] / n)
        share = want["outside_final"] / want["changed_vs_init"] if want["changed_vs_init"] else None
        assert got["outside_final_share"] == pytest.approx(share)
    for k, v in split.items():
        assert j["split"][k] == v
    for k, v in splitb.items():
        assert j["split_bitwise"][k] == v
    s = j["split"]
    assert s["never_updated"] + s["cancelled"] + s["final_subnetwork"] == n


def test_series_counts_match_brute_force(run):
    rep = series(run["dirs"][0], run["dirs"][1:], chunk_elements=200)
    check_against_oracle(rep.to_json(), run["states"])


def test_changes_that_return_exactly_are_cancelled(run):
    j = series(run["dirs"][0], run["dirs"][1:]).to_json()
    t = next(t for t in j["tensors"] if t["name"] == HAND)
    n = math.prod(SHAPES[HAND])
    assert t["changed_vs_init"] == [10, 10, 11]
    assert t["changed_vs_prev"] == [10, 10, 5]
    # ever updated: 0..14 and 20..22; back at the end: 0..4, 10, 11; final: 5..9, 12..14, 20..22
    assert t["split"]["never_updated"] == n - 18
    assert t["split"]["cancelled"] == 7
    assert t["split"]["final_subnetwork"] == 11
    # the sub-tolerance change of TINY: bits differ at the end, yet never "updated"
    tiny = next(t for t in j["tensors"] if t["name"] == TINY)
    assert j["split_bitwise"]["final_subnetwork"] - j["split"]["final_subnetwork"] >= 3
    assert tiny["split"]["final_subnetwork"] == tiny["changed_vs_init"][-1]


def test_jobs_and_chunk_size_do_not_change_the_result(run):
    a = series(run["dirs"][0], run["dirs"][1:], jobs=1).to_json()
    b = series(run["dirs"][0], run["dirs"][1:], jobs=3, chunk_elements=64).to_json()
    assert a == b
    for ex in ("serial", "threads", "auto", "processes"):  # processes: forked workers, each on a share
        c = series(run["dirs"][0], run["dirs"][1:], jobs=2, chunk_elements=64, executor=ex)
        assert c.to_json() == a, ex
    with pytest.raises(UsageError, match="unknown executor 'gpu'"):
        series(run["dirs"][0], run["dirs"][1:], executor="gpu")


def _crash_in_workers(monkeypatch, marker, always=False):
    """Make the series consumer kill its (forked) worker on its first chunk, once or always."""
    from subnetscope.measures.series import SeriesCounter

    real = SeriesCounter.chunk
    driver = os.getpid()

    def chunk(self, row, start, count, arrays):
        if os.getpid() != driver and start == 0 and (always or not marker.exists()):
            marker.write_text("x")
            os._exit(17)
        return real(self, row, start, count, arrays)

    monkeypatch.setattr(SeriesCounter, "chunk", chunk)


def test_a_killed_series_worker_is_retried_and_one_that_always_dies_is_an_error(run, tmp_path, monkeypatch):
    from subnetscope.engine.executors import ExecutorError, ProcessExecutor

    if not sys.platform.startswith("linux"):
        pytest.skip("forked workers are Linux-only")
    want = series(run["dirs"][0], run["dirs"][1:], executor="serial").to_json()
    _crash_in_workers(monkeypatch, tmp_path / "crashed")
    ex = ProcessExecutor(jobs=2, task_elements=64)
    got = series(run["dirs"][0], run["dirs"][1:], chunk_elements=64, executor=ex).to_json()
    assert (tmp_path / "crashed").exists() and ex.last_run["retries"] >= 1
    assert got == want
    _crash_in_workers(monkeypatch, tmp_path / "again", always=True)
    with pytest.raises(ExecutorError, match=r"a worker process died 2 times; \d+ task\(s\) unfinished"):
        series(run["dirs"][0], run["dirs"][1:], executor=ProcessExecutor(jobs=2, max_retries=1))


def test_work_is_cut_into_contiguous_runs_of_equal_weight():
    from subnetscope.engine.executors import contiguous_groups

    # a 1.5-chunk tensor after another: a round robin gave one worker every full chunk (1024 against 512)
    weights = [1024, 512] * 6
    items = list(range(len(weights)))
    groups = contiguous_groups(items, weights, 4)
    assert [x for g in groups for x in g] == items  # order kept, nothing lost or repeated
    # each run ends at the first item that reaches the next quarter of 9216 (2304, 4608, 6912): 2560, 4608
    # and 7168 are the cumulative weights there; a round robin would give 6144 and 3072 to two workers
    assert [sum(weights[i] for i in g) for g in groups] == [2560, 2048, 2560, 2048]
    # never an empty run: a run that reaches several eighths at once closes once
    assert contiguous_groups([1, 2, 3], [1, 100, 1], 8) == [[1, 2], [3]]
    assert contiguous_groups(["a", "b"], [5, 5], 1) == [["a", "b"]]
    assert contiguous_groups([], [], 3) == []
    with pytest.raises(ValueError, match="one weight per item"):
        contiguous_groups([1, 2], [1], 2)


def test_run_directory_is_expanded_in_step_order(run, tmp_path):
    rd = tmp_path / "trainer_out"
    for step, src in ((9, run["dirs"][1]), (10, run["dirs"][2]), (2, run["dirs"][3])):
        shutil.copytree(src, rd / f"checkpoint-{step}")
    (rd / "runs").mkdir()
    (rd / "trainer_state.json").write_text("{}")
    (rd / "checkpoint-notes").mkdir()
    got = expand_checkpoints([rd])
    assert [step_of(p) for p in got] == [2, 9, 10]
    j = series(run["dirs"][0], [rd]).to_json()
    assert [s["step"] for s in j["steps"]] == [2, 9, 10]
    assert [s["name"] for s in j["steps"]] == ["checkpoint-2", "checkpoint-9", "checkpoint-10"]
    init, c1, c2, c3 = run["states"]
    check_against_oracle(j, [init, c3, c1, c2])
    # a checkpoint given by its own path keeps its place
    assert expand_checkpoints([run["dirs"][2], run["dirs"][1]]) == [str(run["dirs"][2]), str(run["dirs"][1])]


def test_final_outside_the_list(run):
    init, c1, c2, c3 = run["states"]
    j = series(run["dirs"][0], run["dirs"][1:3], final=run["dirs"][3]).to_json()
    assert j["final"]["index"] is None and len(j["steps"]) == 2
    steps, split, _, _ = oracle([init, c1, c2, c3], fin=3)
    for got, want in zip(j["steps"], steps[:2]):
        assert got["outside_final"] == want["outside_final"]
    assert j["split"] == {**j["split"], **split}
    # --final naming one of the checkpoints: that one defines the subnetwork
    j1 = series(run["dirs"][0], run["dirs"][1:], final=run["dirs"][1]).to_json()
    assert j1["final"]["index"] == 1
    check_against_oracle(j1, run["states"], fin=1)


def test_mixed_dtypes_and_missing_tensors(run, tmp_path):
    init, c1, c2, c3 = run["states"]
    c2_f32 = dict(c2)
    c2_f32[HAND] = c2[HAND].float()  # same values, another dtype
    c3_missing = {k: v for k, v in c3.items() if k != "lm_head.weight"}
    d2 = save(c2_f32, tmp_path / "c2")
    d3 = save(c3_missing, tmp_path / "c3")
    j = series(run["dirs"][0], [run["dirs"][1], d2, d3]).to_json()
    assert "lm_head.weight" not in {t["name"] for t in j["tensors"]}
    assert any(f["kind"] == "only_in_base" and f["tensor"] == "lm_head.weight" for f in j["findings"])
    assert any(f["kind"] == "dtype_changed" and f["tensor"] == HAND for f in j["findings"])
    hand = next(t for t in j["tensors"] if t["name"] == HAND)
    assert hand["changed_vs_init"] == [10, 10, 11] and hand["split"]["cancelled"] == 7


@pytest.mark.parametrize("code", ["BF16", "F16", "F32", "F64", "F8_E4M3", "F8_E5M2"])
@pytest.mark.parametrize("semantics", ["exact", "reference"])
@pytest.mark.parametrize("extra_final", [False, True])
def test_fused_kernel_equals_numpy(code, semantics, extra_final):
    dt = DTYPES[code]
    rng = np.random.default_rng(abs(hash((code, semantics, extra_final))) % 2**32)
    n, k = 1537, 4
    width = 8 * dt.itemsize
    if dt.itemsize <= 2:
        r0 = rng.integers(0, 1 << width, n, dtype=np.uint64).astype(dt.bits_dtype)
    else:
        f = np.float32 if dt.itemsize == 4 else np.float64
        r0 = (rng.standard_normal(n) * rng.choice([1e-7, 1e-5, 1e-3], n)).astype(f).view(dt.bits_dtype)
    rows = [r0]
    for _ in range(k + int(extra_final)):
        r = rows[-1].copy()
        sel = rng.random(n) < 0.4
        r[sel] = (
            (r[sel].astype(np.int64) + rng.integers(-3, 4, int(sel.sum())))
            .astype(np.uint64)
            .astype(dt.bits_dtype)
        )
        back = rng.random(n) < 0.1
        r[back] = r0[back]  # exact returns to init
        rows.append(r)
    fin = k + 1 if extra_final else k
    outs = []
    for backend in registry.BACKENDS:
        out = np.zeros((k, sk.NSTEP), np.int64)
        split = np.zeros(sk.NSPLIT, np.int64)
        sk.series_chunk(np.stack(rows), dt, 1e-5, semantics, k, fin, out, split, backend=backend)
        outs.append((out, split))
    assert registry.BACKENDS[-1] == "numpy"  # the reference is always among them
    for got in outs[:-1]:
        assert np.array_equal(got[0], outs[-1][0]) and np.array_equal(got[1], outs[-1][1])
    assert outs[0][1][:3].sum() == n and outs[0][1][3:].sum() == n


def test_bad_inputs(run, tmp_path):
    with pytest.raises(UsageError, match="no checkpoint given"):
        series(run["dirs"][0], [])
    with pytest.raises(InputNotFoundError, match="no such file or directory"):
        series(run["dirs"][0], [tmp_path / "nope"])
    other = save({"x.weight": torch.zeros(4, 4, dtype=torch.bfloat16)}, tmp_path / "other")
    with pytest.raises(
        MismatchError, match=r"no tensor of .* is present with the same shape in every checkpoint"
    ):
        series(run["dirs"][0], [other])
    with pytest.raises(UsageError, match="tolerance"):
        series(run["dirs"][0], run["dirs"][1:], tolerance=-1.0)


# --------------------------------------------------------------------------------------------------------
# CLI and plots


def test_cli_json_and_output_file(run, capsys, tmp_path):
    out = tmp_path / "series.json"
    main(["series", str(run["dirs"][0]), str(run["root"] / "run"), "--format", "json", "-o", str(out)])
    captured = capsys.readouterr()
    j = json.loads(captured.out)
    assert j["report"] == "subnetscope.series" and "schema_version" in j
    assert json.loads(out.read_text()) == j
    assert [s["step"] for s in j["steps"]] == [50, 100, 150]
    check_against_oracle(j, run["states"])
    assert "report written to" in captured.err


def test_cli_table(run, capsys):
    main(["series", str(run["dirs"][0]), *map(str, run["dirs"][1:]), "--tol", "1e-5"])
    out = capsys.readouterr().out
    assert "sparsity vs init" in out and "checkpoint-150" in out
    j = series(run["dirs"][0], run["dirs"][1:]).to_json()
    assert f"cancelled {j['split']['cancelled']:,}" in out


def test_cli_errors(run, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["series", str(run["dirs"][0]), str(tmp_path / "missing")])
    assert e.value.code == 2
    assert "subnetscope: error:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["series", str(run["dirs"][0]), str(run["dirs"][1]), "--tol", "-1"])
    assert e.value.code == 2
    assert "not a finite non-negative number" in capsys.readouterr().err


def test_plots(run, tmp_path):
    from subnetscope.render.series_plots import plot_series

    j = series(run["dirs"][0], run["root"] / "run").to_json()
    files = plot_series(j, tmp_path / "plots")
    names = sorted(p.name for p in files)
    assert names == sorted(f"{n}.{e}" for n in ("series_sparsity", "series_outside_final", "series_consecutive",
                                                "series_split") for e in ("png", "svg"))  # fmt: skip
    for p in files:
        head = p.read_bytes()[:8]
        assert head.startswith(b"\x89PNG") if p.suffix == ".png" else b"<?xml" in head or b"<svg" in head
    with pytest.raises(SubnetscopeError, match=r"not a subnetscope\.series or subnetscope\.tracker report"):
        plot_series({"report": "subnetscope.compare"}, tmp_path)


@pytest.mark.parametrize("tol", [1.0 - 2.0**-31, 1.0 - 2.0**-29])
def test_fused_kernel_float32_ties(tol):
    """|1 - 2**-30| and both tolerances round to 1.0 in float32 (see tests/test_kernels.py): the C kernel
    must recount those blocks in float64, moving the state only once."""
    dt = DTYPES["F32"]
    rng = np.random.default_rng(5)
    n, k = 4500, 3
    one, tiny = np.uint32(0x3F800000), np.uint32(0x30800000)
    r0 = (rng.standard_normal(n) * 1e-3).astype(np.float32).view(np.uint32)
    rows = [r0]
    for _ in range(k):
        r = rows[-1].copy()
        r[rng.random(n) < 0.3] += 1
        rows.append(r)
    where = np.array([0, 2047, 2048, 4095, 4096, n - 1])
    rows[0][where] = one
    rows[1][where] = tiny  # at step 1 |Δ vs init| is the tie; step 2 goes back to init for half of them
    rows[2][where] = np.where(np.arange(where.size) % 2 == 0, one, tiny)
    rows[3][where] = tiny
    outs = []
    for backend in registry.BACKENDS:
        out = np.zeros((k, sk.NSTEP), np.int64)
        split = np.zeros(sk.NSPLIT, np.int64)
        sk.series_chunk(np.stack(rows), dt, tol, "exact", k, k, out, split, backend=backend)
        outs.append((out, split))
    for got in outs[:-1]:
        assert np.array_equal(got[0], outs[-1][0]) and np.array_equal(got[1], outs[-1][1])
