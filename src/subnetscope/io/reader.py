"""Chunked reads of tensor bytes into reused buffers.

``os.preadv`` copies straight from the page cache into a preallocated numpy buffer: no page faults on a
memory map, no per-chunk allocation, and it is thread-safe on a shared file descriptor (no seek).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from ..errors import CheckpointFormatError
from .safetensors_header import TensorInfo

#: default elements per chunk: 1 Mi elements is 2 MiB of bf16 per side, small enough to stay in cache
DEFAULT_CHUNK_ELEMENTS = 1 << 20


class FileHandles:
    """Keeps one read-only descriptor per file open, shared by threads."""

    def __init__(self) -> None:
        self._fds: dict[Path, int] = {}
        self._lock = threading.Lock()

    def fd(self, path: Path) -> int:
        """Open ``path`` once (read-only) and return its descriptor."""
        with self._lock:
            fd = self._fds.get(path)
            if fd is None:
                try:
                    fd = os.open(path, os.O_RDONLY)
                except OSError as e:
                    raise CheckpointFormatError(
                        f"{path}: cannot open ({e.strerror})", "check the file"
                    ) from e
                self._fds[path] = fd
            return fd

    def close(self) -> None:
        """Close every descriptor."""
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()

    def __enter__(self) -> FileHandles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ChunkReader:
    """Reads element ranges of tensors into a buffer owned by the reader (one reader per thread)."""

    def __init__(self, handles: FileHandles, capacity_bytes: int) -> None:
        self.handles = handles
        self._buf = np.empty(max(capacity_bytes, 8), dtype=np.uint8)

    def read(self, info: TensorInfo, start: int, count: int) -> np.ndarray:
        """Raw bits of elements ``[start, start+count)`` of ``info`` (a view into the reused buffer)."""
        size = info.dtype.itemsize
        nbytes = count * size
        if nbytes > self._buf.size:
            self._buf = np.empty(nbytes, dtype=np.uint8)
        view = self._buf[:nbytes]
        fd = self.handles.fd(info.path)
        offset = info.start + start * size
        got = 0
        while got < nbytes:
            n = os.preadv(fd, [view[got:].data], offset + got)
            if n <= 0:
                raise CheckpointFormatError(
                    f"{info.path}: ended while reading tensor {info.name!r} (file truncated since it was indexed?)",
                    "re-download or re-save the checkpoint",
                )
            got += n
        return view.view(info.dtype.bits_dtype)


def read_tensor_bits(info: TensorInfo) -> np.ndarray:
    """All raw bits of one tensor, flattened (a fresh array; for small tensors and tests)."""
    with FileHandles() as h:
        r = ChunkReader(h, info.nbytes)
        return r.read(info, 0, info.numel).copy()
