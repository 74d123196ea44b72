"""``patch_state_dict``: apply a delta in place onto tensors already loaded (what an inference engine calls).

The state dict must hold every TARGET tensor under its name, with TARGET's shape and dtype, contiguous,
on any device. Before a single element is written: the manifest and the data files are checked (size and
sha256), every tensor's name, shape, dtype and layout, and the fingerprint of the tensors the delta
patches rather than replaces (those must still hold the base's values). So a wrong model, a delta
already applied, or a damaged delta leave the state dict untouched. Chunks are decoded on a few threads
and written on the calling thread (``index_put_`` / ``copy_`` on the tensor's own device).
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterator, MutableMapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..dtypes import DTYPES, TORCH_TO_CODE
from ..engine.executors.base import default_jobs
from ..errors import MismatchError
from ..fingerprint import compute
from .encode import decode_positions, decode_values
from .errors import DeltaVerifyError, check_fingerprint
from .format import FROM_BASE, ChunkRecord, Manifest, TensorEntry, check_files, load_manifest
from .store import DataReader

_SIGNED = {1: "int8", 2: "int16", 4: "int32", 8: "int64"}


@dataclass
class PatchResult:
    """What :func:`patch_state_dict` changed."""

    tensors_written: list[str]  #: tensors with at least one element written
    elements_written: int
    removed: list[str] = field(default_factory=list)  #: tensors the target no longer has (left untouched)
    verified: bool = False


def _code(t: Any) -> str:
    return TORCH_TO_CODE.get(str(t.dtype).removeprefix("torch."), str(t.dtype))


def _bits_view(t: Any) -> Any:
    """The flat tensor viewed as signed integers of its width (shares storage)."""
    import torch

    return t.view(-1).view(getattr(torch, _SIGNED[t.element_size()]))


def _host_bits(t: Any, start: int, count: int) -> np.ndarray:
    arr: np.ndarray = _bits_view(t)[start : start + count].cpu().numpy()
    return arr.view(f"<u{t.element_size()}")


def _check_tensors(m: Manifest, sd: MutableMapping[str, Any], delta: str) -> None:
    problems = []
    for e in m.tensors:
        t = sd.get(e.name)
        if t is None:
            problems.append(f"{e.name!r} is missing")
        elif tuple(t.shape) != e.shape or _code(t) != e.dtype:
            problems.append(
                f"{e.name!r} is {list(t.shape)} {_code(t)}, the target has {list(e.shape)} {e.dtype}"
            )
        elif not t.is_contiguous():
            problems.append(f"{e.name!r} is not contiguous")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise MismatchError(
            f"{delta}: the state dict does not fit the delta's target: " + "; ".join(problems[:3]) + more,
            "load the model from the target's config (or the base's when shapes did not change) before patching",
        )


def _decoded(
    m: Manifest, reader: DataReader, work: list[tuple[TensorEntry, ChunkRecord]], jobs: int
) -> Iterator[tuple[TensorEntry, ChunkRecord, np.ndarray | None, np.ndarray]]:
    """Decode chunk records on ``jobs`` threads, yielding them in order, a bounded number ahead."""

    def one(
        e: TensorEntry, rec: ChunkRecord
    ) -> tuple[TensorEntry, ChunkRecord, np.ndarray | None, np.ndarray]:
        _, count = m.chunk_span(e, rec.index)
        where = f"{m.path}: tensor {e.name!r} chunk {rec.index}"
        pblob, vblob = reader.blobs(rec)
        values = decode_values(rec.val_codec, vblob, DTYPES[e.dtype].bits_dtype, rec.changed, where)
        pos = decode_positions(rec.positions, rec.pos_codec, pblob, count, rec.changed, where)
        return e, rec, pos, values

    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="subnetscope-patch") as ex:
        pending: deque[Future[Any]] = deque()
        it = iter(work)
        for item in it:
            pending.append(ex.submit(one, *item))
            if len(pending) >= 2 * jobs:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def patch_state_dict(
    state_dict: MutableMapping[str, Any],
    delta_dir: str | os.PathLike[str],
    *,
    verify: bool = False,
    jobs: int | None = None,
) -> PatchResult:
    """Patch the torch tensors of ``state_dict`` (holding the base's weights) in place into the target's.

    Refuses, before writing anything, a delta that is damaged (:class:`~subnetscope.errors.DeltaFormatError`),
    a state dict that lacks a target tensor or holds it with another shape, dtype or layout
    (:class:`~subnetscope.errors.MismatchError`), and one whose patched tensors do not hold the base's
    values (:class:`~subnetscope.delta.errors.DeltaBaseMismatchError`, e.g. when the delta was already
    applied). With ``verify``, every target tensor is hashed afterwards and compared with the manifest
    (:class:`~subnetscope.delta.errors.DeltaVerifyError`; the tensors are then already written).
    """
    import torch

    m = load_manifest(delta_dir)
    nthreads = jobs or default_jobs()
    check_files(m, digests=True, jobs=nthreads)
    delta = str(delta_dir)
    _check_tensors(m, state_dict, delta)
    relevant = [e for e in m.tensors if e.encoding in FROM_BASE]

    def reader_of(t: Any) -> Callable[[int, int], np.ndarray]:
        return lambda s, c: _host_bits(t, s, c)

    fp = compute((e.name, e.shape, e.dtype, reader_of(state_dict[e.name])) for e in relevant)
    check_fingerprint(
        m.patch_fingerprint, fp, delta, "the state dict's tensors",
        hint="load the base's weights before patching; a delta applies once (these tensors may already be patched)",
    )  # fmt: skip
    work = [(e, rec) for e in m.tensors for rec in e.chunks]
    written: dict[str, None] = {}
    elements = 0
    with torch.no_grad(), DataReader(Path(delta_dir), m.files) as reader:
        for e, rec, pos, values in _decoded(m, reader, work, nthreads):
            flat = _bits_view(state_dict[e.name])
            start, count = m.chunk_span(e, rec.index)
            vals = torch.from_numpy(values.view(f"<i{values.dtype.itemsize}").copy()).to(flat.device)
            piece = flat[start : start + count]
            if pos is None:
                piece.copy_(vals)
            else:
                piece[torch.from_numpy(pos).to(flat.device)] = vals
            written[e.name] = None
            elements += rec.changed
    if verify:
        bad = []
        for e in m.tensors:
            h = hashlib.sha256()
            t = state_dict[e.name]
            step = m.chunk_elements
            for s in range(0, e.numel, step):
                h.update(_host_bits(t, s, min(step, e.numel - s)).data)
            if h.hexdigest() != e.sha256:
                bad.append(e.name)
        if bad:
            raise DeltaVerifyError(
                f"{delta}: patched tensor {bad[0]!r} does not match the sha256 in the manifest"
                + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""),
                "the state dict differed from the delta's base in places its fingerprint does not sample",
            )
    return PatchResult(list(written), elements, [r["name"] for r in m.removed], verify)
