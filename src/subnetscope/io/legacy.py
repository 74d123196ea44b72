"""Legacy PyTorch checkpoints: ``pytorch_model.bin`` and shards listed in ``pytorch_model.bin.index.json``.

Such a file is a zip archive written by ``torch.save``: a pickle (``data.pkl``) that describes the tensors
and one *uncompressed* record per storage holding its raw little-endian bytes. It is opened only with
``torch.load(path, weights_only=True, mmap=True, map_location="meta")``: the weights-only unpickler refuses
anything but tensors and plain containers (a pickle naming any other class is refused with
:class:`~subnetscope.errors.CheckpointFormatError`, never executed), and no tensor data is read or copied.
Each tensor then becomes an ordinary :class:`~subnetscope.io.safetensors_header.TensorInfo` whose ``start``
is its byte offset inside the ``.bin`` file (the storage record's offset plus the tensor's storage offset),
so the chunked reader, the fingerprint and every executor read it exactly like a safetensors tensor.

The offset comes from the storage's ``_checkpoint_offset``, which torch sets for ``map_location="meta"``;
where torch does not set it (older versions) it is recovered from the memory map instead: every storage is a
slice of one map of the whole file, so its data pointer minus the map's base is its record offset, the base
being the one value that puts every storage on a record of its size in the zip directory (read with
:mod:`zipfile`, no pickle involved). Shards are loaded one at a time and dropped before the next.

Not supported (each refused with a clear error): the pre-1.6 non-zip format, big-endian archives, tensors
stored as non-contiguous views (e.g. a saved transpose), dtypes without a safetensors code (complex,
quantized), and files that hold something other than a flat ``{name: tensor}`` state dict.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import struct
import zipfile
from pathlib import Path
from typing import Any

from ..dtypes import TORCH_TO_CODE, get_dtype
from ..errors import CheckpointFormatError, UnsupportedDtypeError
from .assemble import Checkpoint, load_index, merge_headers
from .safetensors_header import SafetensorsHeader, TensorInfo, require_regular

#: the index file of a sharded legacy checkpoint
BIN_INDEX_NAME = "pytorch_model.bin.index.json"
#: the single-file legacy checkpoint
BIN_NAME = "pytorch_model.bin"

_RESAVE = "re-save it with safetensors (model.save_pretrained(dir, safe_serialization=True))"


def is_legacy_file(path: Path) -> bool:
    """True for a ``.bin`` weights file or a ``*.bin.index.json`` index."""
    return path.suffix == ".bin" or path.name.endswith(".bin.index.json")


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise CheckpointFormatError(
            "reading a legacy pytorch_model.bin checkpoint needs PyTorch, which is not installed",
            "pip install 'subnetscope[torch]', or " + _RESAVE,
        ) from None
    return torch


def _record_table(path: Path) -> tuple[dict[int, int], str | None]:
    """Data offset → size of every storage record in the zip (read with :mod:`zipfile`), and the byte order."""
    records: dict[int, int] = {}
    order: str | None = None
    try:
        with zipfile.ZipFile(path) as zf, open(path, "rb") as f:
            for zi in zf.infolist():
                parts = zi.filename.split("/")
                if parts[-1] == "byteorder":
                    order = zf.read(zi).decode("ascii", "replace").strip()
                    continue
                if len(parts) < 2 or parts[-2] != "data" or not parts[-1].isdigit():
                    continue
                if zi.compress_type != zipfile.ZIP_STORED:
                    raise CheckpointFormatError(
                        f"{path}: storage record {zi.filename} is compressed, so its bytes cannot be read in place",
                        _RESAVE,
                    )
                f.seek(zi.header_offset)
                local = f.read(30)
                if len(local) != 30 or local[:4] != b"PK\x03\x04":
                    raise CheckpointFormatError(f"{path}: damaged zip entry {zi.filename}", "re-download it")
                n, m = struct.unpack("<HH", local[26:30])
                records[zi.header_offset + 30 + n + m] = zi.file_size
    except zipfile.BadZipFile as e:
        raise CheckpointFormatError(
            f"{path}: not a zip-format torch.save file ({e}): the pre-1.6 format cannot be read in place, "
            "and other pickles are never loaded",
            _RESAVE,
        ) from None
    return records, order


def _load_meta(path: Path, meta: bool) -> Any:
    torch = _torch()
    try:
        return torch.load(path, weights_only=True, mmap=True, map_location="meta" if meta else "cpu")
    except pickle.UnpicklingError as e:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
        m = re.search(r"WeightsUnpickler error: (.*?\.)(?:\s|$)", text)
        why = m.group(1) if m else (text.strip().splitlines() or ["unsupported content"])[0]
        raise CheckpointFormatError(
            f"{path}: refused to load: the pickle is not weights-only ({why[:300]})",
            "subnetscope never runs code from a checkpoint; " + _RESAVE + " in an environment you trust",
        ) from None
    except RuntimeError as e:
        msg = str(e)
        if "mmap" in msg or "zipfile" in msg.lower() or "zip archive" in msg:
            raise CheckpointFormatError(
                f"{path}: not a zip-format torch.save file (the pre-1.6 format cannot be read in place)",
                _RESAVE,
            ) from None
        raise CheckpointFormatError(f"{path}: torch.load failed ({msg[:300]})", _RESAVE) from None
    except (OSError, EOFError, ValueError) as e:
        raise CheckpointFormatError(f"{path}: not a readable torch.save file ({e})", _RESAVE) from None


def _base_from_pointers(path: Path, storages: dict[int, int], records: dict[int, int]) -> int:
    """The map base that puts every storage (data pointer → nbytes) on a zip record of its size."""
    if not storages:
        return 0
    low = min(storages)
    for off in sorted(records):
        base = low - off
        if all(records.get(p - base) == nb for p, nb in storages.items()):
            return base
    raise CheckpointFormatError(f"{path}: could not locate the tensors' bytes inside the archive", _RESAVE)


def read_legacy(path: str | os.PathLike[str], use_meta: bool = True) -> SafetensorsHeader:
    """Index one ``.bin`` file: name → :class:`TensorInfo` with byte offsets inside it (no data is read).

    ``use_meta=False`` forces the memory-map fallback used with torch versions that do not record storage
    offsets on meta tensors (kept for tests).
    """
    p = Path(path)
    try:
        require_regular(p)
    except FileNotFoundError:
        raise CheckpointFormatError(
            f"{p}: no such file", "the download is incomplete: fetch the missing shard"
        ) from None
    records, order = _record_table(p)
    if order is not None and order != "little":
        raise CheckpointFormatError(
            f"{p}: saved on a {order}-endian machine; only little-endian is read", _RESAVE
        )
    obj = _load_meta(p, use_meta)
    try:
        if not isinstance(obj, dict):
            raise CheckpointFormatError(
                f"{p}: holds a {type(obj).__name__}, not a state dict of tensors",
                "save model.state_dict() (a flat {name: tensor} dict), or " + _RESAVE,
            )
        torch = _torch()
        offsets: dict[int, int] = {}  # id(storage owner tensor) -> absolute offset, filled below
        if not use_meta or any(
            getattr(t.untyped_storage(), "_checkpoint_offset", None) is None
            for t in obj.values()
            if isinstance(t, torch.Tensor)
        ):
            if use_meta:  # this torch does not record offsets on meta tensors: use the memory map
                del obj
                obj = _load_meta(p, False)
            storages = {}
            for t in obj.values():
                if isinstance(t, torch.Tensor) and t.untyped_storage().nbytes():
                    s = t.untyped_storage()
                    storages[s.data_ptr()] = s.nbytes()
            base = _base_from_pointers(p, storages, records)
            for t in obj.values():
                if isinstance(t, torch.Tensor):
                    s = t.untyped_storage()
                    offsets[id(t)] = s.data_ptr() - base if s.nbytes() else 0
        else:
            for t in obj.values():
                if isinstance(t, torch.Tensor):
                    s = t.untyped_storage()
                    off = int(s._checkpoint_offset)
                    if s.nbytes() and records.get(off) != s.nbytes():
                        raise CheckpointFormatError(
                            f"{p}: a storage of {s.nbytes()} bytes does not match the archive's records",
                            _RESAVE,
                        )
                    offsets[id(t)] = off
        tensors: dict[str, TensorInfo] = {}
        size = p.stat().st_size
        for name, t in obj.items():
            if not isinstance(name, str):
                raise CheckpointFormatError(
                    f"{p}: key {name!r} is not a tensor name", "save a {name: tensor} dict"
                )
            if not isinstance(t, torch.Tensor):
                raise CheckpointFormatError(
                    f"{p}: entry {name!r} is a {type(t).__name__}, not a tensor (a nested checkpoint?)",
                    "give a file holding model.state_dict() itself, or " + _RESAVE,
                )
            tname = str(t.dtype).removeprefix("torch.")
            code = TORCH_TO_CODE.get(tname)
            if code is None:
                raise UnsupportedDtypeError(
                    f"{p}: tensor {name!r} has dtype {tname}, which has no safetensors equivalent",
                    "only float, integer and bool tensors can be compared",
                )
            dtype = get_dtype(code, where=f"{p} tensor {name!r}")
            shape = tuple(int(s) for s in t.shape)
            numel = math.prod(shape)
            if numel > 1 and not t.is_contiguous():
                raise CheckpointFormatError(
                    f"{p}: tensor {name!r} is stored as a non-contiguous view (strides {tuple(t.stride())})",
                    "re-save with contiguous tensors ({k: v.contiguous() for k, v in sd.items()}), or "
                    + _RESAVE,
                )
            start = offsets[id(t)] + int(t.storage_offset()) * dtype.itemsize
            nbytes = numel * dtype.itemsize
            if numel and not (start >= 0 and start + nbytes <= size):
                raise CheckpointFormatError(
                    f"{p}: tensor {name!r} lies outside the file (truncated?)", "re-download it"
                )
            tensors[name] = TensorInfo(name, dtype, shape, p, start if numel else 0, nbytes)
    finally:
        del obj  # drop the shard's map before the next one is opened
    return SafetensorsHeader(p, tensors, {"format": "pt-bin"}, 0, size)


#: ``.bin`` files a training run leaves beside its weights (arbitrary pickles, never weights)
NOT_WEIGHTS = frozenset({"training_args.bin", "optimizer.bin", "scheduler.bin"})


def bin_files(directory: Path) -> list[Path]:
    """The ``.bin`` weight files of a directory without an index (``pytorch_model*.bin``, else any other)."""
    named = sorted(directory.glob("pytorch_model*.bin"))
    return named or sorted(f for f in directory.glob("*.bin") if f.name not in NOT_WEIGHTS)


def find_legacy(directory: Path) -> Path | None:
    """What to open in a directory without safetensors: its ``.bin`` index, the directory, or None."""
    index = directory / BIN_INDEX_NAME
    if index.exists():
        return index
    return directory if bin_files(directory) else None


def open_legacy(path: Path, ref: str) -> Checkpoint:
    """Index a legacy checkpoint: a ``.bin`` file, a ``*.bin.index.json`` or a directory of ``.bin`` files.

    Shards are opened one at a time (see :func:`read_legacy`); an index is validated exactly like a
    safetensors index (every shard inside the directory and present, every tensor where the index says).
    """

    if path.is_dir():
        ck = merge_headers([read_legacy(f) for f in bin_files(path)], path, ref)
    elif path.name.endswith(".index.json"):
        ck = load_index(path, ref, read=read_legacy)
    else:
        ck = merge_headers([read_legacy(path)], path, ref)
    ck.format = "pytorch-bin"
    return ck
