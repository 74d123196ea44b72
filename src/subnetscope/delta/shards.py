"""Writing a Hugging Face checkpoint whose tensors arrive in pieces, from several threads.

The layout is fixed before any data: tensors are packed in order into shards of at most
``max_shard_bytes`` (a tensor larger than that gets a shard of its own), each shard's safetensors header
is written first and the file is extended to its final size, then pieces go to their offsets with
``pwrite`` (or ``copy_file_range`` for runs copied verbatim from the base). Names follow
``save_pretrained``: ``model.safetensors`` when there is one shard, else
``model-0000k-of-0000N.safetensors`` plus ``model.safetensors.index.json``.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from ..io.checkpoint import INDEX_NAME

#: default bound on one shard (the hub's recommended size for a file)
DEFAULT_MAX_SHARD_BYTES = 5_000_000_000


@dataclass(frozen=True)
class OutTensor:
    """A tensor to be written."""

    name: str
    dtype: str  #: safetensors code
    shape: tuple[int, ...]
    nbytes: int


def plan_shards(tensors: list[OutTensor], max_shard_bytes: int) -> list[list[OutTensor]]:
    """Pack ``tensors`` in order into shards of at most ``max_shard_bytes`` each."""
    shards: list[list[OutTensor]] = [[]]
    size = 0
    for t in tensors:
        if shards[-1] and size + t.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    return shards


def shard_names(n: int) -> list[str]:
    """File names of ``n`` shards, as ``save_pretrained`` names them."""
    if n == 1:
        return ["model.safetensors"]
    return [f"model-{k + 1:05d}-of-{n:05d}.safetensors" for k in range(n)]


def header_bytes(tensors: list[OutTensor], metadata: dict[str, str]) -> bytes:
    """The 8-byte length and JSON header of a safetensors file holding ``tensors`` back to back."""
    obj: dict[str, object] = {"__metadata__": metadata}
    pos = 0
    for t in tensors:
        obj[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [pos, pos + t.nbytes]}
        pos += t.nbytes
    raw = json.dumps(obj, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw


class ShardWriter:
    """Creates the shards in ``directory`` and accepts each tensor's bytes in any order, from any thread.

    With ``create=False`` it opens shards an earlier writer laid out (a resumed run continues them); a
    pickled writer (a spawned or Ray worker) reopens its shards that way, by path.
    """

    def __init__(
        self, directory: Path, tensors: list[OutTensor], max_shard_bytes: int, create: bool = True
    ) -> None:
        self.directory = directory
        self._args = (list(tensors), max_shard_bytes)
        groups = plan_shards(tensors, max_shard_bytes)
        self.names = shard_names(len(groups))
        self._where: dict[str, tuple[int, int]] = {}
        self._fds: list[int] = []
        self.weight_map: dict[str, str] = {}
        self.total_size = sum(t.nbytes for t in tensors)
        self._copy_ok = True
        self._lock = threading.Lock()
        try:
            for name, group in zip(self.names, groups):
                head = header_bytes(group, {"format": "pt"})
                flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC if create else os.O_RDWR
                fd = os.open(directory / name, flags, 0o644)
                self._fds.append(fd)
                if create:
                    os.pwrite(fd, head, 0)
                pos = len(head)
                for t in group:
                    self._where[t.name] = (fd, pos)
                    self.weight_map[t.name] = name
                    pos += t.nbytes
                if create:
                    os.ftruncate(fd, pos)
                elif os.fstat(fd).st_size != pos or os.pread(fd, len(head), 0) != head:
                    raise ValueError(f"{directory / name}: not the shard this writer lays out")
        except BaseException:
            self.close()
            raise

    def __getstate__(self) -> dict[str, object]:
        return {"directory": self.directory, "args": self._args}

    def __setstate__(self, state: dict[str, object]) -> None:
        args: tuple[list[OutTensor], int] = state["args"]  # type: ignore[assignment]
        directory: Path = state["directory"]  # type: ignore[assignment]
        self.__init__(directory, args[0], args[1], create=False)  # type: ignore[misc]

    @staticmethod
    def laid_out(directory: Path, tensors: list[OutTensor], max_shard_bytes: int) -> bool:
        """Whether ``directory`` holds every shard such a writer lays out, at its size and with its header."""
        try:
            ShardWriter(directory, tensors, max_shard_bytes, create=False).close()
        except (OSError, ValueError):
            return False
        return True

    def shard_of(self, name: str) -> str:
        """The shard file that holds tensor ``name``."""
        return self.weight_map[name]

    def write(self, name: str, offset: int, data: memoryview | bytes) -> None:
        """Write ``data`` at byte ``offset`` of tensor ``name``."""
        fd, start = self._where[name]
        view = memoryview(data).cast("B")
        pos = start + offset
        while view:
            n = os.pwrite(fd, view, pos)
            view = view[n:]
            pos += n

    def copy_from(self, name: str, offset: int, src_fd: int, src_offset: int, nbytes: int) -> None:
        """Copy ``nbytes`` from ``src_fd`` at ``src_offset`` to byte ``offset`` of tensor ``name``."""
        fd, start = self._where[name]
        dst = start + offset
        done = 0
        while done < nbytes and self._copy_ok and hasattr(os, "copy_file_range"):
            try:
                n = os.copy_file_range(src_fd, fd, nbytes - done, src_offset + done, dst + done)
            except OSError:
                self._copy_ok = (
                    False  # not supported here (e.g. across file systems): plain copies from now on
                )
                break
            if n == 0:
                raise OSError(f"source ended while copying tensor {name!r}")
            done += n
        while done < nbytes:
            n = min(1 << 24, nbytes - done)
            block = os.pread(src_fd, n, src_offset + done)
            if not block:
                raise OSError(f"source ended while copying tensor {name!r}")
            self.write(name, offset + done, block)
            done += len(block)

    def finish(self, index_dir: Path | None = None) -> list[str]:
        """Close the shards and write the index (into ``index_dir``, default the shards' directory) when
        there are several; the files written.

        Like ``save_pretrained``, this does not fsync: the atomic rename of the directory guards against
        interrupted runs, not against a power cut right after one.
        """
        self.close()
        files = list(self.names)
        if len(self.names) > 1:
            index = {"metadata": {"total_size": self.total_size}, "weight_map": self.weight_map}
            (index_dir or self.directory).joinpath(INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
            files.append(INDEX_NAME)
        return files

    def close(self) -> None:
        """Close every shard (idempotent)."""
        with self._lock:
            for fd in self._fds:
                os.close(fd)
            self._fds.clear()
