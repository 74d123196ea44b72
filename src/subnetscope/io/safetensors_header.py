"""Read and validate the header of a ``.safetensors`` file without touching its data.

The format: 8 bytes little-endian header length N, N bytes of JSON (``{name: {dtype, shape, data_offsets},
"__metadata__": {...}}``), then the data; offsets are relative to the end of the header. The safetensors
library validates this too, but it neither exposes the byte offsets we read through, nor reads bf16 or fp8
into numpy, so the header is parsed here and checked strictly: every tensor's byte length must match
its shape and dtype, offsets must lie inside the file and must not overlap.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from ..dtypes import DType, get_dtype
from ..errors import CheckpointFormatError

#: a header larger than this is certainly corrupt (the reference implementation caps it at 100 MB)
MAX_HEADER_BYTES = 100_000_000


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor's bytes live."""

    name: str
    dtype: DType
    shape: tuple[int, ...]
    path: Path
    start: int  #: absolute byte offset in the file
    nbytes: int

    @property
    def numel(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)


@dataclass
class SafetensorsHeader:
    """Parsed header of one file."""

    path: Path
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] = field(default_factory=dict)
    data_start: int = 0
    file_size: int = 0


def _fail(path: Path, what: str, hint: str) -> CheckpointFormatError:
    return CheckpointFormatError(f"{path}: {what}", hint)


def read_header(path: str | os.PathLike[str]) -> SafetensorsHeader:
    """Parse and validate the header of one safetensors file."""
    p = Path(path)
    redownload = "the file is damaged or incomplete: re-download or re-save it"
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise _fail(p, f"file is {size} bytes, too short to hold a safetensors header", redownload)
            (n,) = struct.unpack("<Q", head)
            if n == 0 or n > MAX_HEADER_BYTES or 8 + n > size:
                raise _fail(
                    p,
                    f"header length {n} is impossible for a file of {size} bytes (corrupt or truncated header)",
                    redownload,
                )
            raw = f.read(n)
    except OSError as e:
        raise CheckpointFormatError(
            f"{p}: cannot read ({e.strerror})", "check the path and permissions"
        ) from e
    try:
        obj = json.loads(raw.decode("utf-8").rstrip(" \x00"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _fail(p, f"header is not valid JSON ({e})", redownload) from None
    if not isinstance(obj, dict):
        raise _fail(p, "header is not a JSON object", redownload)
    data_start = 8 + n
    data_len = size - data_start
    meta_raw = obj.pop("__metadata__", None) or {}
    if not isinstance(meta_raw, dict):
        raise _fail(p, "__metadata__ is not a JSON object", redownload)
    metadata = {str(k): str(v) for k, v in meta_raw.items()}
    tensors: dict[str, TensorInfo] = {}
    spans: list[tuple[int, int, str]] = []
    for name, entry in obj.items():
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
            raise _fail(p, f"tensor {name!r} has no dtype/shape/data_offsets entry", redownload)
        dtype = get_dtype(str(entry["dtype"]), where=f"{p} tensor {name!r}")
        shape = entry["shape"]
        offs = entry["data_offsets"]
        if not (isinstance(shape, list) and all(isinstance(s, int) and s >= 0 for s in shape)):
            raise _fail(p, f"tensor {name!r} has an invalid shape {shape!r}", redownload)
        if not (isinstance(offs, list) and len(offs) == 2 and all(isinstance(o, int) for o in offs)):
            raise _fail(p, f"tensor {name!r} has invalid data_offsets {offs!r}", redownload)
        begin, end = offs
        if not 0 <= begin <= end <= data_len:
            raise _fail(
                p,
                f"tensor {name!r} data_offsets [{begin}, {end}] lie outside the {data_len} data bytes "
                "(file truncated or header corrupt)",
                redownload,
            )
        expected = math.prod(shape) * dtype.itemsize
        if end - begin != expected:
            raise _fail(
                p,
                f"tensor {name!r} has {end - begin} bytes but shape {tuple(shape)} of {dtype.code} needs {expected}",
                redownload,
            )
        tensors[name] = TensorInfo(name, dtype, tuple(shape), p, data_start + begin, end - begin)
        if end > begin:
            spans.append((begin, end, name))
    spans.sort()
    for (_b0, e0, n0), (b1, _e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise _fail(p, f"tensors {n0!r} and {n1!r} overlap in the data (bytes {b1}..{e0})", redownload)
    return SafetensorsHeader(p, tensors, metadata, data_start, size)
