"""The data files of a delta: encoded chunks appended by worker threads, read back by offset."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from ..errors import DeltaFormatError
from .encode import EncodedChunk
from .format import ChunkRecord, StoredFile

#: a new data file is started once the current one would pass this size
DEFAULT_MAX_FILE_BYTES = 4 << 30


def data_file_name(k: int) -> str:
    """Name of the ``k``-th data file (0-based)."""
    return f"data-{k + 1:05d}.bin"


class DataWriter:
    """Appends chunk blobs to ``data-0000k.bin`` files in a directory, hashing them as they are written.

    Thread-safe: :meth:`append` may be called from any worker; each call writes one chunk's blobs
    contiguously and returns its record.
    """

    def __init__(self, directory: Path, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> None:
        self.directory = directory
        self.max_file_bytes = max_file_bytes
        self._lock = threading.Lock()
        self._files: list[StoredFile] = []
        self._fd: int | None = None
        self._size = 0
        self._hash = hashlib.sha256()

    def _roll(self) -> None:
        self._close_current()
        name = data_file_name(len(self._files))
        self._fd = os.open(self.directory / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._files.append(StoredFile(name, 0, ""))
        self._size = 0
        self._hash = hashlib.sha256()

    def _close_current(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            last = self._files[-1]
            self._files[-1] = StoredFile(last.name, self._size, self._hash.hexdigest())

    def append(self, index: int, enc: EncodedChunk) -> ChunkRecord:
        """Write one chunk's blobs; return its record."""
        n = len(enc.pos_blob) + len(enc.val_blob)
        with self._lock:
            if self._fd is None or (self._size and self._size + n > self.max_file_bytes):
                self._roll()
            assert self._fd is not None
            offset = self._size
            for blob in (enc.pos_blob, enc.val_blob):
                view = memoryview(blob)
                while view:
                    w = os.write(self._fd, view)
                    view = view[w:]
                self._hash.update(blob)
            self._size += n
            return ChunkRecord(
                index, enc.changed, enc.positions, enc.pos_codec, len(enc.pos_blob), enc.val_codec,
                len(enc.val_blob), len(self._files) - 1, offset,
            )  # fmt: skip

    def close(self) -> list[StoredFile]:
        """Close the current file; the list of files written, with sizes and digests."""
        with self._lock:
            self._close_current()
            return list(self._files)


class DataReader:
    """Reads chunk blobs from the data files of a delta (one descriptor per file, shared by threads)."""

    def __init__(self, directory: Path, files: list[StoredFile]) -> None:
        self.directory = directory
        self.files = files
        self._fds: dict[int, int] = {}
        self._lock = threading.Lock()

    def _fd(self, k: int) -> int:
        with self._lock:
            fd = self._fds.get(k)
            if fd is None:
                path = self.directory / self.files[k].name
                try:
                    fd = os.open(path, os.O_RDONLY)
                except OSError as e:
                    raise DeltaFormatError(
                        f"{path}: cannot open ({e.strerror})", "copy the delta again"
                    ) from None
                self._fds[k] = fd
            return fd

    def blobs(self, rec: ChunkRecord) -> tuple[bytes, bytes]:
        """The positions and values blobs of one record."""
        n = rec.pos_bytes + rec.val_bytes
        raw = os.pread(self._fd(rec.file), n, rec.offset)
        if len(raw) != n:
            raise DeltaFormatError(
                f"{self.directory / self.files[rec.file].name}: ended inside a chunk (truncated)",
                "copy the delta directory again, or re-export it",
            )
        return raw[: rec.pos_bytes], raw[rec.pos_bytes :]

    def close(self) -> None:
        """Close every descriptor."""
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()

    def __enter__(self) -> DataReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
