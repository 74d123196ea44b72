"""Names from a checkpoint cannot forge output lines or send terminal escapes: every human-readable line
escapes control characters (tables, summaries, findings, log and error lines); JSON stays exact.

Before, a tensor named ``"w\\nsubnetscope: error: ..."`` printed a second, forged error line, and an ANSI
escape in a name reached the terminal raw.
"""

from __future__ import annotations

import json

import pytest
import torch

from factory import save_checkpoint
from subnetscope.cli import main
from subnetscope.display import printable, printable_lines

FORGED = "model.layers.0.mlp.evil\nsubnetscope: error: forged line\x1b[31m.weight"
ONLY = "extra\r\x1b[2J\u202e.weight"
FORGED_SHOWN = "model.layers.0.mlp.evil\\nsubnetscope: error: forged line\\x1b[31m.weight"
ONLY_SHOWN = "extra\\r\\x1b[2J\\u202e.weight"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("a\nb", "a\\nb"),
        ("a\r\nb", "a\\r\\nb"),
        ("tab\there", "tab\\there"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("nul\x00", "nul\\x00"),
        ("del\x7f", "del\\x7f"),
        ("c1 csi \x9b2J", "c1 csi \\x9b2J"),
        ("line\u2028sep", "line\\u2028sep"),
        ("para\u2029sep", "para\\u2029sep"),
        ("rtl \u202eoverride", "rtl \\u202eoverride"),
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("bom\ufeff", "bom\\ufeff"),
        ("bell\x07", "bell\\x07"),
        ("backspace\x08", "backspace\\x08"),
    ],
)
def test_printable_escapes(raw, shown):
    assert printable(raw) == shown
    assert "\n" not in printable(raw) and "\x1b" not in printable(raw)


@pytest.mark.parametrize(
    "text", ["model.layers.0.self_attn.q_proj.weight", "poids_été", "权重", "a b-c/d:e", ""]
)
def test_ordinary_text_is_unchanged(text):
    assert printable(text) == text and printable_lines(text) == text


def test_printable_lines_keeps_line_breaks_only():
    assert printable_lines("a\nb\x1b[2J\r\n") == "a\nb\\x1b[2J\\r\n"
    assert printable(42) == "42" and printable(None) == "None"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A pair whose tensor names hold a newline + a forged error line, an ANSI escape, CR and an RTL override."""
    root = tmp_path_factory.mktemp("hostile")
    g = torch.Generator().manual_seed(0)
    base = {
        "model.layers.0.self_attn.q_proj.weight": torch.randn(8, 8, generator=g).to(torch.bfloat16),
        FORGED: torch.randn(6, 8, generator=g).to(torch.bfloat16),
    }
    target = {k: v.clone() for k, v in base.items()}
    target[FORGED][0, :3] += 1.0  # 3 changed elements
    target["model.layers.0.self_attn.q_proj.weight"][1, 1] += 1.0
    target[ONLY] = torch.zeros(4, dtype=torch.bfloat16)
    return save_checkpoint(base, root / "base"), save_checkpoint(target, root / "target"), root


def _run(capsys, *args):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return e.value.code, out, err


def _assert_safe(text: str) -> None:
    for bad in ("\x1b", "\r", "\u202e"):
        assert bad not in text, repr(text)
    assert not any(line.startswith("subnetscope: error: forged") for line in text.splitlines())
    assert "forged line" not in text or "\\nsubnetscope: error: forged line" in text


def test_compare_human_output_escapes_names(hostile, capsys):
    b, t, _ = hostile
    code, out, err = _run(capsys, "compare", b, t)
    assert code == 0
    _assert_safe(out + err)
    assert f"{ONLY_SHOWN}: " in out  # the finding line of the tensor only in target


def test_compare_json_keeps_names_exact(hostile, capsys):
    b, t, _ = hostile
    code, out, _err = _run(capsys, "compare", b, t, "--format", "json")
    assert code == 0
    doc = json.loads(out)
    names = {x["name"]: x for x in doc["tensors"]}
    assert set(names) == {"model.layers.0.self_attn.q_proj.weight", FORGED}
    assert names[FORGED]["numel"] == 48 and names[FORGED]["unchanged"][-1] == 45
    assert [f["tensor"] for f in doc["findings"]] == [ONLY]


def test_strict_error_line_is_one_line(hostile, capsys):
    b, t, _ = hostile
    code, out, err = _run(capsys, "compare", b, t, "--strict", "--format", "json")
    assert code == 1
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("subnetscope: error: --strict: 1 finding(s)"), err
    assert ONLY_SHOWN in lines[0]
    _assert_safe(err)


def test_rank_table_escapes_names(hostile, capsys):
    b, t, _ = hostile
    code, out, err = _run(capsys, "rank", b, t, "--tensors", "--device", "cpu")
    assert code == 0
    _assert_safe(out + err)
    assert FORGED_SHOWN in out  # the per-matrix table row, on one line
    row = next(line for line in out.splitlines() if FORGED_SHOWN in line)
    assert row.startswith(FORGED_SHOWN) and row.split()[len(FORGED_SHOWN.split())] == "6x8"


def test_mask_and_series_escape_names(hostile, capsys, tmp_path):
    b, t, _ = hostile
    code, out, err = _run(capsys, "mask", b, t, "-o", tmp_path / "m.mask")
    assert code == 0
    _assert_safe(out + err)
    assert ONLY_SHOWN in err  # "1 finding(s), e.g. ..."
    code, out, err = _run(capsys, "series", b, t)
    assert code == 0
    _assert_safe(out + err)


def test_error_line_with_a_hostile_path_stays_one_line(capsys, tmp_path):
    hostile_path = str(tmp_path / "nope\nsubnetscope: error: forged\x1b[2J")
    code, out, err = _run(capsys, "compare", hostile_path, tmp_path / "other")
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1, err
    assert "nope\\nsubnetscope: error: forged\\x1b[2J: no such file or directory" in err
    _assert_safe(err)


def test_parser_error_with_a_hostile_value_stays_one_line(capsys):
    code, out, err = _run(capsys, "compare", "--format", "x\n\x1b[31my", "a", "b")
    assert code == 2 and len(err.splitlines()) == 1 and "\x1b" not in err, err
