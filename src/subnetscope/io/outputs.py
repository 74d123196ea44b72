"""Where an output may go, checked once before anything is written; and the one line for a refused write.

:func:`check_outputs` is the single guard every writing command and library entry point calls with its
inputs and outputs. After resolving symlinks (and comparing device and inode numbers, so that hard links
and bind mounts are seen too) it refuses an output that

- *is* an input (a shard, an index, a config file, a mask, a delta, a JSON report read by the command),
- lies *inside* an input (a checkpoint or delta directory, or under an input file),
- *contains* an input, when the output is a directory replaced as a whole (``delta export/apply -o``),
- is the same path as another output of the same run, or lies inside it (``-o X --mask-out X``),
- exists but is not a regular file (a device node, a FIFO, a directory) where a file is written, or not a
  directory where a directory is written,
- is an existing, non-empty directory that ``overwrite`` may not replace: only a previous output of the
  same command (as its ``owned`` test recognises) is ever replaced.

A symlinked output is written through: the file or directory it points to is replaced atomically and the
link stays (the checks above apply to the target). :func:`destination` gives that path.

:func:`write_error` turns an ``OSError`` of a write into :class:`~subnetscope.errors.OutputWriteError`:
the path, what the system said and what to do, on one line; :func:`write_errors` does it for a block.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import OutputConflictError, OutputWriteError

if TYPE_CHECKING:
    from .checkpoint import Checkpoint

#: an output file, replaced atomically (reports, masks, HTML pages)
FILE = "file"
#: an output directory replaced as a whole (``delta export -o``, ``delta apply -o``)
DIR = "dir"
#: a directory that files are written into, never removed or replaced (``plot -o``, ``--resume``)
INTO = "into"

PathLike = str | os.PathLike[str]

_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class Input:
    """A path a command reads: a file, or a directory whose whole content is an input."""

    path: Path
    what: str  #: for messages, e.g. "a file of BASE"


@dataclass(frozen=True)
class Output:
    """A path a command writes."""

    path: PathLike | None  #: None: this output is not asked for (skipped)
    label: str  #: the option or argument, for messages (``-o``, ``--mask-out``, ``mask_out``)
    kind: str = FILE
    overwrite: bool = False  #: with :data:`DIR`: an existing non-empty directory may be replaced ...
    #: ... when this returns None for it (a previous output of ours); otherwise the reason it is not
    owned: Callable[[Path], str | None] | None = None


def destination(path: PathLike) -> Path:
    """The path actually written for ``path``: absolute, with every symlink resolved."""
    return Path(os.path.realpath(os.path.abspath(os.fspath(path))))


def _id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _ancestor_ids(path: Path) -> set[tuple[int, int]]:
    """Device and inode of every existing proper ancestor of ``path`` (already resolved)."""
    return {i for q in path.parents if (i := _id(q)) is not None}


def _kind_of(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "directory"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISFIFO, "FIFO (named pipe)"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return name
    return "special file"


def _inside(a: Path, b: Path) -> bool:
    return a == b or b in a.parents


def checkpoint_inputs(ck: Checkpoint, role: str) -> list[Input]:
    """What a checkpoint reads: its directory (or file), every weight file and what it resolves to, its
    index and config files, and for a Hugging Face cache snapshot the whole cached repository."""
    root = Path(ck.root)
    out = [Input(root, f"{role} {'directory' if root.is_dir() else 'file'}")]
    files = list(ck.files)
    d = root if root.is_dir() else root.parent
    names = ("config.json",) if root.is_file() else ("config.json", *_INDEXES)
    for name in names:
        if (d / name).is_file():
            files.append(d / name)
    if root.is_file():
        files.append(root)
    out += [Input(Path(f), f"a file of {role}") for f in files]
    # huggingface_hub: snapshots/<rev>/<file> -> ../../blobs/<hash>; the repository folder is the input
    if d.parent.name == "snapshots" and (d.parent.parent / "blobs").is_dir():
        out.append(Input(d.parent.parent, f"the Hugging Face cache folder of {role}"))
    return out


def path_inputs(paths: Iterable[PathLike | None], what: str) -> list[Input]:
    """Input files or directories given by path (masks, JSON reports, a delta directory, a config)."""
    return [Input(Path(p), what) for p in paths if p is not None]


def check_outputs(inputs: Iterable[Input], outputs: Iterable[Output]) -> None:
    """Refuse, before anything is written, every output the module docs rule out (see there).

    Raises :class:`~subnetscope.errors.OutputConflictError` naming the output, the input or the other
    output, and what to do.
    """
    resolved_inputs = []
    for inp in inputs:
        real = destination(inp.path)
        ident = _id(real)
        if ident is not None:
            resolved_inputs.append((inp, real, ident))
    chains: dict[Path, set[tuple[int, int]]] = {}
    seen: list[tuple[Output, Path]] = []
    for o in outputs:
        if o.path is None:
            continue
        dest = destination(o.path)
        shown = os.fspath(o.path)
        own = _id(dest)
        above = _ancestor_ids(dest)
        for inp, real, ident in resolved_inputs:  # "is" first: the most precise words
            if own == ident or real == dest:
                where = inp.what + ("" if real == dest else f", {inp.path}")
                raise OutputConflictError(
                    f"{shown}: {o.label} is an input ({where}); inputs are never written",
                    "choose an output path outside the inputs",
                )
        for inp, real, ident in resolved_inputs:
            if ident in above or _inside(dest, real):
                raise OutputConflictError(
                    f"{shown}: {o.label} lies inside an input ({inp.what}, {inp.path})",
                    "write outputs outside the input checkpoints, deltas, masks and reports",
                )
        for inp, real, _ident in resolved_inputs if o.kind == DIR and own is not None else ():
            chain = chains.get(real)
            if chain is None:
                chain = chains[real] = _ancestor_ids(real)
            if own in chain:
                raise OutputConflictError(
                    f"{shown}: {o.label} contains an input ({inp.what}, {inp.path}), and it would be replaced",
                    "write the output to a new directory",
                )
        for prev, pdest in seen:
            if _inside(dest, pdest) or _inside(pdest, dest):
                rel = "is also" if dest == pdest else "overlaps"
                raise OutputConflictError(
                    f"{shown}: {o.label} {rel} the output of {prev.label} ({os.fspath(prev.path or '')})",
                    "give each output its own path",
                )
        seen.append((o, dest))
        check_kind(o, dest, shown)
        if o.kind == DIR:
            check_replaceable(o, dest, shown)


def check_kind(o: Output, dest: Path, shown: str) -> None:
    """Refuse an existing ``dest`` of the wrong kind: not a regular file for a file, not a directory for a
    directory."""
    if os.path.islink(dest):  # still a link once resolved: a loop
        raise OutputConflictError(
            f"{shown}: {o.label} is a symlink that does not resolve (a loop)",
            "give a path that is not a loop",
        )
    try:
        mode = os.stat(dest).st_mode
    except OSError:
        return  # does not exist yet (a parent that is a file fails with the OS's own words when written)
    if o.kind == FILE and not stat.S_ISREG(mode):
        hint = "give the path of a new or regular file"
        if not stat.S_ISDIR(mode):
            hint += " (or write the JSON to stdout)"
        raise OutputConflictError(f"{shown}: {o.label} is a {_kind_of(mode)}, not a regular file", hint)
    if o.kind in (DIR, INTO) and not stat.S_ISDIR(mode):
        raise OutputConflictError(
            f"{shown}: {o.label} exists and is not a directory",
            "give the path of a new or existing directory",
        )


def check_replaceable(o: Output, dest: Path, shown: str) -> None:
    """Refuse an existing, non-empty directory that ``o`` may not replace (see the module docs)."""
    try:
        empty = not any(dest.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return  # new (under a parent that is a file, the write fails with the system's own words)
    except OSError as e:
        raise write_error(shown, e) from e
    if empty:
        return
    if not o.overwrite:
        raise OutputConflictError(
            f"{shown}: already exists", "choose another output path, remove it, or pass `overwrite=True`"
        )
    reason = o.owned(dest) if o.owned is not None else "this output is never replaced"
    if reason is not None:
        raise OutputConflictError(
            f"{shown}: exists and is not a previous output of this command ({reason}); "
            "`overwrite=True` only replaces one",
            "remove it yourself if it may go, or choose another output path",
        )


# -- refused writes ------------------------------------------------------------------------------------------

#: errors of writing itself (as opposed to reading an input): converted wherever they come from
WRITE_ERRNOS = frozenset(
    e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EROFS, errno.EFBIG) if e is not None
)

_HINTS = {
    errno.ENOSPC: "free some space on that file system or write the output elsewhere",
    errno.EROFS: "the file system is mounted read-only: write the output to a writable location",
    errno.EACCES: "choose a location you may write to, or fix its permissions",
    errno.EPERM: "choose a location you may write to, or fix its permissions",
    errno.ENOTDIR: "a parent of this path is a file, not a directory: choose another path",
    errno.EEXIST: "a parent of this path is a file, not a directory: choose another path",
    errno.EISDIR: "a directory is in the way: choose another path",
    errno.EFBIG: "the file is too large for that file system: write it elsewhere (or use smaller shards)",
    errno.ENAMETOOLONG: "choose a shorter path",
}
if hasattr(errno, "EDQUOT"):
    _HINTS[errno.EDQUOT] = "your disk quota is exhausted: free some space or write the output elsewhere"


def make_parents(dest: Path, shown: PathLike) -> list[Path]:
    """Create the missing parent directories of ``dest``, returning them (deepest first, for
    :func:`remove_empty`); a parent that is a file is refused as the system words it (``Not a
    directory``), not as ``File exists``."""
    missing = []
    for q in (dest.parent, *dest.parent.parents):
        if q.exists():
            if not q.is_dir():
                raise write_error(
                    shown, NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(q))
                )
            break
        missing.append(q)
    with write_errors(shown):
        dest.parent.mkdir(parents=True, exist_ok=True)
    return missing


def remove_empty(created: list[Path]) -> None:
    """Remove the directories :func:`make_parents` created, if still empty (after a failed write)."""
    for q in created:
        try:
            q.rmdir()
        except OSError:
            break


def write_error(path: PathLike, e: OSError) -> OutputWriteError:
    """The one-line error for a write of ``path`` that the system refused with ``e``."""
    said = e.strerror or str(e)
    code = errno.errorcode.get(e.errno or 0, "")
    return OutputWriteError(
        f"{os.fspath(path)}: cannot write the output: {said}" + (f" ({code})" if code else ""),
        _HINTS.get(e.errno or 0, "check the path and the file system, or write the output elsewhere"),
    )


@contextlib.contextmanager
def write_errors(path: PathLike, any_errno: bool = True) -> Iterator[None]:
    """Turn an ``OSError`` raised in the block into :func:`write_error` for ``path``.

    With ``any_errno=False`` only the errors that only writes give (full disk, read-only file system,
    quota, file too large: :data:`WRITE_ERRNOS`) are converted, for blocks that also read inputs.
    """
    try:
        yield
    except OSError as e:
        if not any_errno and e.errno not in WRITE_ERRNOS:
            raise
        raise write_error(path, e) from e
