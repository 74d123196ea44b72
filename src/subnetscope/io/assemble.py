"""A checkpoint assembled from its files' headers: :class:`Checkpoint`, merging shards, reading an index.

Shared by :mod:`subnetscope.io.checkpoint` (safetensors) and :mod:`subnetscope.io.legacy` (``torch.save``
shards), which differ only in how one file's header is read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CheckpointFormatError
from . import strict_json
from .safetensors_header import SafetensorsHeader, TensorInfo, read_header, require_regular
from .shard_paths import shard_path


@dataclass
class Checkpoint:
    """All tensors of one checkpoint, by name, with where their bytes are."""

    root: Path  #: the directory (or the file itself for a single-file checkpoint)
    tensors: dict[str, TensorInfo]
    files: list[Path]
    metadata: dict[str, str] = field(default_factory=dict)
    ref: str = ""  #: what the user typed (path or hub id)
    format: str = "safetensors"  #: ``safetensors`` or ``pytorch-bin`` (legacy torch.save shards)

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)

    def __getitem__(self, name: str) -> TensorInfo:
        return self.tensors[name]

    @property
    def numel(self) -> int:
        """Total number of elements over all tensors."""
        return sum(t.numel for t in self.tensors.values())

    @property
    def nbytes(self) -> int:
        """Total bytes of tensor data."""
        return sum(t.nbytes for t in self.tensors.values())

    @property
    def config_path(self) -> Path | None:
        """``config.json`` beside the weights, if any."""
        d = self.root if self.root.is_dir() else self.root.parent
        c = d / "config.json"
        return c if c.is_file() else None

    def config(self) -> dict[str, object]:
        """The parsed ``config.json`` (empty if there is none or it is unreadable)."""
        c = self.config_path
        if c is None:
            return {}
        try:
            obj = strict_json.loads(c.read_bytes())
        except (OSError, ValueError):
            return {}
        return obj if isinstance(obj, dict) else {}


def merge_headers(headers: list[SafetensorsHeader], root: Path, ref: str) -> Checkpoint:
    """One :class:`Checkpoint` from the headers of its files; a tensor stored twice is an error."""
    tensors: dict[str, TensorInfo] = {}
    for h in headers:
        for name, info in h.tensors.items():
            if name in tensors:
                raise CheckpointFormatError(
                    f"{root}: tensor {name!r} is stored twice ({tensors[name].path.name} and {h.path.name})",
                    "remove the stray shard or fix the index",
                )
            tensors[name] = info
    meta: dict[str, str] = {}
    for h in headers:
        meta.update(h.metadata)
    return Checkpoint(root, tensors, [h.path for h in headers], meta, ref)


def load_index(index: Path, ref: str, read: Callable[[Path], SafetensorsHeader] = read_header) -> Checkpoint:
    """The checkpoint an index file (``weight_map``) describes, each shard read with ``read``.

    The index and the shards must agree: every shard named exists and holds the tensors mapped to it.
    """
    root = index.parent
    try:
        require_regular(index, "checkpoint index")
        obj = strict_json.loads(index.read_bytes())
    except OSError as e:
        raise CheckpointFormatError(
            f"{index}: cannot read ({e.strerror})", "check the path and permissions"
        ) from None
    except ValueError as e:
        raise CheckpointFormatError(
            f"{index}: not valid JSON ({e})", "re-download or regenerate the index"
        ) from None
    wm = obj.get("weight_map") if isinstance(obj, dict) else None
    if not isinstance(wm, dict) or not wm:
        raise CheckpointFormatError(f"{index}: has no weight_map", "re-download or regenerate the index")
    shard_names: list[str] = []
    for tensor, shard in wm.items():
        if not isinstance(shard, str):
            raise CheckpointFormatError(
                f"{index}: tensor {tensor!r} maps to {shard!r}, not a file name", "fix the index"
            )
        if shard not in shard_names:
            shard_names.append(shard)
    headers: list[SafetensorsHeader] = []
    resolved: dict[str, Path] = {}
    for shard in shard_names:
        sp = resolved[shard] = shard_path(index, shard)
        if not sp.exists():
            raise CheckpointFormatError(
                f"{index}: names shard {shard!r}, which does not exist in {root}",
                "the download is incomplete: fetch the missing shard or fix the index",
            )
        headers.append(read(sp))
    ck = merge_headers(headers, root, ref)
    for tensor, shard in wm.items():
        info = ck.tensors.get(tensor)
        if info is None:
            raise CheckpointFormatError(
                f"{index}: names tensor {tensor!r} in {shard}, but that shard does not contain it",
                "the index and the shards disagree: re-download the checkpoint or regenerate the index",
            )
        if info.path != resolved[shard]:
            raise CheckpointFormatError(
                f"{index}: puts tensor {tensor!r} in {shard}, but it is in {info.path.name}",
                "regenerate the index",
            )
    extra = sorted(set(ck.tensors) - set(wm))
    if extra:
        raise CheckpointFormatError(
            f"{index}: shards contain {len(extra)} tensor(s) the index does not list, e.g. {extra[0]!r}",
            "regenerate the index",
        )
    return ck
