"""The compare command: table, JSON on stdout, -o file, --strict, --mask-out, --help without heavy imports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from subnetscope.cli import cli, main


def run(args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def test_human_table(llama_pair):
    bdir, tdir, base, _t, changed = llama_pair
    res = run(["compare", str(bdir), str(tdir)])
    assert res.exit_code == 0, res.output
    out = res.output
    total = sum(v.numel() for v in base.values())
    n_changed = sum(changed.values())
    assert f"({n_changed:,} updated)" in out
    assert "sparsity@1e-5" in out and "sparsity@1e-8" in out
    assert "per matrix type" in out and "per layer" in out
    for kind in (
        "q",
        "k",
        "v",
        "o",
        "gate",
        "up",
        "down",
        "input_norm",
        "post_attn_norm",
        "embed",
        "lm_head",
        "final_norm",
    ):
        assert any(line.split()[0] == kind for line in out.splitlines() if line.strip()), kind
    assert f"{100 * (total - n_changed) / total:.2f}%" in out


def test_json_stdout_and_output_file(llama_pair, tmp_path):
    bdir, tdir, *_ = llama_pair
    out = tmp_path / "r.json"
    res = run(["compare", str(bdir), str(tdir), "--format", "json", "--tol", "1e-5", "-o", str(out)])
    assert res.exit_code == 0
    doc = json.loads(res.stdout)
    assert doc == json.loads(out.read_text())
    assert doc["tolerances"] == [1e-5] and doc["semantics"] == "exact"
    assert "report written to" in res.stderr


def test_reference_semantics_named_in_report(llama_pair):
    bdir, tdir, *_ = llama_pair
    res = run(["compare", str(bdir), str(tdir), "--format", "json", "--semantics", "reference"])
    assert json.loads(res.stdout)["semantics"] == "reference"


def test_strict_exit_1_but_report_written(tmp_path):
    import torch

    from factory import save_checkpoint

    save_checkpoint({"a": torch.zeros(4), "b": torch.zeros(2)}, tmp_path / "x")
    save_checkpoint({"a": torch.zeros(4)}, tmp_path / "y")
    with pytest.raises(SystemExit) as ei:
        main(
            [
                "compare",
                str(tmp_path / "x"),
                str(tmp_path / "y"),
                "--strict",
                "-o",
                str(tmp_path / "r.json"),
                "--format",
                "json",
            ]
        )
    assert ei.value.code == 1
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["findings"] == [
        {"kind": "only_in_base", "tensor": "b", "detail": "missing from target: shape [2] F32"}
    ]


def test_bad_tolerance_is_a_usage_error(llama_pair):
    bdir, tdir, *_ = llama_pair
    with pytest.raises(SystemExit) as ei:
        main(["compare", str(bdir), str(tdir), "--tol", "1e-5,abc"])
    assert ei.value.code == 2


def test_help_is_instant_and_light():
    code = "import sys; from subnetscope.cli import main\ntry:\n main(['--help'])\nexcept SystemExit: pass\nprint(sorted(m for m in ('numpy','torch','numba') if m in sys.modules))"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.stdout.strip().splitlines()[-1] == "[]"
    assert "compare" in p.stdout and "delta" in p.stdout


def test_mask_out_from_cli(llama_pair, tmp_path):
    bdir, tdir, base, _t, changed = llama_pair
    m = tmp_path / "run.mask"
    res = run(["compare", str(bdir), str(tdir), "--mask-out", str(m), "--format", "json"])
    assert res.exit_code == 0
    from subnetscope import MaskFile

    mf = MaskFile(m)
    assert sum(mf.count(n) for n in mf) == sum(changed.values())
    assert not list(tmp_path.glob(".tmp-*"))
