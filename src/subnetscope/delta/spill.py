"""Encoded chunks kept where they are made, then laid out in order: how a delta export runs on any executor.

Workers encode tensors in whatever order the executor runs them; each thread of each process appends its
chunks' blobs to a spill file of its own (``spill-<pid>-<thread>.bin``, no locks, no coordination) and
returns only small :class:`SpillRef` records. Once every tensor is encoded, the driver copies the blobs
into the delta's data files in TARGET's storage order (:func:`assemble`), so the delta's bytes are the same
whatever ran the export and however it was interrupted and resumed. The copy reads only the delta's own
bytes (a fraction of TARGET's). A worker that cannot see the spill directory (a pickled copy: spawned or
Ray) returns the blobs inline in its records instead.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DeltaFormatError
from .encode import EncodedChunk
from .format import ChunkRecord
from .store import DataWriter


@dataclass(frozen=True)
class SpillRef:
    """Where one encoded chunk's blobs are: a spill file and offset, or inline."""

    index: int  #: chunk index within its tensor
    changed: int
    positions: str
    pos_codec: str
    pos_len: int
    val_codec: str
    val_len: int
    file: str = ""  #: spill file name ("" when inline)
    offset: int = 0
    blobs: bytes = b""  #: pos_blob + val_blob when inline

    def to_json(self) -> list[Any]:
        """Compact JSON (spilled refs only: inline blobs are never journaled)."""
        if not self.file:
            raise ValueError("inline spill refs are not journaled")
        return [self.index, self.changed, self.positions, self.pos_codec, self.pos_len, self.val_codec,
                self.val_len, self.file, self.offset]  # fmt: skip

    @classmethod
    def from_json(cls, row: list[Any]) -> SpillRef:
        """Inverse of :meth:`to_json`."""
        i, ch, pos, pc, pl, vc, vl, f, off = row
        return cls(int(i), int(ch), str(pos), str(pc), int(pl), str(vc), int(vl), str(f), int(off))


class _SpillFile:
    """One thread's spill file (appended to only by that thread; closed when the process ends)."""

    def __init__(self, directory: Path) -> None:
        self.pid = os.getpid()
        self.name = f"spill-{self.pid}-{threading.get_ident()}.bin"
        directory.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(directory / self.name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.size = os.fstat(self.fd).st_size


class Spiller:
    """Appends encoded chunks to this thread's spill file in ``directory`` (or keeps them inline)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._local = threading.local()
        self._open: list[_SpillFile] = []
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"directory": None}  # a pickled copy may run where the directory is not: inline

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["directory"])  # type: ignore[misc]

    def close(self) -> None:
        """Close the spill files this process opened."""
        with self._lock:
            for f in self._open:
                os.close(f.fd)
            self._open.clear()

    def _file(self) -> _SpillFile:
        f: _SpillFile | None = getattr(self._local, "file", None)
        if f is None or f.pid != os.getpid():  # a forked child inherits its parent's thread-locals
            assert self.directory is not None
            f = self._local.file = _SpillFile(self.directory)
            with self._lock:
                self._open.append(f)
        return f

    def put(self, index: int, enc: EncodedChunk) -> SpillRef:
        """Keep one chunk's blobs; its record."""
        common = (index, enc.changed, enc.positions, enc.pos_codec, len(enc.pos_blob), enc.val_codec,
                  len(enc.val_blob))  # fmt: skip
        if self.directory is None:
            return SpillRef(*common, blobs=bytes(enc.pos_blob) + bytes(enc.val_blob))
        f = self._file()
        offset = f.size
        for blob in (enc.pos_blob, enc.val_blob):
            view = memoryview(blob)
            while view:
                w = os.write(f.fd, view)
                view = view[w:]
        f.size += len(enc.pos_blob) + len(enc.val_blob)
        return SpillRef(*common, file=f.name, offset=offset)


def spill_files(refs: Iterable[SpillRef], directory: Path) -> set[Path]:
    """The spill files ``refs`` point into."""
    return {directory / r.file for r in refs if r.file}


def assemble(refs: Iterable[SpillRef], directory: Path | None, writer: DataWriter) -> list[ChunkRecord]:
    """Copy the blobs of ``refs``, in the order given, into the delta's data files; their records."""
    fds: dict[str, int] = {}
    out = []
    try:
        for r in refs:
            if r.file:
                assert directory is not None
                fd = fds.get(r.file)
                if fd is None:
                    fd = fds[r.file] = os.open(directory / r.file, os.O_RDONLY)
                raw = os.pread(fd, r.pos_len + r.val_len, r.offset)
                if len(raw) != r.pos_len + r.val_len:
                    raise DeltaFormatError(
                        f"{directory / r.file}: ended early (a spill file of an interrupted export was cut)",
                        "delete the resume directory and export again",
                    )
            else:
                raw = r.blobs
            enc = EncodedChunk(
                r.changed, r.positions, r.pos_codec, raw[: r.pos_len], r.val_codec, raw[r.pos_len :]
            )
            out.append(writer.append(r.index, enc))
    finally:
        for fd in fds.values():
            os.close(fd)
    return out
