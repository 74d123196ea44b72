"""Every option error of every command is one line ``subnetscope: error: ...`` on stderr, exit code 2.

click's own format is four lines (``Usage:``, ``Try ... --help``, a blank line, ``Error: ...``); here each
case must come out as a single line that still says where to look (``see 'subnetscope X --help'``) or what
to do (the typed error's hint), with nothing on stdout and no traceback.
"""

from __future__ import annotations

import pytest

from subnetscope.cli import main

# (args with {dir} = an existing directory and {file} = an existing file, fragment of the one line)
CASES: list[tuple[str, list[str], str]] = [
    # compare
    ("compare -j 0", ["compare", "-j", "0", "a", "b"], "'-j' / '--jobs': 0 is not in the range 1<=x<=256"),
    ("compare -j abc", ["compare", "-j", "abc", "a", "b"], "'abc' is not a valid integer range"),
    ("compare -j 1.5", ["compare", "-j", "1.5", "a", "b"], "'1.5' is not a valid integer range"),
    ("compare --tol abc", ["compare", "--tol", "abc", "a", "b"], "'--tol': 'abc' is not a number"),
    ("compare --tol ''", ["compare", "--tol", "", "a", "b"], "'--tol': give at least one tolerance"),
    ("compare --tol ,", ["compare", "--tol", " , ", "a", "b"], "'--tol': give at least one tolerance"),
    ("compare --tol -1", ["compare", "--tol", "-1", "a", "b"], "--tol=-1.0 is not a finite non-negative"),
    ("compare --tol nan", ["compare", "--tol", "nan", "a", "b"], "--tol=nan is not a finite non-negative"),
    ("compare --tol inf", ["compare", "--tol", "1e-5,inf", "a", "b"], "--tol[1]=inf is not a finite"),
    ("compare --tol dup", ["compare", "--tol", "1e-5,1e-5", "a", "b"], "--tol: duplicate tolerances"),
    (
        "compare --mask-tol -1",
        ["compare", "a", "b", "--mask-out", "m", "--mask-tol", "-1"],
        "--mask-tol=-1.0",
    ),
    (
        "compare --mask-tol nan",
        ["compare", "a", "b", "--mask-out", "m", "--mask-tol", "nan"],
        "--mask-tol=nan",
    ),
    (
        "compare --mask-tol abc",
        ["compare", "a", "b", "--mask-tol", "abc"],
        "'--mask-tol': 'abc' is not a number",
    ),
    ("compare --format xml", ["compare", "--format", "xml", "a", "b"], "'xml' is not one of 'human', 'json'"),
    ("compare --semantics EXACT", ["compare", "--semantics", "EXACT", "a", "b"], "'EXACT' is not one of"),
    ("compare --executor gpu", ["compare", "--executor", "gpu", "a", "b"], "'gpu' is not one of"),
    ("compare unknown flag", ["compare", "--bogus", "a", "b"], "No such option '--bogus'"),
    ("compare missing argument", ["compare", "a"], "Missing argument 'TARGET'"),
    ("compare no argument", ["compare"], "Missing argument 'BASE'"),
    ("compare extra argument", ["compare", "a", "b", "c"], "Got unexpected extra argument (c)"),
    (
        "compare -o directory",
        ["compare", "a", "b", "-o", "{dir}"],
        "'-o' / '--output': File '{dir}' is a directory",
    ),
    (
        "compare --mask-out directory",
        ["compare", "a", "b", "--mask-out", "{dir}"],
        "File '{dir}' is a directory",
    ),
    ("compare --resume file", ["compare", "a", "b", "--resume", "{file}"], "Directory '{file}' is a file"),
    (
        "compare --chunk-elements 0",
        ["compare", "--chunk-elements", "0", "a", "b"],
        "0 is not in the range 8<=",
    ),
    ("compare --rank-sample 0", ["compare", "--rank-sample", "0", "a", "b"], "0 is not in the range x>=1"),
    ("compare --spectrum 0", ["compare", "--spectrum", "0", "a", "b"], "0 is not in the range x>=1"),
    (
        "compare --step-size abc",
        ["compare", "--step-size", "abc", "a", "b"],
        "'--step-size': 'abc' is not a number",
    ),
    (
        "compare --step-size -1",
        ["compare", "--step-size", "-1", "a", "b"],
        "--step-size=-1.0 is not a finite positive",
    ),
    (
        "compare --step-size 0",
        ["compare", "--step-size", "0", "a", "b"],
        "--step-size=0.0 is not a finite positive",
    ),
    ("compare -o missing value", ["compare", "a", "b", "-o"], "Option '-o' requires an argument"),
    # mask
    ("mask missing -o", ["mask", "a", "b"], "Missing option '-o' / '--output'"),
    ("mask --tol abc", ["mask", "a", "b", "-o", "m", "--tol", "abc"], "'--tol': 'abc' is not a number"),
    (
        "mask --tol -1",
        ["mask", "a", "b", "-o", "m", "--tol", "-1"],
        "--tol=-1.0 is not a finite non-negative",
    ),
    ("mask -j 0", ["mask", "a", "b", "-o", "m", "-j", "0"], "0 is not in the range 1<=x<=256"),
    (
        "mask --chunk-elements 0",
        ["mask", "a", "b", "-o", "m", "--chunk-elements", "0"],
        "not in the range 8<=",
    ),
    ("mask -o directory", ["mask", "a", "b", "-o", "{dir}"], "File '{dir}' is a directory"),
    ("mask --format xml", ["mask", "a", "b", "-o", "m", "--format", "xml"], "'xml' is not one of"),
    # overlap
    ("overlap --tol abc", ["overlap", "--deltas", "a", "b", "c", "--tol", "abc"], "'abc' is not a number"),
    (
        "overlap --tol nan",
        ["overlap", "--deltas", "a", "b", "c", "--tol", "nan"],
        "--tol=nan is not a finite",
    ),
    (
        "overlap --deltas 2 values",
        ["overlap", "--deltas", "a", "b"],
        "Option '--deltas' requires 3 arguments",
    ),
    ("overlap -j 0", ["overlap", "m1", "m2", "-j", "0"], "0 is not in the range 1<=x<=256"),
    ("overlap -o directory", ["overlap", "m1", "m2", "-o", "{dir}"], "File '{dir}' is a directory"),
    ("overlap unknown flag", ["overlap", "--bogus"], "No such option '--bogus'"),
    # series
    ("series missing checkpoints", ["series", "init"], "Missing argument 'CKPT_1 ... CKPT_K'"),
    ("series --tol -1", ["series", "a", "b", "--tol", "-1"], "--tol=-1.0 is not a finite non-negative"),
    ("series --chunk-elements 0", ["series", "a", "b", "--chunk-elements", "0"], "0 is not in the range 8<="),
    ("series --executor gpu", ["series", "a", "b", "--executor", "gpu"], "'gpu' is not one of"),
    ("series -j abc", ["series", "a", "b", "-j", "abc"], "'abc' is not a valid integer range"),
    ("series -o directory", ["series", "a", "b", "-o", "{dir}"], "File '{dir}' is a directory"),
    # rank
    ("rank --sample 0", ["rank", "a", "b", "--sample", "0"], "0 is not in the range x>=1"),
    ("rank --spectrum 0", ["rank", "a", "b", "--spectrum", "0"], "0 is not in the range x>=1"),
    ("rank --seed x", ["rank", "a", "b", "--seed", "x"], "'x' is not a valid integer"),
    ("rank --rtol-multipliers abc", ["rank", "a", "b", "--rtol-multipliers", "abc"], "'abc' is not a number"),
    ("rank --rtol-multipliers ''", ["rank", "a", "b", "--rtol-multipliers", ""], "give at least one number"),
    ("rank --format xml", ["rank", "a", "b", "--format", "xml"], "'xml' is not one of"),
    ("rank missing argument", ["rank", "a"], "Missing argument 'TARGET'"),
    # plot
    ("plot missing -o", ["plot", "{file}"], "Missing option '-o' / '--out-dir'"),
    ("plot -o file", ["plot", "r.json", "-o", "{file}"], "Directory '{file}' is a file"),
    ("plot report is a directory", ["plot", "{dir}", "-o", "out"], "File '{dir}' is a directory"),
    ("plot unknown flag", ["plot", "--bogus"], "No such option '--bogus'"),
    # report
    ("report no report", ["report", "-o", "r.html"], "Missing argument 'REPORTS...'"),
    ("report -o directory", ["report", "r.json", "-o", "{dir}"], "File '{dir}' is a directory"),
    ("report --add directory", ["report", "r.json", "--add", "{dir}", "-o", "r.html"], "is a directory"),
    ("report unknown flag", ["report", "--bogus"], "No such option '--bogus'"),
    # delta
    ("delta unknown subcommand", ["delta", "bogus"], "No such command 'bogus'"),
    (
        "delta export --level 99",
        ["delta", "export", "a", "b", "-o", "d", "--level", "99"],
        "99 is not in the range",
    ),
    (
        "delta export --chunk-elements 0",
        ["delta", "export", "a", "b", "-o", "d", "--chunk-elements", "0"],
        "0 is not in the range 8<=",
    ),
    (
        "delta export --chunk-elements 12",
        ["delta", "export", "a", "b", "-o", "d", "--chunk-elements", "12"],
        "--chunk-elements=12 is not a multiple of 8",
    ),
    ("delta export -o file", ["delta", "export", "a", "b", "-o", "{file}"], "Directory '{file}' is a file"),
    ("delta export missing -o", ["delta", "export", "a", "b"], "Missing option '-o' / '--output'"),
    ("delta export -j 0", ["delta", "export", "a", "b", "-o", "d", "-j", "0"], "0 is not in the range 1<="),
    (
        "delta apply --max-shard-size 5XB",
        ["delta", "apply", "a", "{dir}", "-o", "o", "--max-shard-size", "5XB"],
        "'--max-shard-size': '5XB' is not a size",
    ),
    (
        "delta apply --max-shard-size 0",
        ["delta", "apply", "a", "{dir}", "-o", "o", "--max-shard-size", "0"],
        "'--max-shard-size': '0': the size must be positive",
    ),
    (
        "delta apply --max-shard-size nan",
        ["delta", "apply", "a", "{dir}", "-o", "o", "--max-shard-size", "nanGB"],
        "'nanGB' is not a size",
    ),
    ("delta apply -o file", ["delta", "apply", "a", "{dir}", "-o", "{file}"], "Directory '{file}' is a file"),
    (
        "delta apply delta is a file",
        ["delta", "apply", "a", "{file}", "-o", "o"],
        "Directory '{file}' is a file",
    ),
    ("delta apply missing argument", ["delta", "apply", "a"], "Missing argument 'DELTA_DIR'"),
    # conjecture
    ("conjecture missing --full", ["conjecture", "--base", "a", "--sub", "c"], "Missing option '--full'"),
    (
        "conjecture --tol abc",
        ["conjecture", "--base", "a", "--full", "b", "--sub", "c", "--tol", "abc"],
        "'--tol': 'abc' is not a number",
    ),
    (
        "conjecture --subnetwork-tol -1",
        ["conjecture", "--base", "a", "--full", "b", "--sub", "c", "--subnetwork-tol", "-1"],
        "--subnetwork-tol=-1.0 is not a finite",
    ),
    # study
    ("study missing config", ["study"], "Missing argument 'CONFIG'"),
    ("study --out file", ["study", "c.toml", "--out", "{file}"], "Directory '{file}' is a file"),
    ("study --format xml", ["study", "c.toml", "--format", "xml"], "'xml' is not one of"),
    # the group itself
    ("unknown command", ["bogus"], "No such command 'bogus'"),
    ("unknown top-level flag", ["--bogus"], "No such option '--bogus'"),
]


def _fill(args: list[str], d: str, f: str) -> list[str]:
    return [a.replace("{dir}", d).replace("{file}", f) for a in args]


@pytest.mark.parametrize(("label", "args", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_option_error_is_one_line(tmp_path, capsys, label, args, fragment):
    d = tmp_path / "a-dir"
    d.mkdir()
    f = tmp_path / "a-file"
    f.write_text("{}")
    with pytest.raises(SystemExit) as e:
        main(_fill(args, str(d), str(f)))
    out, err = capsys.readouterr()
    assert e.value.code == 2, err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("subnetscope: error: "), line
    assert fragment.replace("{dir}", str(d)).replace("{file}", str(f)) in line, line
    assert "Usage:" not in err and "Try " not in err and "Traceback" not in err
    # where to look, on the same line: the command's --help, or the typed error's hint
    assert line.endswith("--help'") or "; " in line[len("subnetscope: error: ") :], line
    assert not (tmp_path / "m").exists() and not (tmp_path / "d").exists()


def test_usage_hint_names_the_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["delta", "export", "a", "b", "-o", "d", "--level", "99"])
    err = capsys.readouterr().err
    assert err == (
        "subnetscope: error: Invalid value for '--level': 99 is not in the range -7<=x<=22; "
        "see 'subnetscope delta export --help'\n"
    )


@pytest.mark.parametrize("args", [[], ["delta"]], ids=["subnetscope", "subnetscope delta"])
def test_no_arguments_still_shows_help(capsys, args):
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    assert code in (0, 2)  # click < 8.2 returns 0 after the help, later versions exit 2
    assert "Usage: subnetscope" in out + err and "Commands:" in out + err


def test_help_and_version_exit_0(capsys):
    for args in (["--help"], ["compare", "--help"], ["--version"]):
        assert main(args) in (None, 0)
    assert "Usage: subnetscope compare" in capsys.readouterr().out


def test_debug_shows_the_click_traceback(capsys, monkeypatch):
    import click

    monkeypatch.setenv("SUBNETSCOPE_DEBUG", "1")
    with pytest.raises(click.BadParameter):
        main(["compare", "-j", "0", "a", "b"])
