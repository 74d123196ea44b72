"""Outputs never touch inputs (issue 14, item 2): every writing command refuses an output that is, holds or
lies inside an input, or another output, on resolved paths; ``--overwrite`` replaces only our own outputs;
a symlinked output is written through and a device node or FIFO is never replaced."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

import subnetscope
from cli_helpers import run
from factory import llama_names, perturb, random_state, save_checkpoint

REPO = "acme/tiny"
COMMIT = "c" * 40


def hub_cache(root: Path, state) -> Path:
    """``models--acme--tiny`` as huggingface_hub lays it out: files in blobs/<sha256>, the snapshot's
    entries relative symlinks ``../../blobs/<sha256>``, refs/main naming the commit."""
    from safetensors.torch import save_file

    repo = root / "models--acme--tiny"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    snap = repo / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    staging = root / "staging"
    staging.mkdir()
    save_file(
        {n: t.contiguous() for n, t in state.items()}, str(staging / "model.safetensors"), {"format": "pt"}
    )
    (staging / "config.json").write_text(json.dumps({"model_type": "llama"}))
    for f in staging.iterdir():
        sha = hashlib.sha256(f.read_bytes()).hexdigest()
        f.rename(repo / "blobs" / sha)
        os.symlink(f"../../blobs/{sha}", snap / f.name)
    staging.rmdir()
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Inputs of every writing command, in one folder P: checkpoints base, tgt, tgt2 (two shards each), a
    single-file checkpoint, two masks, a compare report, a delta, and a Hugging Face cache holding a model."""
    p = tmp_path_factory.mktemp("world")
    shapes = llama_names(layers=1, hidden=16, inter=32, vocab=24)
    base = random_state(shapes, seed=0)
    tgt, _ = perturb(base, 0.2, seed=1)
    tgt2, _ = perturb(base, 0.1, seed=2)
    save_checkpoint(base, p / "base", shards=2)
    save_checkpoint(tgt, p / "tgt", shards=2)
    save_checkpoint(tgt2, p / "tgt2", shards=2)
    save_checkpoint(tgt, p / "single")
    subnetscope.compare(p / "base", p / "tgt", [1e-5], mask_out=p / "m1.mask")
    subnetscope.compare(p / "base", p / "tgt2", [1e-5], mask_out=p / "m2.mask")
    (p / "r.json").write_text(json.dumps(subnetscope.compare(p / "base", p / "tgt").to_json()))
    from subnetscope.delta import export_delta

    export_delta(p / "base", p / "tgt", p / "d")
    hub_cache(p / "hub", base)
    os.symlink("base", p / "alias")  # a directory symlink onto an input
    os.symlink("tgt/config.json", p / "link.json")  # a file symlink onto an input
    return p


@pytest.fixture
def hub(world, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(world / "hub"))
    return world / "hub" / "models--acme--tiny"


def tree(root: Path) -> dict[str, str]:
    """Every entry under ``root``: a file's sha256, a symlink's target, or 'dir'."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            f = Path(dirpath) / name
            rel = str(f.relative_to(root))
            if f.is_symlink():
                out[rel] = "-> " + os.readlink(f)
            elif f.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def _blob(hub: Path, name: str) -> Path:
    return (hub / "snapshots" / COMMIT / name).resolve()


def targets(w: Path, hub: Path) -> list[tuple[str, str, Path]]:
    """Paths that resolve onto or into an input: (the input they hit, how, path)."""
    snap = hub / "snapshots" / COMMIT
    return [
        ("tgt", "shard", w / "tgt" / "model-00001-of-00002.safetensors"),
        ("tgt", "new file in a checkpoint dir", w / "tgt" / "report.json"),
        ("tgt", "a checkpoint dir", w / "tgt"),
        ("tgt", "dot-dot onto a shard", w / "tgt2" / ".." / "tgt" / "model-00002-of-00002.safetensors"),
        ("tgt", "file symlink onto an input", w / "link.json"),
        ("tgt2", "a shard of the second target", w / "tgt2" / "model-00002-of-00002.safetensors"),
        ("base", "base shard", w / "base" / "model-00002-of-00002.safetensors"),
        ("base", "index", w / "base" / "model.safetensors.index.json"),
        ("base", "config", w / "base" / "config.json"),
        ("base", "new file two levels into a checkpoint dir", w / "base" / "sub" / "x.json"),
        ("base", "under a shard", w / "base" / "model-00001-of-00002.safetensors" / "x"),
        ("base", "through a directory symlink", w / "alias" / "config.json"),
        ("base", "new file through a directory symlink", w / "alias" / "new.json"),
        ("base", "a checkpoint dir", w / "base"),
        ("single", "single-file weights", w / "single" / "model.safetensors"),
        ("single", "the config beside single-file weights", w / "single" / "config.json"),
        ("m1", "mask", w / "m1.mask"),
        ("m1", "under a mask", w / "m1.mask" / "x"),
        ("r", "report", w / "r.json"),
        ("r", "under a report", w / "r.json" / "plots"),
        ("d", "delta manifest", w / "d" / "delta.json"),
        ("d", "new file in the delta", w / "d" / "x.json"),
        ("d", "the delta dir", w / "d"),
        ("hub", "hub snapshot entry (symlink)", snap / "model.safetensors"),
        ("hub", "hub blob", _blob(hub, "model.safetensors")),
        ("hub", "hub config blob", _blob(hub, "config.json")),
        ("hub", "new file in the hub snapshot", snap / "new.json"),
        ("hub", "new file in the hub blobs", hub / "blobs" / "new.json"),
        ("hub", "the hub snapshot dir", snap),
        ("hub", "the cached repository", hub),
    ]


def commands(w: Path) -> list[tuple[str, str, list[str]]]:
    """Every writing command and output option: (the inputs it reads, name, argv with ``{}`` for the path)."""
    b, t, t2 = str(w / "base"), str(w / "tgt"), str(w / "tgt2")
    m1, m2, r, d = str(w / "m1.mask"), str(w / "m2.mask"), str(w / "r.json"), str(w / "d")
    return [
        ("base tgt", "compare -o", ["compare", b, t, "-o", "{}"]),
        ("hub tgt", "compare -o (hub base)", ["compare", REPO, t, "-o", "{}"]),
        ("base tgt", "compare --mask-out", ["compare", b, t, "--mask-out", "{}"]),
        ("hub tgt", "compare --mask-out (hub base)", ["compare", REPO, t, "--mask-out", "{}"]),
        ("base tgt", "compare --resume", ["compare", b, t, "--resume", "{}"]),
        (
            "base single",
            "compare single-file -o",
            ["compare", b, str(w / "single" / "model.safetensors"), "-o", "{}"],
        ),
        ("base tgt", "mask -o", ["mask", b, t, "-o", "{}"]),
        ("hub tgt", "mask -o (hub base)", ["mask", REPO, t, "-o", "{}"]),
        ("base tgt tgt2", "series -o", ["series", b, t, t2, "-o", "{}"]),
        ("m1", "overlap -o", ["overlap", m1, m2, "-o", "{}"]),
        ("m1 base", "overlap --base -o", ["overlap", m1, m2, "--base", b, "-o", "{}"]),
        ("base tgt tgt2", "overlap --deltas -o", ["overlap", "--deltas", b, t, t2, "-o", "{}"]),
        ("base tgt", "rank -o", ["rank", b, t, "--device", "cpu", "-o", "{}"]),
        ("base tgt tgt2", "conjecture -o", ["conjecture", "--base", b, "--full", t, "--sub", t2, "-o", "{}"]),
        ("r", "plot -o", ["plot", r, "-o", "{}"]),
        ("r", "report -o", ["report", r, "-o", "{}"]),
        ("base tgt", "delta export -o", ["delta", "export", b, t, "-o", "{}"]),
        ("base tgt", "delta export -o --overwrite", ["delta", "export", b, t, "-o", "{}", "--overwrite"]),
        (
            "hub tgt",
            "delta export -o --overwrite (hub)",
            ["delta", "export", REPO, t, "-o", "{}", "--overwrite"],
        ),
        ("base d", "delta apply -o", ["delta", "apply", b, d, "-o", "{}"]),
        (
            "base d",
            "delta apply -o --overwrite --verify",
            ["delta", "apply", b, d, "-o", "{}", "--overwrite", "--verify"],
        ),
    ]


#: the words of our refusal; click's own (a directory given where a file goes) is the other way to refuse
REFUSED = (
    "is an input",
    "lies inside an input",
    "contains an input",
    "not a regular file",
    "not a directory",
)


def test_every_output_onto_or_into_an_input_is_refused_and_no_input_changes(world, hub, capsys):
    """The property of issue 14's "Done means", by explicit enumeration: every writing command and output
    option × every path onto or into one of the inputs that command reads; each run exits 2 with one line,
    and afterwards every byte (and every entry) under P is what it was."""
    before = tree(world)
    assert len(before) == 38
    bad, runs = [], 0
    for groups, cname, argv in commands(world):
        for group, how, path in targets(world, hub):
            if group not in groups.split():
                continue
            runs += 1
            args = [str(path) if a == "{}" else a for a in argv]
            rc, _out, err = run(capsys, args)
            lines = err.strip().splitlines()
            ours = (
                len(lines) == 1
                and lines[0].startswith("subnetscope: error: ")
                and any(w in lines[0] for w in REFUSED)
            )
            # click's own refusal of an existing directory where a file goes (or a file where a directory goes)
            clicks = "invalid value" in err.lower() and (path.is_dir() or path.is_file())
            if rc != 2 or not (ours or clicks):
                bad.append(f"{cname} <- {how}: rc={rc} {err.strip()[-300:]!r}")
    assert runs == 229
    assert not bad, "\n".join(bad[:20]) + f"\n({len(bad)} of {runs})"
    assert tree(world) == before  # no input changed, nothing was added or left behind anywhere


@pytest.mark.parametrize(
    "argv, words",
    [
        (["compare", "{b}", "{t}", "-o", "{t}/model-00001-of-00002.safetensors"],
         "model-00001-of-00002.safetensors: -o is an input (a file of TARGET); inputs are never written; "
         "choose an output path outside the inputs"),
        (["compare", "{b}", "{t}", "--mask-out", "{t}/model-00001-of-00002.safetensors"],
         "--mask-out is an input (a file of TARGET)"),
        (["mask", "{b}", "{t}", "-o", "{b}/model-00001-of-00002.safetensors"], "-o is an input (a file of BASE)"),
        (["series", "{b}", "{t}", "-o", "{t}/model-00002-of-00002.safetensors"],
         "-o is an input (a file of CKPT_1)"),
        (["compare", "{b}", "{t}", "-o", "{b}/config.json"], "-o is an input (a file of BASE)"),
        (["report", "{w}/r.json", "-o", "{w}/r.json"], "-o is an input (a JSON report read)"),
        (["compare", "{b}", "{t}", "-o", "{w}/x.json", "--mask-out", "{w}/x.json"],
         "x.json: --mask-out is also the output of -o ({w}/x.json); give each output its own path"),
        (["compare", "{b}", "{t}", "-o", "{w}/x.json", "--mask-out", "{w}/link-x"],
         "link-x: --mask-out is also the output of -o"),
        (["compare", "{b}", "{t}", "--resume", "{w}/run", "--mask-out", "{w}/run/m.mask"],
         "run: --resume overlaps the output of --mask-out ({w}/run/m.mask)"),
        (["compare", "{b}", "{t}", "-o", "{t}/new.json"], "-o lies inside an input (TARGET directory, {t})"),
        (["delta", "apply", "{b}", "{w}/d", "-o", "{w}", "--overwrite"],
         ": the output directory contains an input (BASE directory, {b}), and it would be replaced"),
        (["delta", "export", "{b}", "{t}", "-o", "{w}", "--overwrite"],
         ": the delta directory contains an input (BASE directory, {b}), and it would be replaced"),
        (["delta", "apply", "{b}", "{w}/d", "-o", "{w}/d/out"], "the output directory lies inside an input"),
        (["delta", "export", "{b}", "{t}", "-o", "{b}/delta"], "the delta directory lies inside an input"),
        (["plot", "{w}/r.json", "-o", "{w}/r.json/plots"], "-o lies inside an input (the JSON report read, "),
    ],
)  # fmt: skip
def test_the_message_names_the_output_and_the_input(world, capsys, argv, words):
    """Issue 14 item 2's own cases, each with its exact message (exit 2, one line)."""
    w = world
    links = w / "link-x"
    if not links.is_symlink():
        os.symlink("x.json", links)
    fill = {"b": str(w / "base"), "t": str(w / "tgt"), "w": str(w)}
    before = tree(w / "base"), tree(w / "tgt"), (w / "r.json").read_bytes()
    rc, out, err = run(capsys, [a.format(**fill) for a in argv])
    words = words.format(**fill)
    assert rc == 2 and err.count("\n") == 1 and err.startswith("subnetscope: error: "), err
    assert words in err, err
    assert (tree(w / "base"), tree(w / "tgt"), (w / "r.json").read_bytes()) == before
    assert not (w / "x.json").exists() and not (w / "run").exists()


def test_library_entry_points_refuse_the_same(world, tmp_path):
    from subnetscope.delta import apply_delta, export_delta
    from subnetscope.errors import OutputConflictError, UsageError
    from subnetscope.render.html import write_html

    b, t, d = world / "base", world / "tgt", world / "d"
    before = tree(world)
    shard = t / "model-00001-of-00002.safetensors"
    with pytest.raises(OutputConflictError, match="mask_out is an input"):
        subnetscope.compare(b, t, mask_out=shard)
    with pytest.raises(OutputConflictError, match="resume lies inside an input"):
        subnetscope.compare(b, t, resume=b / "resume")
    with pytest.raises(OutputConflictError, match="resume overlaps the output of mask_out"):
        subnetscope.compare(b, t, mask_out=tmp_path / "r" / "m.mask", resume=tmp_path / "r")
    with pytest.raises(OutputConflictError, match="the delta directory contains an input"):
        export_delta(b, t, world, overwrite=True)
    with pytest.raises(OutputConflictError, match=r"the output directory is an input \(the delta directory"):
        apply_delta(b, d, d, overwrite=True)
    with pytest.raises(OutputConflictError, match=r"the output directory is an input \(a file of the delta"):
        apply_delta(b, d, d / "delta.json", overwrite=True)  # a file: refused before its kind is looked at
    with pytest.raises(OutputConflictError, match="the HTML page is an input"):
        write_html(
            world / "r.json", [json.loads((world / "r.json").read_text())], sources=[str(world / "r.json")]
        )
    assert issubclass(OutputConflictError, UsageError)
    assert tree(world) == before


# -- --overwrite replaces only our own outputs ------------------------------------------------------------


def test_overwrite_replaces_a_previous_delta_and_nothing_else(world, tmp_path, capsys):
    b, t = str(world / "base"), str(world / "tgt")
    out = tmp_path / "d"
    assert run(capsys, ["delta", "export", b, t, "-o", out])[0] == 0
    assert run(capsys, ["delta", "export", b, t, "-o", out, "--overwrite"])[0] == 0  # ours: replaced
    (out / "notes.txt").write_text("mine")
    rc, _o, err = run(capsys, ["delta", "export", b, t, "-o", out, "--overwrite"])
    assert (
        rc == 2 and "exists and is not a previous output of this command (it also holds 'notes.txt', " in err
    )
    assert (out / "notes.txt").read_text() == "mine"
    model = tmp_path / "my-model"  # somebody's checkpoint, not an input of this command
    save_checkpoint(random_state(llama_names(layers=1, hidden=8, inter=16, vocab=12)), model)
    keep = tree(model)
    rc, _o, err = run(capsys, ["delta", "export", b, t, "-o", model, "--overwrite"])
    assert (
        rc == 2
        and f"{model}: exists and is not a previous output of this command (it holds no valid delta.json)"
        in err
    )
    assert tree(model) == keep
    rc, _o, err = run(capsys, ["delta", "export", b, t, "-o", model])
    assert (
        rc == 2
        and f"{model}: already exists; choose another output path, remove it, or pass --overwrite" in err
    )


def test_overwrite_replaces_a_previous_apply_output_and_nothing_else(world, tmp_path, capsys):
    b, d = str(world / "base"), str(world / "d")
    out = tmp_path / "rebuilt"
    assert run(capsys, ["delta", "apply", b, d, "-o", out])[0] == 0
    record = json.loads((out / ".subnetscope-apply.json").read_text())
    assert sorted(record["files"]) == sorted(
        p.name for p in out.iterdir() if p.name != ".subnetscope-apply.json"
    )
    assert run(capsys, ["delta", "apply", b, d, "-o", out, "--overwrite", "--verify"])[0] == 0
    (out / "README.md").write_text("mine")
    rc, _o, err = run(capsys, ["delta", "apply", b, d, "-o", out, "--overwrite"])
    assert rc == 2 and "(it also holds 'README.md', which delta apply did not write)" in err
    assert (out / "README.md").read_text() == "mine"
    model = tmp_path / "my-model"
    save_checkpoint(random_state(llama_names(layers=1, hidden=8, inter=16, vocab=12)), model)
    keep = tree(model)
    rc, _o, err = run(capsys, ["delta", "apply", b, d, "-o", model, "--overwrite"])
    assert (
        rc == 2 and "(it has no .subnetscope-apply.json (delta apply marks the directories it writes))" in err
    )
    assert tree(model) == keep
    # the record is never taken for a side file: a checkpoint rebuilt from a rebuilt base carries none over
    d2 = tmp_path / "d2"
    assert run(capsys, ["delta", "export", out, world / "tgt2", "-o", d2])[0] == 0
    assert ".subnetscope-apply.json" not in os.listdir(d2)


# -- symlinks, device nodes, FIFOs ------------------------------------------------------------------------


def test_a_symlinked_output_is_written_through(world, tmp_path, capsys):
    """The link stays a link; the file it points to receives the report (atomically)."""
    real = tmp_path / "reports" / "latest.json"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "latest.json"
    os.symlink("reports/latest.json", link)
    rc, _o, err = run(capsys, ["compare", world / "base", world / "tgt", "-o", link])
    assert rc == 0, err
    assert link.is_symlink() and os.readlink(link) == "reports/latest.json"
    assert json.loads(real.read_text())["report"] == "subnetscope.compare"
    mlink = tmp_path / "m.mask"
    os.symlink("reports/m.mask", mlink)
    assert run(capsys, ["mask", world / "base", world / "tgt", "-o", mlink])[0] == 0
    assert mlink.is_symlink() and subnetscope.MaskFile(tmp_path / "reports" / "m.mask").tolerance == 1e-5
    assert sorted(os.listdir(tmp_path / "reports")) == ["latest.json", "m.mask"]  # no temporaries left
    os.symlink("loop-b", tmp_path / "loop-a")
    os.symlink("loop-a", tmp_path / "loop-b")
    rc, _o, err = run(capsys, ["compare", world / "base", world / "tgt", "-o", tmp_path / "loop-a"])
    assert rc == 2 and err == (
        f"subnetscope: error: {tmp_path / 'loop-a'}: -o is a symlink that does not resolve (a loop); "
        "give a path that is not a loop\n"
    )
    assert os.readlink(tmp_path / "loop-a") == "loop-b"


def _special_files(tmp_path: Path) -> list[tuple[str, Path]]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    out = [("FIFO (named pipe)", fifo)]
    dev = tmp_path / "null"
    try:
        os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a second /dev/null, private to this test
        out.append(("character device", dev))
    except (PermissionError, OSError):
        pass  # no CAP_MKNOD here: the FIFO stands for every non-regular file
    link = tmp_path / "to-fifo"
    os.symlink("fifo", link)
    out.append(("FIFO (named pipe)", link))
    return out


@pytest.mark.parametrize(
    "argv",
    [
        ["compare", "{b}", "{t}", "-o", "{}"],
        ["compare", "{b}", "{t}", "--mask-out", "{}"],
        ["mask", "{b}", "{t}", "-o", "{}"],
        ["series", "{b}", "{t}", "-o", "{}"],
        ["report", "{r}", "-o", "{}"],
    ],
)
def test_a_device_node_or_fifo_is_never_replaced(world, tmp_path, capsys, argv):
    specials = _special_files(tmp_path)
    for kind, path in specials:
        fill = {"b": str(world / "base"), "t": str(world / "tgt"), "r": str(world / "r.json")}
        args = [str(path) if a == "{}" else a.format(**fill) for a in argv]
        was_link = path.is_symlink()
        rc, _o, err = run(capsys, args)
        assert rc == 2 and err.count("\n") == 1, err
        assert f"{path}: {args[args.index(str(path)) - 1]} is a {kind}, not a regular file; " in err, err
        assert path.is_symlink() == was_link and not stat.S_ISREG(os.stat(path).st_mode)
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for _k, p in specials)
