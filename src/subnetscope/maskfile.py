"""The mask file: one bit per parameter (1 = updated), bit-packed per tensor, in a safetensors file.

Layout: one ``U8`` tensor per model tensor, same name, ``ceil(numel / 8)`` bytes, bit ``i % 8`` (little bit
order, as ``numpy.packbits(..., bitorder="little")``) of byte ``i // 8`` is element ``i`` of the flattened
parameter. The ``__metadata__`` records the format, tool version, tolerance, semantics, the base's
fingerprint, every parameter's shape and a sha256 per packed tensor, so a truncated or hand-edited file
and a mask for another model are refused with a clear error.

:class:`MaskWriter` writes such a file in one streaming pass: the header is known before the pass (shapes
and fingerprint), parts arrive from worker threads in any order and go to their offsets with ``pwrite``,
and the digests are filled into the reserved header space at the end; the file appears atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import CheckpointFormatError, MaskFormatError, MaskMismatchError
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
from .io.safetensors_header import read_header

FORMAT = "subnetscope.mask"
FORMAT_VERSION = "1"
_PLACEHOLDER = "0" * 64


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
        self.shapes = {n: tuple(int(x) for x in s) for n, s in shapes.items()}
        self._meta: dict[str, str] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "tool_version": __version__,
            "tolerance": repr(float(tolerance)),
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
        """:class:`~subnetscope.engine.MaskSink` interface."""
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


class MaskFile(Mapping[str, np.ndarray]):
    """A mask file opened lazily: a read-only mapping from tensor name to a boolean array of its shape."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise MaskFormatError(
                f"{self.path}: no such mask file", "create one with `subnetscope mask BASE TARGET -o FILE`"
            )
        try:
            header = read_header(self.path)
        except CheckpointFormatError as e:
            raise MaskFormatError(
                f"{self.path}: not a readable mask file ({e.message})",
                "regenerate it with `subnetscope mask`",
            ) from None
        meta = header.metadata
        if meta.get("format") != FORMAT:
            raise MaskFormatError(
                f"{self.path}: not a subnetscope mask (format {meta.get('format')!r})",
                "give a file written by `subnetscope mask` or `compare --mask-out`",
            )
        if meta.get("format_version") != FORMAT_VERSION:
            raise MaskFormatError(
                f"{self.path}: mask format version {meta.get('format_version')!r} is not supported",
                "regenerate the mask with this version of subnetscope",
            )
        try:
            self.shapes: dict[str, tuple[int, ...]] = {
                n: tuple(s) for n, s in json.loads(meta["shapes"]).items()
            }
            self.digests: dict[str, str] = json.loads(meta["sha256"])
            self.fingerprint = Fingerprint.from_json(json.loads(meta["base_fingerprint"]))
            self.tolerance = float(meta["tolerance"])
        except (KeyError, ValueError, TypeError) as e:
            raise MaskFormatError(
                f"{self.path}: mask metadata is damaged ({e})", "regenerate the mask"
            ) from None
        try:
            #: base dtype code per tensor (as stored in the base checkpoint)
            self.dtypes: dict[str, str] = json.loads(meta.get("dtypes", "{}"))
        except ValueError:
            raise MaskFormatError(
                f"{self.path}: mask metadata 'dtypes' is damaged", "regenerate the mask"
            ) from None
        self.semantics = meta.get("semantics", "exact")
        self.metadata = meta
        self._infos = header.tensors
        for name, shape in self.shapes.items():
            info = self._infos.get(name)
            if info is None or info.nbytes != packed_size(math.prod(shape)):
                raise MaskFormatError(
                    f"{self.path}: tensor {name!r} is missing or has the wrong size for shape {list(shape)}",
                    "the file was edited or damaged: regenerate the mask",
                )

    # Mapping interface -----------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> np.ndarray:
        shape = self.shapes[name]
        bits = np.unpackbits(self.packed(name), count=math.prod(shape), bitorder="little")
        return bits.view(bool).reshape(shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)

    # extras -----------------------------------------------------------------------------------------------
    def packed(self, name: str, verify: bool = True) -> np.ndarray:
        """The packed bytes of one tensor (checked against the recorded sha256)."""
        info = self._infos[name]
        with open(self.path, "rb") as f:
            f.seek(info.start)
            raw = f.read(info.nbytes)
        if len(raw) != info.nbytes:
            raise MaskFormatError(f"{self.path}: truncated inside tensor {name!r}", "regenerate the mask")
        if verify and hashlib.sha256(raw).hexdigest() != self.digests.get(name):
            raise MaskFormatError(
                f"{self.path}: the bits of tensor {name!r} do not match their recorded sha256 (edited or damaged)",
                "regenerate the mask",
            )
        return np.frombuffer(raw, dtype=np.uint8)

    def torch(self, name: str) -> Any:
        """One tensor's mask as a ``torch.bool`` tensor of the parameter's shape."""
        import torch

        return torch.from_numpy(self[name].copy())

    def count(self, name: str) -> int:
        """Number of updated elements in one tensor."""
        return int(
            np.unpackbits(self.packed(name), count=math.prod(self.shapes[name]), bitorder="little").sum()
        )

    @property
    def numel(self) -> int:
        """Parameters covered by the mask."""
        return sum(math.prod(s) for s in self.shapes.values())

    def check_base(self, fp: Fingerprint, what: str = "the given model") -> None:
        """Refuse when ``fp`` is not the fingerprint of the mask's base."""
        if fp.structure != self.fingerprint.structure:
            raise MaskMismatchError(
                f"{self.path}: mask was made for another model (tensor names/shapes/dtypes differ from {what})",
                "use the mask made against this base, or recompute it with `subnetscope mask`",
            )
        if fp.content != self.fingerprint.content:
            raise MaskMismatchError(
                f"{self.path}: mask was made against a base with other weights than {what} "
                f"(fingerprint {self.fingerprint.short()} vs {fp.short()})",
                "use the mask made against this base, or recompute it with `subnetscope mask`",
            )

    def check_compatible(self, other: MaskFile) -> None:
        """Refuse to combine two masks made over different bases."""
        if self.fingerprint != other.fingerprint:
            raise MaskMismatchError(
                f"{self.path} and {other.path} were made over different bases "
                f"({self.fingerprint.short()} vs {other.fingerprint.short()})",
                "compare masks computed against the same base model",
            )
