"""Resumable passes: a directory keeps every finished row's result, so an interrupted run (Ctrl-C, a lost
node, a killed job) continues where it stopped and gives the same result as an uninterrupted one. Every
pass gets it the same way: the measure gives the run's *identity* and how to encode a row's result as
JSON, and journals each row from the job's ``on_row_done`` hook (on the driver).

``DIR`` holds:

- ``manifest.json``: the run's *key*, a sha256 over its identity (for compare: both inputs' fingerprints,
  names, shapes, dtypes and sampled content, :mod:`subnetscope.fingerprint`, the tolerances, the semantics,
  the mask tolerance, the extra consumers and the tool version). A directory made for another run is
  refused with :class:`ResumeMismatchError`, never mixed in.
- ``tensors.jsonl``: one line per finished row, ``{"name": ..., "stats": <the row's result as JSON>}``.
  :meth:`ResumeState.record` queues the line; the queue is committed (side bits ``fdatasync``-ed, the lines
  appended in one ``write``, the journal ``fsync``-ed) at most every ``sync_seconds`` (1 s; 0 commits every
  row) and when the run ends or is interrupted, so an fsync (~5 ms here) is not paid per row. A hard kill
  or power loss costs at most the last second of rows, which simply run again; a line cut short is
  dropped on the next start.
- ``mask.bits`` (only for a pass that writes bits, such as a mask): every row's packed bits at fixed
  offsets, written beside the output's own and synced before the row's journal line; a resumed run copies
  the bits of finished rows into the new output, so it is byte-identical too.

A finished run's directory can be kept: running again with it reads nothing but what the identity needs
and returns the same result at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SubnetscopeError
from ..io.atomic import write_text_atomic
from ..io.outputs import make_parents, remove_empty, write_error, write_errors

FORMAT = "subnetscope.resume"
FORMAT_VERSION = "1"
MANIFEST = "manifest.json"
JOURNAL = "tensors.jsonl"
MASK_BITS = "mask.bits"
_COPY_BYTES = 1 << 23


class ResumeMismatchError(SubnetscopeError):
    """A ``--resume`` directory made for other inputs or options, or not a resume directory at all."""


def key_of(identity: dict[str, Any]) -> str:
    """sha256 of the identity's canonical JSON."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _bits_layout(nbits: Mapping[str, int]) -> tuple[dict[str, tuple[int, int]], int]:
    out: dict[str, tuple[int, int]] = {}
    pos = 0
    for name, n in nbits.items():
        nb = (n + 7) // 8
        out[name] = (pos, nb)
        pos += nb
    return out, pos


def journaled(directory: str | os.PathLike[str]) -> int:
    """Number of finished tensors recorded in a resume directory (0 if there is none)."""
    j = Path(directory) / JOURNAL
    if not j.is_file():
        return 0
    with open(j, "rb") as f:
        return sum(1 for line in f if line.endswith(b"\n"))


class ResumeState:
    """An open resume directory; use :func:`open_resume` (and close it, or use it as a context manager)."""

    def __init__(
        self,
        directory: Path,
        identity: dict[str, Any],
        rows: Mapping[str, int],
        decode: Callable[[Any], Any],
        with_bits: bool,
        sync_seconds: float = 1.0,
    ) -> None:
        self.directory = directory
        self.sync_seconds = sync_seconds
        self._queue: list[bytes] = []
        self._durable: set[str] = set()
        self._last_commit = time.monotonic()
        self.key = key_of(identity)
        self.with_mask = with_bits
        self.decode = decode
        #: finished rows: name -> decoded result
        self.done: dict[str, Any] = {}
        self._layout, self._mask_len = _bits_layout(rows)
        self._open(identity)

    # -- opening --------------------------------------------------------------------------------------------
    def _open(self, identity: dict[str, Any]) -> None:
        d = self.directory
        manifest = d / MANIFEST
        if d.exists() and not d.is_dir():
            raise ResumeMismatchError(
                f"{d}: is a file, not a resume directory", "give a directory for `resume`"
            )
        if manifest.is_file():
            try:
                obj = json.loads(manifest.read_text())
            except (OSError, ValueError) as e:
                raise ResumeMismatchError(
                    f"{d}: unreadable {MANIFEST} ({e})", "delete the directory or choose another one"
                ) from None
            if obj.get("format") != FORMAT or obj.get("format_version") != FORMAT_VERSION:
                raise ResumeMismatchError(
                    f"{d}: not a subnetscope resume directory of this version",
                    "choose another `resume` directory",
                )
            if obj.get("key") != self.key:
                diff = [k for k in identity if obj.get("identity", {}).get(k) != identity[k]]
                raise ResumeMismatchError(
                    f"{d}: was made for other inputs or options (differs in: {', '.join(diff) or 'key'}); "
                    f"key {str(obj.get('key'))[:12]} vs {self.key[:12]}",
                    f"use a new `resume` directory for this run, or delete {d} to start over",
                )
        elif d.is_dir() and any(d.iterdir()):
            raise ResumeMismatchError(
                f"{d}: exists, is not empty and has no {MANIFEST}",
                "give an empty or new directory for `resume` (it is created if missing)",
            )
        else:
            created = make_parents(manifest, d)
            try:
                write_text_atomic(manifest, json.dumps(
                    {"format": FORMAT, "format_version": FORMAT_VERSION, "key": self.key, "identity": identity},
                    indent=1, sort_keys=True,
                ) + "\n")  # fmt: skip
            except BaseException:
                remove_empty(created)  # a run that could not start leaves no directory behind
                raise
        self._load_journal()
        self._jfd: int | None = os.open(d / JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._mfd: int | None = None
        if self.with_mask:
            path = d / MASK_BITS
            self._mfd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            size = os.fstat(self._mfd).st_size
            if size not in (0, self._mask_len):
                raise ResumeMismatchError(
                    f"{path}: is {size} bytes, expected {self._mask_len}", f"delete {d} to start over"
                )
            os.ftruncate(self._mfd, self._mask_len)

    def _load_journal(self) -> None:
        path = self.directory / JOURNAL
        if not path.is_file():
            return
        raw = path.read_bytes()
        good = 0
        lines = raw.split(b"\n")
        for i, line in enumerate(lines):
            last = i == len(lines) - 1
            if last:
                break  # after the final newline: empty, or a line cut short by a crash
            try:
                obj = json.loads(line)
                name = obj["name"]
                if name not in self._layout:
                    raise KeyError(name)
                result = self.decode(obj["stats"])
            except (ValueError, KeyError, TypeError) as e:
                raise ResumeMismatchError(
                    f"{path}: line {i + 1} is damaged ({e})", f"delete {self.directory} to start over"
                ) from None
            self.done[name] = result
            good += len(line) + 1
        if good != len(raw):
            with open(path, "r+b") as f:
                f.truncate(good)

    # -- during the run -------------------------------------------------------------------------------------
    def record(
        self, name: str, encoded: Any, result: Any, durable: Iterable[str | os.PathLike[str]] = ()
    ) -> None:
        """Journal one finished row (``encoded`` its result as JSON); commits when ``sync_seconds`` passed.

        ``durable``: files the result points into; they are synced before the row's line is written."""
        self._durable.update(str(p) for p in durable)
        self._queue.append((json.dumps({"name": name, "stats": encoded}) + "\n").encode())
        self.done[name] = result
        if time.monotonic() - self._last_commit >= self.sync_seconds:
            self.commit()

    def commit(self) -> None:
        """Make the queued lines durable: the mask bits first, then the lines (one write), then the journal."""
        if not self._queue or self._jfd is None:
            return
        if self._mfd is not None:
            with write_errors(self.directory / MASK_BITS):
                getattr(os, "fdatasync", os.fsync)(self._mfd)
        for path in sorted(self._durable):
            with write_errors(path):
                fd = os.open(path, os.O_RDONLY)
                try:
                    getattr(os, "fdatasync", os.fsync)(fd)
                finally:
                    os.close(fd)
        self._durable.clear()
        with write_errors(self.directory / JOURNAL):
            view = memoryview(b"".join(self._queue))
            while view:
                n = os.write(self._jfd, view)
                view = view[n:]
            os.fsync(self._jfd)
        self._queue.clear()
        self._last_commit = time.monotonic()

    def store_bits(self, name: str, start: int, packed: np.ndarray) -> None:
        """Keep packed bits of elements ``[start, ...)`` of row ``name`` (``start`` a multiple of 8)."""
        if self._mfd is None:
            raise ValueError("this resume state was opened without bits")
        off, nb = self._layout[name]
        first = start // 8
        n = min(packed.size, nb - first)
        if n > 0:
            try:
                os.pwrite(self._mfd, np.ascontiguousarray(packed[:n]).data, off + first)
            except OSError as e:
                raise write_error(self.directory / MASK_BITS, e) from e

    def stored_bits(self, name: str) -> Iterator[tuple[int, np.ndarray]]:
        """The kept bits of a finished row, as ``(first element, packed bits)`` pieces."""
        if self._mfd is None:
            return
        off, nb = self._layout[name]
        for pos in range(0, nb, _COPY_BYTES):
            n = min(_COPY_BYTES, nb - pos)
            yield pos * 8, np.frombuffer(os.pread(self._mfd, n, off + pos), dtype=np.uint8)

    def close(self) -> None:
        """Commit what is queued (also after an interruption: those tensors are finished) and close."""
        try:
            self.commit()
        finally:
            self._close_fds()

    def _close_fds(self) -> None:
        for fd in (self._jfd, self._mfd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._jfd = self._mfd = None

    def __enter__(self) -> ResumeState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_resume(
    directory: str | os.PathLike[str],
    identity: dict[str, Any],
    rows: Mapping[str, int],
    decode: Callable[[Any], Any],
    with_bits: bool = False,
    sync_seconds: float = 1.0,
) -> ResumeState:
    """Open (or create) the resume directory of a run; refuse one made for another run.

    ``rows`` maps every row's name to its number of elements (the size of its kept bits, ``with_bits``);
    ``decode`` turns a journaled JSON result back into the row's result.
    """
    with write_errors(directory):
        return ResumeState(Path(directory), identity, rows, decode, with_bits, sync_seconds)
