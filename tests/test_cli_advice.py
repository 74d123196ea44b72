"""Library errors speak library terms; the command line prints flags, from one table (cli/advice.py)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import subnetscope
from factory import llama_names, perturb, random_state, save_checkpoint
from subnetscope.anatomy.ulp import MissingAnatomyError
from subnetscope.cli import main
from subnetscope.cli.advice import FLAG_ADVICE, cli_line, cli_text
from subnetscope.delta import export_delta
from subnetscope.engine.resume import ResumeMismatchError
from subnetscope.errors import OutputConflictError

SRC = Path(subnetscope.__file__).resolve().parent
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
#: presentation, where flags belong
PRESENTATION = ("cli/", "study/", "render/", "demo.py")
#: flags that are not ours (Ray's own command line)
ALLOWED = {("engine/executors/ray.py", "--head")}
#: modules not yet converted (none left)
PENDING: set[str] = set()


def _raised_strings(tree: ast.AST) -> list[tuple[int, str]]:
    """String pieces inside ``raise X(...)`` calls and assigned to a ``hint`` variable."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            parts: list[ast.AST] = [*node.exc.args, *(k.value for k in node.exc.keywords)]
        elif isinstance(node, (ast.Assign, ast.AugAssign)) and "hint" in ast.unparse(node).split("=")[0]:
            parts = [node.value]
        else:
            continue
        for p in parts:
            for c in ast.walk(p):
                if isinstance(c, ast.Constant) and isinstance(c.value, str):
                    out.append((node.lineno, c.value))
    return out


def _library_flags() -> list[str]:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith(PRESENTATION) or rel in PENDING:
            continue
        for line, text in _raised_strings(ast.parse(path.read_text(encoding="utf-8"))):
            bad += [f"{rel}:{line}: {f}" for f in FLAG.findall(text) if (rel, f) not in ALLOWED]
    return bad


def test_no_library_error_names_a_flag():
    assert _library_flags() == []


def test_the_scan_sees_flags_in_raised_strings():
    tree = ast.parse(
        'raise UsageError("bad", f"use --tol {x}")\nhint = "a"\nhint += " (pass --overwrite)"\nraise E(hint="--jobs")'
    )
    assert [t for _, t in _raised_strings(tree) if FLAG.search(t)] == [
        "use --tol ",
        " (pass --overwrite)",
        "--jobs",
    ]


def test_every_library_wording_in_the_table_is_used_and_no_flag_wording_is():
    sources = {
        p.relative_to(SRC).as_posix(): p.read_text(encoding="utf-8")
        for p in SRC.rglob("*.py")
        if not p.relative_to(SRC).as_posix().startswith(PRESENTATION)
    }
    for library, flag in FLAG_ADVICE:
        assert any(library in s for s in sources.values()), f"no library error says {library!r}"
        assert FLAG.search(flag), flag
    assert len(FLAG_ADVICE) == 12


def test_cli_text_maps_library_words_and_leaves_the_rest():
    e = ResumeMismatchError(
        "run: not a subnetscope resume directory of this version", "choose another `resume` directory"
    )
    assert (
        cli_line(e)
        == "run: not a subnetscope resume directory of this version; choose another --resume directory"
    )
    assert e.hint == "choose another `resume` directory"  # the library keeps its words
    assert cli_text("`subnetscope mask` and `jobs`") == "`subnetscope mask` and `jobs`"
    m = MissingAnatomyError("no torch", "rerun compare with `ulp=True` (or use compare_ulp())")
    assert cli_line(m) == "no torch; rerun compare with --ulp (or use compare_ulp())"


@pytest.fixture
def pair(tmp_path):
    state = random_state(llama_names(layers=1, hidden=8, inter=16, vocab=12))
    b, t = tmp_path / "base", tmp_path / "target"
    save_checkpoint(state, b)
    save_checkpoint(perturb(state, 0.1)[0], t)
    return b, t


def test_a_resume_directory_of_others_in_library_and_cli_words(pair, tmp_path, capsys):
    b, t = pair
    d = tmp_path / "run"
    d.mkdir()
    (d / "notes.txt").write_text("mine")
    with pytest.raises(ResumeMismatchError) as ei:
        subnetscope.compare(b, t, resume=d)
    assert ei.value.hint == "give an empty or new directory for `resume` (it is created if missing)"
    capsys.readouterr()
    with pytest.raises(SystemExit) as ex:
        main(["compare", str(b), str(t), "--resume", str(d)])
    err = capsys.readouterr().err
    assert ex.value.code == 2
    assert err.strip().splitlines()[-1] == (
        f"subnetscope: error: {d}: exists, is not empty and has no manifest.json; "
        "give an empty or new directory for --resume (it is created if missing)"
    )
    assert (d / "notes.txt").read_text() == "mine"


def test_an_existing_output_in_library_and_cli_words(pair, tmp_path, capsys):
    b, t = pair
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputConflictError) as ei:
        export_delta(b, t, out)
    assert ei.value.hint == "choose another output path, remove it, or pass `overwrite=True`"
    with pytest.raises(SystemExit) as ex:
        main(["delta", "export", str(b), str(t), "-o", str(out)])
    assert ex.value.code == 2
    assert (
        "already exists; choose another output path, remove it, or pass --overwrite"
        in capsys.readouterr().err
    )
    assert (out / "notes.txt").read_text() == "mine"
