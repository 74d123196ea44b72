"""Writing a mask file: :class:`MaskWriter` (one packed bit per element, then the header digests), the format's
constants and its header digest. Read it back with :class:`subnetscope.maskfile.MaskFile`."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, validate
from .errors import UsageError
from .fingerprint import Fingerprint
from .io.outputs import (
    FILE,
    Output,
    check_kind,
    destination,
    make_parents,
    remove_empty,
    write_error,
    write_errors,
)

FORMAT = "subnetscope.mask"
FORMAT_VERSION = "2"
#: versions this version reads: 1 has no header digest
READABLE_VERSIONS = ("1", "2")
_PLACEHOLDER = "0" * 64


def header_digest(
    metadata: Mapping[str, str], tensors: Mapping[str, tuple[str, Sequence[int], int, int]]
) -> str:
    """sha256 of a mask header: ``metadata`` without ``header_sha256``, and per tensor (dtype, shape, begin,
    end) with offsets relative to the data, in a canonical JSON form (sorted keys, no spaces, ASCII)."""
    doc = {
        "metadata": {k: v for k, v in metadata.items() if k != "header_sha256"},
        "tensors": {n: [d, list(shape), b, e] for n, (d, shape, b, e) in tensors.items()},
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def packed_size(numel: int) -> int:
    """Bytes of a packed mask of ``numel`` bits."""
    return (numel + 7) // 8


class MaskWriter:
    """Streams a mask file; use as a context manager (the file appears only on success)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        shapes: Mapping[str, tuple[int, ...] | list[int]],
        fingerprint: Fingerprint,
        tolerance: float,
        semantics: str,
        extra_metadata: Mapping[str, str] | None = None,
        dtypes: Mapping[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        tolerance = validate.tolerance(tolerance)
        semantics = validate.semantics(semantics)
        self.shapes = {n: tuple(int(x) for x in s) for n, s in shapes.items()}
        reserved = {"format", "format_version", "tool_version", "tolerance", "semantics", "bitorder",
                    "base_fingerprint", "shapes", "dtypes", "sha256", "header_sha256"}  # fmt: skip
        clash = sorted(reserved & set(extra_metadata or {}))
        if clash:
            raise UsageError(f"extra_metadata may not set {', '.join(clash)}", "use other keys")
        self._meta: dict[str, str] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "tool_version": __version__,
            "tolerance": repr(tolerance),
            "semantics": semantics,
            "bitorder": "little",
            "base_fingerprint": json.dumps(fingerprint.to_json(), sort_keys=True),
            "shapes": json.dumps({n: list(s) for n, s in self.shapes.items()}),
            "dtypes": json.dumps(dict(dtypes or {})),
            **(extra_metadata or {}),
        }
        self._offsets: dict[str, tuple[int, int]] = {}
        pos = 0
        for name, shape in self.shapes.items():
            nb = packed_size(math.prod(shape))
            self._offsets[name] = (pos, pos + nb)
            pos += nb
        self._data_len = pos
        self._written: dict[str, int] = dict.fromkeys(self.shapes, 0)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._tmp: Path | None = None
        self._dest = self.path
        self._created: list[Path] = []

    def _header(self, digests: Mapping[str, str]) -> bytes:
        meta = dict(self._meta)
        meta["sha256"] = json.dumps({n: digests.get(n, _PLACEHOLDER) for n in self.shapes})
        entries = {n: ("U8", [e - b], b, e) for n, (b, e) in self._offsets.items()}
        meta["header_sha256"] = header_digest(meta, entries) if digests else _PLACEHOLDER
        obj: dict[str, Any] = {"__metadata__": meta}
        for name, (b, e) in self._offsets.items():
            obj[name] = {"dtype": "U8", "shape": [e - b], "data_offsets": [b, e]}
        raw = json.dumps(obj, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        return len(raw).to_bytes(8, "little") + raw

    def __enter__(self) -> MaskWriter:
        dest = destination(self.path)  # a symlink is written through; a device node or FIFO is refused
        check_kind(Output(self.path, "the mask", FILE), dest, str(self.path))
        self._dest = dest
        self._created = make_parents(dest, self.path)
        with write_errors(self.path):
            self._tmp = dest.with_name(f".tmp-{dest.name}.{os.getpid()}")
            self._fd = os.open(self._tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                self._head = self._header({})
                os.write(self._fd, self._head)
                os.ftruncate(self._fd, len(self._head) + self._data_len)
            except BaseException:
                self._discard()
                raise
        return self

    def _discard(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                self._tmp.unlink()
        remove_empty(self._created)

    def write_bits(self, name: str, start: int, packed: np.ndarray) -> None:
        """Store packed bits for elements ``[start, ...)`` of ``name`` (``start`` a multiple of 8)."""
        assert self._fd is not None and start % 8 == 0
        b, e = self._offsets[name]
        off = b + start // 8
        nb = min(packed.size, e - off)
        try:
            os.pwrite(self._fd, np.ascontiguousarray(packed[:nb]).data, len(self._head) + off)
        except OSError as err:
            raise write_error(self.path, err) from err
        with self._lock:
            self._written[name] += nb

    def write(self, pair: Any, start: int, packed: np.ndarray) -> None:
        """:class:`~subnetscope.measures.compare.MaskSink` interface."""
        self.write_bits(pair.name, start, packed)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        assert self._fd is not None and self._tmp is not None
        if exc_type is not None:
            self._discard()
            return
        try:
            missing = [n for n, (b, e) in self._offsets.items() if self._written[n] != e - b]
            if missing:
                raise RuntimeError(f"mask writer: {len(missing)} tensor(s) incomplete, e.g. {missing[0]}")
            with write_errors(self.path):
                digests = {}
                for name, (b, e) in self._offsets.items():
                    h = hashlib.sha256()
                    pos = b
                    while pos < e:
                        n = min(1 << 24, e - pos)
                        h.update(os.pread(self._fd, n, len(self._head) + pos))
                        pos += n
                    digests[name] = h.hexdigest()
                head = self._header(digests)
                assert len(head) == len(self._head)
                os.pwrite(self._fd, head, 0)
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None
                os.replace(self._tmp, self._dest)
        except BaseException:
            self._discard()
            raise
