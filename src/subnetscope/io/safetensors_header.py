"""Read and validate the header of a ``.safetensors`` file without touching its data.

The format: 8 bytes little-endian header length N, N bytes of JSON (``{name: {dtype, shape, data_offsets},
"__metadata__": {...}}``), then the data; offsets are relative to the end of the header. The safetensors
library validates this too, but it neither exposes the byte offsets we read through, nor reads bf16 or fp8
into numpy, so the header is parsed here, exactly as strictly as ``safetensors.safe_open`` parses it (its
Rust reader, ``SafeTensors::read_metadata``, and serde_json): the JSON is serde_json's (no ``NaN``, no lone
surrogate, at most 127 levels deep, no trailing bytes but whitespace), dimensions and offsets are unsigned
64-bit integers (``true`` is not ``1``), ``__metadata__`` maps strings to strings, the tensors tile the
data exactly (the first starts at 0, each where the previous ends, the last at the end of the file), and
each tensor's byte length matches its shape and dtype. One deliberate difference: a tensor name that the
header repeats is refused, where safetensors keeps the last entry when the offsets still tile.
Only regular files are opened: a FIFO, a device or a socket is refused by name, unopened.
"""

from __future__ import annotations

import math
import os
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..dtypes import DType, get_dtype
from ..errors import CheckpointFormatError
from . import strict_json

#: a header larger than this is certainly corrupt (the reference implementation caps it at 100 MB)
MAX_HEADER_BYTES = 100_000_000

#: bits per element of every dtype the safetensors format defines (some of which subnetscope cannot read)
SAFETENSORS_BITS = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8,
    "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64,
}  # fmt: skip

_U64 = 2**64
_ENTRY_FIELDS = ("dtype", "shape", "data_offsets")
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


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


def file_kind(mode: int) -> str:
    """``"a FIFO (named pipe)"``, ``"a directory"``, ... for a ``st_mode`` that is not a regular file."""
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return "not a regular file"


def require_regular(path: Path, what: str = "weights file") -> os.stat_result:
    """``stat`` of ``path`` (symlinks followed), refusing anything but a regular file, which is never opened.

    A FIFO would block the reader forever and a device would feed it endless bytes; both are refused here,
    before any ``open``. A missing path raises :class:`FileNotFoundError` for the caller to word.
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointFormatError(
            f"{path}: is {file_kind(st.st_mode)}, not a regular file, so it cannot be a {what}",
            f"give the {what} itself; subnetscope only opens regular files (and never FIFOs or devices)",
        )
    return st


def _open_regular(path: Path) -> int:
    """Open a checked regular file without blocking, re-checking the open file (it may have been swapped)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CheckpointFormatError(
                f"{path}: is {file_kind(st.st_mode)}, not a regular file", "give the weights file itself"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


def _u64(v: object) -> bool:
    return type(v) is int and 0 <= v < _U64


def _entry(p: Path, name: str, entry: object, redownload: str) -> tuple[str, list[int], tuple[int, int]]:
    if not isinstance(entry, dict):
        raise _fail(p, f"tensor {name!r} has no dtype/shape/data_offsets entry", redownload)
    dups = [k for k in strict_json.duplicate_keys(entry) if k in _ENTRY_FIELDS]
    if dups:
        raise _fail(p, f"tensor {name!r} repeats the field {dups[0]!r} in the header JSON", redownload)
    missing = [k for k in _ENTRY_FIELDS if k not in entry]
    if missing:
        raise _fail(p, f"tensor {name!r} has no dtype/shape/data_offsets entry (no {missing[0]})", redownload)
    code, shape, offs = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(code, str) or code not in SAFETENSORS_BITS:
        raise _fail(p, f"tensor {name!r} has dtype {code!r}, which is not a safetensors dtype", redownload)
    if not (isinstance(shape, list) and all(_u64(s) for s in shape)):
        raise _fail(
            p, f"tensor {name!r} has an invalid shape {shape!r} (dimensions are integers >= 0)", redownload
        )
    if not (isinstance(offs, list) and len(offs) == 2 and all(_u64(o) for o in offs)):
        raise _fail(p, f"tensor {name!r} has invalid data_offsets {offs!r}", redownload)
    return code, shape, (offs[0], offs[1])


def _expected_bytes(p: Path, name: str, code: str, shape: list[int], redownload: str) -> int:
    numel = 1
    for s in shape:  # as safetensors computes it: in 64 bits, overflowing even where a later dimension is 0
        numel *= s
        if numel >= _U64:
            raise _fail(p, f"tensor {name!r}: shape {tuple(shape)} overflows 64 bits", redownload)
    bits = numel * SAFETENSORS_BITS[code]
    if bits >= _U64:
        raise _fail(p, f"tensor {name!r}: shape {tuple(shape)} of {code} overflows 64 bits", redownload)
    if bits % 8:
        raise _fail(p, f"tensor {name!r}: {numel} elements of {code} do not fill whole bytes", redownload)
    return bits // 8


def _parse(p: Path, raw: bytes, redownload: str) -> Any:
    try:
        return strict_json.loads(raw, like_serde=True)
    except UnicodeDecodeError as e:
        raise _fail(p, f"header is not valid UTF-8 ({e})", redownload) from None
    except strict_json.StrictJSONError as e:
        raise _fail(p, f"header is not valid JSON ({e})", redownload) from None
    except ValueError as e:
        raise _fail(p, f"header is not valid JSON ({e})", redownload) from None


def read_header(path: str | os.PathLike[str]) -> SafetensorsHeader:
    """Parse and validate the header of one safetensors file, as strictly as ``safetensors.safe_open``."""
    p = Path(path)
    redownload = "the file is damaged or incomplete: re-download or re-save it"
    try:
        size = require_regular(p).st_size
        fd = _open_regular(p)
        with open(fd, "rb") as f:
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
    obj = _parse(p, raw, redownload)
    if not isinstance(obj, dict):
        raise _fail(p, "header is not a JSON object", redownload)
    dups = strict_json.duplicate_keys(obj)
    if dups:
        raise _fail(p, f"the header JSON names {dups[0]!r} twice", redownload)
    data_start = 8 + n
    data_len = size - data_start
    meta_raw = obj.pop("__metadata__", None)
    if meta_raw is None:
        meta_raw = {}
    if not isinstance(meta_raw, dict):
        raise _fail(p, "__metadata__ is not a JSON object", redownload)
    bad = next((k for k, v in meta_raw.items() if not isinstance(v, str)), None)
    if bad is not None:
        raise _fail(
            p, f"__metadata__ value {bad!r} is {type(meta_raw[bad]).__name__}, not a string", redownload
        )
    metadata: dict[str, str] = dict(meta_raw)
    spans: list[tuple[int, int, str, str, tuple[int, ...]]] = []
    for name, entry in obj.items():
        code, dims, (begin, end) = _entry(p, name, entry, redownload)
        spans.append((begin, end, name, code, tuple(dims)))
    pos, prev = 0, ""
    for begin, end, name, code, shape in sorted(spans, key=lambda s: (s[0], s[1])):
        if begin < pos:
            raise _fail(
                p, f"tensors {prev!r} and {name!r} overlap in the data (bytes {begin}..{pos})", redownload
            )
        if begin != pos or end < begin:
            what = (
                "end before they start"
                if end < begin
                else (
                    "do not start the data"
                    if pos == 0
                    else f"leave a gap after {prev!r}, which ends at {pos}"
                )
            )
            raise _fail(
                p,
                f"tensor {name!r} data_offsets [{begin}, {end}] {what}; the tensors must tile the data exactly",
                redownload,
            )
        if end > data_len:
            raise _fail(
                p,
                f"tensor {name!r} data_offsets [{begin}, {end}] lie outside the {data_len} data bytes "
                "(file truncated or header corrupt)",
                redownload,
            )
        expected = _expected_bytes(p, name, code, list(shape), redownload)
        if end - begin != expected:
            raise _fail(
                p,
                f"tensor {name!r} has {end - begin} bytes but shape {shape} of {code} needs {expected}",
                redownload,
            )
        pos, prev = end, name
    if pos != data_len:
        raise _fail(
            p,
            f"the tensors cover {pos} of the {data_len} data bytes: {data_len - pos} trailing byte(s) "
            "follow the last tensor (safetensors refuses such a file)",
            redownload,
        )
    tensors: dict[str, TensorInfo] = {}
    for begin, end, name, code, shape in spans:  # in header order
        dtype = get_dtype(code, where=f"{p} tensor {name!r}")
        tensors[name] = TensorInfo(name, dtype, shape, p, data_start + begin, end - begin)
    return SafetensorsHeader(p, tensors, metadata, data_start, size)
