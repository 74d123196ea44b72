"""The study pipeline in miniature: configs/mini.toml (tiny random Llama, offline tokenizer, 2 steps per run).

Checks that every table has the right structure and consistent numbers, that the subnetwork run really kept
every frozen weight byte-identical to the base, that a second run comes from the cache, that training with
2 threads gives the same bits as with 1, and that bad configs are refused with a clear message.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from subnetscope.study.config import StudyConfigError, load_config, parse_config
from subnetscope.study.data import addition_reward, choose, dpo_prompts, sft_examples

ROOT = Path(__file__).resolve().parent.parent
MINI = ROOT / "configs" / "mini.toml"


@pytest.fixture(scope="module")
def mini(tmp_path_factory, request):
    """(study JSON document, out dir, cache dir) of the mini study, run once through the CLI (shared by the
    pytest-xdist workers of one session through a file lock, so it is not run twice)."""
    from filelock import FileLock

    from subnetscope.cli import cli

    if getattr(request.config, "workerinput", None) is None:
        root = tmp_path_factory.mktemp("study")
    else:
        root = tmp_path_factory.getbasetemp().parent / "study-mini"
    out, cache, done = root / "out", root / "cache", root / "doc.json"
    with FileLock(str(root) + ".lock"):
        if not done.is_file():
            args = ["study", str(MINI), "--out", str(out), "--cache", str(cache), "--format", "json"]
            res = CliRunner().invoke(cli, args, env={"SUBNETSCOPE_THREADS": "1"})
            assert res.exit_code == 0, res.output
            json.loads(res.stdout)
            done.write_text(res.stdout)
    return json.loads(done.read_text()), out, cache


@pytest.mark.slow
def test_document(mini):
    doc, out, _ = mini
    assert doc["report"] == "subnetscope.study" and doc["schema_version"].startswith("1.")
    assert json.loads((out / "study.json").read_text())["name"] == "mini"
    assert doc["skipped"] == {}
    assert set(doc["runs"]) == {"sft", "dpo", "dpo-seed1", "dpo-describe", "grpo", "dpo-sub"}
    for r in doc["runs"].values():
        assert len(r["losses"]) == 2 and all(math.isfinite(x) for x in r["losses"])
    assert doc["figure3"]["runs"]["dpo"]["cells"] == 2 * 7  # 2 layers x q, k, v, o, gate, up, down
    se = doc["figure2"]["series"]
    assert se["sparsity_vs_init"][-1] == pytest.approx(doc["table1"]["rows"][1]["sparsity_at_1e-5"])
    summary = (out / "summary.md").read_text()
    for title in (
        "Table 1",
        "Table 2",
        "Table 4",
        "Table 3",
        "Figure 2",
        "Figure 3",
        "Dynamics",
        "ULP",
        "Torch CPU threads",
    ):
        assert title in summary


@pytest.mark.slow
def test_table1(mini):
    doc, _, cache = mini
    from subnetscope.io.checkpoint import open_checkpoint

    numel = open_checkpoint(cache / "tiny-random-llama").numel
    rows = {r["run"]: r for r in doc["table1"]["rows"]}
    assert list(rows) == ["sft", "dpo", "dpo-seed1", "dpo-describe", "grpo", "dpo-sub"]
    for r in rows.values():
        assert r["numel"] == numel
        sp = r["sparsity"]
        assert all(0.0 <= s <= 1.0 for s in sp)
        assert sp == sorted(sp), "sparsity cannot fall as the tolerance grows"
        assert r["bit_identical"] <= sp[0] + 1e-12
        assert r["sparsity_at_1e-5"] == sp[r["tolerances"].index(1e-5)]
        assert set(r["by_kind"]) >= {"q", "k", "v", "o", "gate", "up", "down", "embed"}
    # two Adam steps at lr 5e-5 move some weights of a 0.02-scale model by a bf16 step, not all
    assert 0.0 < rows["dpo"]["sparsity_at_1e-5"] < 1.0
    assert 0.0 < rows["sft"]["sparsity_at_1e-5"] < 1.0
    # the subnetwork run can only change weights the full run changed
    assert rows["dpo-sub"]["sparsity_at_1e-5"] >= rows["dpo"]["sparsity_at_1e-5"]


@pytest.mark.slow
def test_table2_matches_matrix_rank(mini):
    """Every rank in Table 2's reports equals torch.linalg.matrix_rank of the float32 delta, recomputed
    here from the safetensors files; the per-run means are the means of those ranks."""
    doc, _, cache = mini
    import torch
    from safetensors.torch import load_file

    rows = {r["run"]: r for r in doc["table2"]["rows"]}
    assert list(rows) == ["sft", "dpo", "grpo", "dpo-sub"]
    base = load_file(str(cache / "tiny-random-llama" / "model.safetensors"))
    matrices = [n for n, w in base.items() if w.ndim == 2]
    assert len(matrices) == 1 + 2 * 7  # tied embedding + 2 layers x (q, k, v, o, gate, up, down)
    for name, row in rows.items():
        rep = json.loads((Path(doc["work_dir"]) / "rank" / f"{name}.json").read_text())
        assert rep["study_run_key"] == doc["runs"][name]["key"]
        got = {t["name"]: (t["rank"], t["max_rank"]) for t in rep["tensors"]}
        assert sorted(got) == sorted(matrices)
        tuned = load_file(str(Path(doc["runs"][name]["path"]) / "model.safetensors"))
        pcts = []
        for n in matrices:
            d = tuned[n].float() - base[n].float()
            assert got[n] == (int(torch.linalg.matrix_rank(d)), min(d.shape)), n
            pcts.append(100.0 * got[n][0] / got[n][1])
        assert row["matrices"] == len(matrices)
        assert row["mean_rank_pct"] == pytest.approx(sum(pcts) / len(pcts), rel=1e-12)
        assert row["full_rank"] == sum(p == 100.0 for p in pcts)


@pytest.mark.slow
def test_table4(mini):
    doc, _, _ = mini
    rows = doc["table4"]["rows"]
    assert [r["label"] for r in rows] == [
        "seeds",
        "data",
        "algorithm (DPO vs GRPO)",
        "algorithm (DPO vs SFT)",
    ]
    sp = {r["run"]: r["sparsity_at_1e-5"] for r in doc["table1"]["rows"]}
    for r in rows:
        c1, c2 = r["changed"]
        assert 0 <= r["intersection"] <= min(c1, c2)
        assert r["sparsity"][0] == pytest.approx(sp[r["a"]]) and r["sparsity"][1] == pytest.approx(sp[r["b"]])
        assert r["o1_random"] == pytest.approx(1 - sp[r["b"]])  # App. E: o1_random is run 2's density
        assert r["o2_random"] == pytest.approx(1 - sp[r["a"]])
        if c1:
            assert r["o1"] == pytest.approx(r["intersection"] / c1)
        for key in ("o1", "o2", "o1_magnitude", "o2_magnitude", "jaccard"):
            assert r[key] is None or 0.0 <= r[key] <= 1.0


@pytest.mark.slow
def test_conjecture_and_frozen_weights(mini):
    doc, _, cache = mini
    import torch
    from safetensors.torch import load_file

    from subnetscope.maskfile import MaskFile

    t3 = doc["table3"]
    assert t3["tolerances"] == [1e-5, 1e-4]
    a, b = t3["identical_share"]
    assert 0.0 <= a <= b <= 1.0
    assert t3["frozen_changed"] == 0
    assert 0 < t3["trainable"] < doc["table1"]["rows"][0]["numel"]
    base = load_file(str(cache / "tiny-random-llama" / "model.safetensors"))
    sub = load_file(str(Path(doc["runs"]["dpo-sub"]["path"]) / "model.safetensors"))
    mask = MaskFile(Path(doc["work_dir"]) / "masks" / "dpo.mask")
    moved_inside = 0
    for name, w0 in base.items():
        m = mask.torch(name)
        same = w0.view(torch.int16) == sub[name].view(torch.int16)
        assert bool(same[~m].all()), f"{name}: a frozen weight changed"
        moved_inside += int((~same[m]).sum())
    assert moved_inside > 0


@pytest.mark.slow
def test_figure2_splits_sum(mini):
    doc, _, _ = mini
    splits = doc["figure2"]["splits"]
    assert any("checkpoints" in k for k in splits) and any("tracker" in k for k in splits)
    for s in splits.values():
        assert s["never_updated"] + s["cancelled"] + s["final_subnetwork"] == s["numel"]
    assert doc["figure2"]["series"]["checkpoints"][0] == "checkpoint-1"
    assert len(doc["figure2"]["series"]["checkpoints"]) == 2  # step 1, then the final model


@pytest.mark.slow
def test_figures_and_ulp(mini):
    doc, out, _ = mini
    for f in doc["figures"]:
        assert (out / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {
        "fig1_sparsity.png",
        "fig2_split.png",
        "fig3_heatmap_dpo.png",
        "fig7_series.png",
        "loss_curves.png",
    } <= set(doc["figures"])
    for r in doc["ulp"].values():
        assert sum(r["hist"]) > 0
        assert 0.0 <= r["below_ulp_share_at_1e-5"] <= 1.0


@pytest.mark.slow
def test_second_run_is_cached(mini):
    doc, out, cache = mini
    from subnetscope.study.pipeline import run_study

    again = run_study(load_config(MINI), progress=False, cache=cache, out=out)
    assert all(r["cached"] for r in again["runs"].values())
    assert again["table1"] == doc["table1"]


#: what the study measured (everything but times, paths and the thread count)
MEASURED = ("table1", "table4", "table3", "figure2", "figure3", "ulp", "magnitude")


def _measured(doc):
    out = {k: doc.get(k) for k in MEASURED}
    out["table1"] = [{k: v for k, v in r.items() if k != "train_seconds"} for r in doc["table1"]["rows"]]
    out["runs"] = {n: (r["key"], r["losses"], r["metrics"]) for n, r in doc["runs"].items()}
    for runs in out["runs"].values():
        for m in runs[2]:
            m.pop("seconds", None)
    return out


def _weights(doc):
    """sha256 of every safetensors file of every run (final model and checkpoints)."""
    return {
        f"{n}/{p.relative_to(Path(r['path']))}": hashlib.sha256(p.read_bytes()).hexdigest()
        for n, r in doc["runs"].items()
        for p in sorted(Path(r["path"]).rglob("*.safetensors"))
    }


@pytest.mark.slow
def test_thread_count_does_not_change_results(mini, tmp_path, monkeypatch):
    """The same study trained with 2 threads instead of 1 (in a fresh cache) gives bit-identical weights,
    losses and tables. Without the pinned numerics (SUBNETSCOPE_NUMERICS=native) this fails on this
    project's machine: dpo-sub's losses and weights differ, since the tiny model's padded 16384-row head
    makes MKL split a product across threads."""
    doc1, _, _ = mini
    monkeypatch.setenv("SUBNETSCOPE_THREADS", "2")
    from subnetscope.study.pipeline import run_study

    doc2 = run_study(load_config(MINI), progress=False, cache=tmp_path / "cache", out=tmp_path / "out")
    assert {r["train_threads"] for r in doc1["runs"].values()} == {1}
    assert {r["train_threads"] for r in doc2["runs"].values()} == {2}
    assert not any(r["cached"] for r in doc2["runs"].values())
    assert doc1["numerics"]["reproducible"] and doc2["numerics"]["reproducible"]
    assert doc2["numerics"]["fingerprint"] == doc1["numerics"]["fingerprint"]
    assert _measured(doc2) == _measured(doc1)
    w1, w2 = _weights(doc1), _weights(doc2)
    assert len(w1) == 6 + 1  # six final models and dpo's checkpoint at step 1
    assert w2 == w1


@pytest.mark.slow
def test_demo_headline(mini):
    doc, _, _ = mini
    from subnetscope.demo import headline

    text = headline(doc)
    assert "update sparsity at tol 1e-5" in text and "matrix type" in text


# -- config and data: fast, not slow ------------------------------------------------------------------------


def _cfg(**over):
    base = {
        "study": {"name": "x", "base": "tiny-random"},
        "data": {"p": {"kind": "pairs"}, "s": {"kind": "sft"}},
        "runs": [{"name": "a", "algo": "dpo", "data": "p"}],
    }
    base.update(over)
    return base


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        (_cfg(runs=[{"name": "a", "algo": "dpo", "data": "p", "stepz": 3}]), "unknown key(s) ['stepz']"),
        (_cfg(runs=[{"name": "a", "algo": "ppo", "data": "p"}]), "algo 'ppo'"),
        (_cfg(runs=[{"name": "a", "algo": "dpo", "data": "s"}]), "dpo needs a 'pairs' dataset"),
        (_cfg(runs=[{"name": "a", "algo": "dpo", "data": "nope"}]), "dataset 'nope' is not defined"),
        (
            _cfg(runs=[{"name": "a", "algo": "dpo", "data": "p", "mask_from": "b"}]),
            "must name a run listed before",
        ),
        (_cfg(analysis={"overlap": [{"label": "x", "a": "a", "b": "zz"}]}), "unknown run 'zz'"),
        (_cfg(extra={}), "unknown section(s) ['extra']"),
        (_cfg(runs=[]), "no [[runs]]"),
    ],
)
def test_bad_configs(doc, needle):
    with pytest.raises(StudyConfigError) as e:
        parse_config(doc)
    assert needle in e.value.message


def test_config_file_errors(tmp_path):
    with pytest.raises(StudyConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[study\n")
    with pytest.raises(StudyConfigError, match="not a readable config"):
        load_config(bad)


def test_shipped_configs_parse():
    for path in sorted((ROOT / "configs").glob("*.toml")):
        cfg = load_config(path)
        assert cfg.runs and cfg.analysis.table1


def test_data_rules():
    assert sft_examples(5, seed=3) == sft_examples(5, seed=3) != sft_examples(5, seed=4)
    assert choose("p", "short", "much longer", "shorter") == ("short", "much longer")
    assert choose("p", "short", "much longer", "longer") == ("much longer", "short")
    assert choose("tip about sleep", "sleep well", "eat more food", "keyword") == (
        "sleep well",
        "eat more food",
    )
    assert choose("p", "same", "same", "shorter") is None
    assert addition_reward("3 + 4 = 7.", 7) == 1.0 and addition_reward("3 + 4 = 8", 7) == 0.0
    assert addition_reward("no number", 7) == 0.0
    assert len(dpo_prompts("tips", 100)) == 100
    with pytest.raises(Exception, match="unknown prompt set"):
        dpo_prompts("nope")


def test_cli_bad_config(tmp_path, capsys):
    from subnetscope.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text('[study]\nname = "x"\n[[runs]]\nname = "a"\nalgo = "dpo"\ndata = "p"\n')
    with pytest.raises(SystemExit) as e:
        main(["study", str(bad)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "subnetscope: error:" in err and "dataset 'p' is not defined" in err and "define [data.p]" in err
