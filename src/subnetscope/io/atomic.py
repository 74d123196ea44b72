"""Atomic outputs: write to a temporary sibling, then rename into place.

An interrupted run leaves no half-written file or directory under the final name (the temporary is
removed on error; a hard kill can leave only a ``.tmp-*`` sibling, never a partial output).

A symlink given as the output is written through (its target is replaced, the link stays); an existing
output that is not a regular file (a device node, a FIFO) or not a directory where one is written is
refused, and a write the system refuses (read-only file system, full disk, a parent that is a file) becomes
one :class:`~subnetscope.errors.OutputWriteError` naming the path: see :mod:`subnetscope.io.outputs`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from .outputs import (
    DIR,
    FILE,
    Output,
    check_kind,
    check_replaceable,
    destination,
    make_parents,
    remove_empty,
    write_errors,
)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically."""
    dest = destination(path)
    check_kind(Output(path, "the output", FILE), dest, os.fspath(path))
    created = make_parents(dest, path)
    try:
        with write_errors(path):
            fd, tmp = tempfile.mkstemp(prefix=f".tmp-{dest.name}.", dir=dest.parent)
            os.close(fd)
    except BaseException:
        remove_empty(created)
        raise
    tmp_path = Path(tmp)
    try:
        with write_errors(path, any_errno=False):
            yield tmp_path
        with write_errors(path):
            os.chmod(tmp_path, 0o644)
            os.replace(tmp_path, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        remove_empty(created)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write a text file atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)


@contextlib.contextmanager
def atomic_dir(
    path: str | os.PathLike[str],
    overwrite: bool = False,
    owned: Callable[[Path], str | None] | None = None,
) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; on success it is renamed to ``path``.

    An existing empty directory is replaced. With ``overwrite`` an existing non-empty one is replaced
    (removed only after the new one is complete) when ``owned`` recognises it as a previous output of the
    caller (``owned(path)`` returns None; otherwise the reason it is not, and nothing is replaced).
    """
    dest = destination(path)
    shown = os.fspath(path)
    out = Output(path, "the output", DIR, overwrite, owned)
    check_kind(out, dest, shown)
    check_replaceable(out, dest, shown)
    created = make_parents(dest, path)
    try:
        with write_errors(path):
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{dest.name}.", dir=dest.parent))
    except BaseException:
        remove_empty(created)
        raise
    try:
        with write_errors(path, any_errno=False):
            yield tmp
        with write_errors(path):
            os.chmod(tmp, 0o755)
            if dest.exists():
                old = dest.with_name(f".old-{dest.name}.{os.getpid()}")
                os.replace(dest, old)
                os.replace(tmp, dest)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        remove_empty(created)
        raise
