"""A write the system refuses is one line naming the path, what the system said and what to do; exit 2, no
traceback, nothing left behind (issue 14, item 3, write side).

Root may write into any directory whatever its mode, so a read-only directory is a real read-only file
system here: a tmpfs mounted ``ro``. A full disk is a small tmpfs filled to the last byte, and a full
stdout is ``/dev/full``. Mounting needs root with CAP_SYS_ADMIN (so in CI, which runs as root on this kind
of machine); elsewhere those tests skip and say why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import subnetscope
from cli_helpers import run
from factory import llama_names, perturb, random_state, save_checkpoint


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A base/target pair, a delta between them and a compare report (outside any mount)."""
    p = tmp_path_factory.mktemp("inputs")
    base = random_state(llama_names(layers=1, hidden=16, inter=32, vocab=24), seed=0)
    tgt, _ = perturb(base, 0.2, seed=1)
    save_checkpoint(base, p / "base", shards=2)
    save_checkpoint(tgt, p / "tgt", shards=2)
    from subnetscope.delta import export_delta

    export_delta(p / "base", p / "tgt", p / "d")
    (p / "r.json").write_text(json.dumps(subnetscope.compare(p / "base", p / "tgt").to_json()))
    return p


def _mount(path: Path, options: str) -> None:
    if shutil.which("mount") is None:
        pytest.skip("no mount command here: cannot make a read-only or full file system")
    path.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}): a read-only or full file system "
            "needs root with CAP_SYS_ADMIN, as in CI"
        )


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def readonly(tmp_path):
    """A directory on a read-only file system (root cannot write there either)."""
    d = tmp_path / "ro"
    _mount(d, "size=1m,mode=0755")
    try:
        (d / "existing").mkdir()
        r = subprocess.run(["mount", "-o", "remount,ro", str(d)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot remount a tmpfs read-only here ({r.stderr.strip()})")
        with pytest.raises(OSError, match="Read-only file system"):
            (d / "probe").write_text("x")
        yield d
    finally:
        _umount(d)


@pytest.fixture
def full(tmp_path):
    """A directory on a file system with not one byte free."""
    d = tmp_path / "full"
    _mount(d, "size=256k,mode=0755")
    try:
        (d / "existing").mkdir()
        fd = os.open(d / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as e:
            assert e.errno == 28
        finally:
            os.close(fd)
        with pytest.raises(OSError, match="No space left on device"):
            (d / "probe").write_bytes(b"x" * 4096)
        (d / "probe").unlink(missing_ok=True)
        yield d
    finally:
        _umount(d)


def commands(p: Path, out: Path) -> list[tuple[str, list[str], Path]]:
    """(name, argv, the path the message must name): every command that writes, writing to ``out``."""
    b, t, d, r = p / "base", p / "tgt", p / "d", p / "r.json"
    return [
        ("compare -o", ["compare", b, t, "-o", out / "r.json"], out / "r.json"),
        (
            "compare --format json -o",
            ["compare", b, t, "--format", "json", "-o", out / "r.json"],
            out / "r.json",
        ),
        ("compare --mask-out", ["compare", b, t, "--mask-out", out / "m.mask"], out / "m.mask"),
        ("compare --resume", ["compare", b, t, "--resume", out / "resume"], out / "resume"),
        ("mask -o", ["mask", b, t, "-o", out / "m.mask"], out / "m.mask"),
        ("series -o", ["series", b, t, "-o", out / "s.json"], out / "s.json"),
        ("rank -o", ["rank", b, t, "--device", "cpu", "-o", out / "rank.json"], out / "rank.json"),
        ("delta export -o", ["delta", "export", b, t, "-o", out / "delta"], out / "delta"),
        ("delta apply -o", ["delta", "apply", b, d, "-o", out / "rebuilt"], out / "rebuilt"),
        ("plot -o", ["plot", r, "-o", out / "plots"], out / "plots" / "heatmap.png"),  # its first file
        ("report -o", ["report", r, "-o", out / "page.html"], out / "page.html"),
    ]


def _check(capsys, p: Path, where: Path, words: str, hint: str) -> None:
    before = sorted(os.listdir(where))
    bad = []
    for name, argv, shown in commands(p, where / "existing"):
        rc, _out, err = run(capsys, argv)
        lines = err.strip().splitlines()
        last = lines[-1] if lines else ""
        said = f": cannot write the output: {words}; {hint}"  # of the path or of the file it writes in it
        if rc != 2 or not (last.startswith(f"subnetscope: error: {shown}") and last.endswith(said)):
            bad.append(f"{name}: rc={rc} {err.strip()[-400:]!r}")
        if len(lines) != 1 and not (len(lines) == 2 and lines[0].startswith("resume: journal in")):
            bad.append(f"{name}: {len(lines)} lines on stderr: {err!r}")
        left = sorted(os.listdir(where)), sorted(os.listdir(where / "existing"))
        if left != (before, []):
            bad.append(f"{name}: left {left}")
    assert not bad, "\n".join(bad)


def test_a_read_only_file_system(inputs, readonly, capsys):
    _check(capsys, inputs, readonly, "Read-only file system (EROFS)",
           "the file system is mounted read-only: write the output to a writable location")  # fmt: skip


def test_a_read_only_file_system_where_the_output_directory_must_be_created(inputs, readonly, capsys):
    rc, _o, err = run(capsys, ["compare", inputs / "base", inputs / "tgt", "-o", readonly / "new" / "r.json"])
    assert rc == 2
    assert err == (
        f"subnetscope: error: {readonly / 'new' / 'r.json'}: cannot write the output: Read-only file system (EROFS); "
        "the file system is mounted read-only: write the output to a writable location\n"
    )


def test_a_full_disk(inputs, full, capsys):
    _check(capsys, inputs, full, "No space left on device (ENOSPC)",
           "free some space on that file system or write the output elsewhere")  # fmt: skip


def test_a_parent_that_is_a_file(inputs, tmp_path, capsys):
    """``-o x/out`` where x is a regular file (not an input): the system's words, not a traceback."""
    where = tmp_path / "w"
    where.mkdir()
    (where / "existing").write_text("I am a file")
    bad = []
    for name, argv, shown in commands(inputs, where / "existing"):
        rc, _out, err = run(capsys, argv)
        want = (
            f"subnetscope: error: {shown}: cannot write the output: Not a directory (ENOTDIR); "
            "a parent of this path is a file, not a directory: choose another path"
        )
        if rc != 2 or err.strip().splitlines()[-1:] != [want]:
            bad.append(f"{name}: rc={rc} {err.strip()[-400:]!r}")
    assert not bad, "\n".join(bad)
    assert sorted(os.listdir(where)) == ["existing"] and (where / "existing").read_text() == "I am a file"


def test_the_library_raises_the_typed_error(inputs, readonly, full):
    from subnetscope.delta import export_delta
    from subnetscope.errors import OutputWriteError, SubnetscopeError

    with pytest.raises(OutputWriteError, match=r"m\.mask: cannot write the output: Read-only file system"):
        subnetscope.compare(inputs / "base", inputs / "tgt", mask_out=readonly / "m.mask")
    with pytest.raises(OutputWriteError, match=r"/d: cannot write the output: No space left on device"):
        export_delta(inputs / "base", inputs / "tgt", full / "d")
    assert issubclass(OutputWriteError, SubnetscopeError) and OutputWriteError.exit_code == 2


@pytest.mark.parametrize(
    "argv",
    [
        ["compare", "{b}", "{t}", "--format", "json"],
        ["compare", "{b}", "{t}"],
        ["mask", "{b}", "{t}", "-o", "{tmp}/m.mask", "--format", "json"],
        ["delta", "export", "{b}", "{t}", "-o", "{tmp}/d"],
    ],
)
def test_stdout_on_a_full_device(inputs, tmp_path, argv):
    """``> /dev/full``: the data cannot go out; one line on stderr, exit 2, no traceback."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    fill = {"b": str(inputs / "base"), "t": str(inputs / "tgt"), "tmp": str(tmp_path)}
    env = dict(os.environ, PYTHONPATH=str(Path(subnetscope.__file__).parent.parent))  # the package under test
    with open("/dev/full", "w") as dev_full:
        p = subprocess.run(
            [sys.executable, "-m", "subnetscope", *(a.format(**fill) for a in argv)],
            stdout=dev_full, stderr=subprocess.PIPE, text=True, env=env, timeout=120,
        )  # fmt: skip
    assert p.returncode == 2, p.stderr
    assert p.stderr == (
        "subnetscope: error: cannot write to standard output: No space left on device; "
        "free space where stdout goes, redirect it elsewhere, or write the report with -o FILE\n"
    )
