"""Resumable runs: ``compare --resume DIR`` keeps every finished tensor's stats, so an interrupted run
(Ctrl-C, a lost node, a killed job) continues where it stopped and gives the same report as an
uninterrupted one.

``DIR`` holds:

- ``manifest.json``: the run's *key*, a sha256 over both inputs' fingerprints (names, shapes, dtypes and
  sampled content, :mod:`subnetscope.fingerprint`), the tolerances, the semantics, the mask tolerance (or
  none), the extra consumers (class, key and ``describe()``) and the tool version. A directory made for
  other inputs or options is refused with :class:`ResumeMismatchError`, never mixed in.
- ``tensors.jsonl``: one line per finished tensor, ``{"name": ..., "stats": <TensorStats JSON>}``. The
  engine's ``PassOptions.on_tensor_done`` hook (:meth:`ResumeState.record`, called on the driver once a
  tensor's last chunk is merged) queues the line; the queue is committed (mask bits ``fdatasync``-ed, the
  lines appended in one ``write``, the journal ``fsync``-ed) at most every ``sync_seconds`` (1 s; 0 commits
  every tensor) and when the run ends or is interrupted, so an fsync (~5 ms here) is not paid per tensor.
  A hard kill or power loss costs at most the last second of tensors, which simply run again; a line cut
  short is dropped on the next start.
- ``mask.bits`` (only with a mask): every tensor's packed mask bits at fixed offsets (plan order), written
  beside the mask file's own, and synced before the tensor's journal line; a resumed run copies the bits of
  finished tensors into the new mask file, so the mask is byte-identical too.

A finished run's directory can be kept: running again with it reads nothing but the fingerprints and
returns the same report at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .engine import MaskSink, PassOptions
from .errors import SubnetscopeError
from .fingerprint import of_checkpoint
from .io.atomic import write_text_atomic
from .io.outputs import make_parents, remove_empty, write_error, write_errors
from .plan import Pair, Plan
from .stats import TensorStats

FORMAT = "subnetscope.resume"
FORMAT_VERSION = "1"
MANIFEST = "manifest.json"
JOURNAL = "tensors.jsonl"
MASK_BITS = "mask.bits"
_COPY_BYTES = 1 << 23


class ResumeMismatchError(SubnetscopeError):
    """A ``--resume`` directory made for other inputs or options, or not a resume directory at all."""


def _consumer_id(c: Any) -> list[Any]:
    ident: list[Any] = [f"{type(c).__module__}.{type(c).__qualname__}", getattr(c, "key", "")]
    desc = getattr(c, "describe", None)
    if callable(desc):
        with contextlib.suppress(TypeError, ValueError):
            ident.append(json.loads(json.dumps(desc(), sort_keys=True, default=str)))
    return ident


def run_identity(plan: Plan, opts: PassOptions, mask_tolerance: float | None) -> dict[str, Any]:
    """What a resumable run is keyed on (see the module docs)."""
    return {
        "base": of_checkpoint(plan.base).to_json(),
        "target": of_checkpoint(plan.target).to_json(),
        "tolerances": [float(t) for t in opts.tolerances],
        "semantics": opts.semantics,
        "mask_tolerance": mask_tolerance,
        "consumers": [_consumer_id(c) for c in opts.consumers],
        "tool_version": __version__,
    }


def key_of(identity: dict[str, Any]) -> str:
    """sha256 of the identity's canonical JSON."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _mask_layout(pairs: list[Pair]) -> tuple[dict[int, tuple[int, int]], int]:
    out: dict[int, tuple[int, int]] = {}
    pos = 0
    for p in pairs:
        nb = (p.numel + 7) // 8
        out[p.index] = (pos, nb)
        pos += nb
    return out, pos


def journaled(directory: str | os.PathLike[str]) -> int:
    """Number of finished tensors recorded in a resume directory (0 if there is none)."""
    j = Path(directory) / JOURNAL
    if not j.is_file():
        return 0
    with open(j, "rb") as f:
        return sum(1 for line in f if line.endswith(b"\n"))


class _Tee:
    """A mask sink that also stores the bits in ``mask.bits`` at the tensor's offset."""

    def __init__(self, inner: MaskSink, state: ResumeState) -> None:
        self.inner = inner
        self.state = state

    def write(self, pair: Pair, start: int, packed: np.ndarray) -> None:
        self.inner.write(pair, start, packed)
        self.state._store_bits(pair, start, packed)


class ResumeState:
    """An open resume directory; use :func:`open_resume` (and close it, or use it as a context manager)."""

    def __init__(
        self,
        directory: Path,
        key: str,
        identity: dict[str, Any],
        plan: Plan,
        with_mask: bool,
        sync_seconds: float = 1.0,
    ) -> None:
        self.directory = directory
        self.sync_seconds = sync_seconds
        self._queue: list[bytes] = []
        self._last_commit = time.monotonic()
        self.key = key
        self.plan = plan
        self.with_mask = with_mask
        self.done: dict[str, TensorStats] = {}
        self._layout, self._mask_len = _mask_layout(plan.pairs)
        self._by_name = {p.name: p for p in plan.pairs}
        self._open(identity)

    # -- opening --------------------------------------------------------------------------------------------
    def _open(self, identity: dict[str, Any]) -> None:
        d = self.directory
        manifest = d / MANIFEST
        if d.exists() and not d.is_dir():
            raise ResumeMismatchError(
                f"{d}: is a file, not a resume directory", "give a directory for --resume"
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
                    "choose another --resume directory",
                )
            if obj.get("key") != self.key:
                diff = [k for k in identity if obj.get("identity", {}).get(k) != identity[k]]
                raise ResumeMismatchError(
                    f"{d}: was made for other inputs or options (differs in: {', '.join(diff) or 'key'}); "
                    f"key {str(obj.get('key'))[:12]} vs {self.key[:12]}",
                    f"use a new --resume directory for this run, or delete {d} to start over",
                )
        elif d.is_dir() and any(d.iterdir()):
            raise ResumeMismatchError(
                f"{d}: exists, is not empty and has no {MANIFEST}",
                "give an empty or new directory for --resume (it is created if missing)",
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
                st = TensorStats.from_json(obj["stats"])
                if obj["name"] not in self._by_name or st.name != obj["name"]:
                    raise KeyError(obj["name"])
            except (ValueError, KeyError, TypeError) as e:
                raise ResumeMismatchError(
                    f"{path}: line {i + 1} is damaged ({e})", f"delete {self.directory} to start over"
                ) from None
            self.done[st.name] = st
            good += len(line) + 1
        if good != len(raw):
            with open(path, "r+b") as f:
                f.truncate(good)

    # -- during the run -------------------------------------------------------------------------------------
    def pending(self, pairs: Iterable[Pair]) -> list[Pair]:
        """The pairs not finished yet (in the order given)."""
        return [p for p in pairs if p.name not in self.done]

    def record(self, st: TensorStats) -> None:
        """Journal one finished tensor (``PassOptions.on_tensor_done``); commits when ``sync_seconds`` passed."""
        self._queue.append((json.dumps({"name": st.name, "stats": st.to_json()}) + "\n").encode())
        self.done[st.name] = st
        if time.monotonic() - self._last_commit >= self.sync_seconds:
            self.commit()

    def commit(self) -> None:
        """Make the queued lines durable: the mask bits first, then the lines (one write), then the journal."""
        if not self._queue or self._jfd is None:
            return
        if self._mfd is not None:
            with write_errors(self.directory / MASK_BITS):
                getattr(os, "fdatasync", os.fsync)(self._mfd)
        with write_errors(self.directory / JOURNAL):
            view = memoryview(b"".join(self._queue))
            while view:
                n = os.write(self._jfd, view)
                view = view[n:]
            os.fsync(self._jfd)
        self._queue.clear()
        self._last_commit = time.monotonic()

    def _store_bits(self, pair: Pair, start: int, packed: np.ndarray) -> None:
        assert self._mfd is not None
        off, nb = self._layout[pair.index]
        first = start // 8
        n = min(packed.size, nb - first)
        if n > 0:
            try:
                os.pwrite(self._mfd, np.ascontiguousarray(packed[:n]).data, off + first)
            except OSError as e:
                raise write_error(self.directory / MASK_BITS, e) from e

    def tee(self, sink: MaskSink) -> MaskSink:
        """``sink`` plus a copy of every bit into ``mask.bits``."""
        if self._mfd is None:
            raise ValueError("this resume state was opened without a mask")
        return _Tee(sink, self)

    def replay(self, sink: MaskSink) -> None:
        """Write the stored mask bits of every finished tensor to ``sink``."""
        if self._mfd is None:
            return
        for p in self.plan.pairs:
            if p.name not in self.done:
                continue
            off, nb = self._layout[p.index]
            for pos in range(0, nb, _COPY_BYTES):
                n = min(_COPY_BYTES, nb - pos)
                data = os.pread(self._mfd, n, off + pos)
                sink.write(p, pos * 8, np.frombuffer(data, dtype=np.uint8))

    def merged(self, fresh: list[TensorStats]) -> list[TensorStats]:
        """Finished and fresh stats together, in plan order."""
        new = {s.name: s for s in fresh}
        return [self.done.get(p.name) or new[p.name] for p in self.plan.pairs]

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
    plan: Plan,
    opts: PassOptions,
    mask_tolerance: float | None,
    sync_seconds: float = 1.0,
) -> ResumeState:
    """Open (or create) the resume directory of this run; refuse one made for another run.

    ``mask_tolerance`` is None when the run writes no mask.
    """
    identity = run_identity(plan, opts, mask_tolerance)
    with write_errors(directory):
        return ResumeState(
            Path(directory), key_of(identity), identity, plan, mask_tolerance is not None, sync_seconds
        )
