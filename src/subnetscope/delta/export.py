"""``export_delta``: BASE + TARGET → a delta directory, in one streaming pass over both.

Every TARGET tensor is a row of the engine (:mod:`subnetscope.engine`), read chunk by chunk and hashed
in order (an *ordered* row); a tensor the base also has with the same shape and dtype is compared bit for
bit with the base's chunk and only the changed positions and their new values are stored; any other
tensor is stored whole. Any executor runs it; each chunk's blobs go to the worker's spill file as soon as
they are encoded and are laid out in TARGET's storage order at the end (:mod:`.spill`), so memory stays at
a few chunks per worker whatever the model size and the delta's bytes do not depend on the executor. With
``resume`` the spill files and the finished tensors live in the resume directory (:mod:`subnetscope.engine.resume`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__, validate
from ..engine.job import Job, Row
from ..engine.run import Codec, run
from ..fingerprint import of_checkpoint
from ..io.atomic import atomic_dir
from ..io.checkpoint import Checkpoint
from ..io.outputs import DIR, INTO, Output, check_outputs, checkpoint_inputs
from ..io.reader import DEFAULT_CHUNK_ELEMENTS
from ..io.safetensors_header import TensorInfo
from ..plan import natural_key
from ..refs import load_checkpoint
from ..results.schema import SCHEMA_VERSION
from .encode import encode_chunk, encode_whole
from .format import FROM_BASE, MANIFEST_NAME, Manifest, TensorEntry, not_a_delta, write_manifest
from .sidefiles import copy_side_files, side_files
from .spill import Spiller, SpillRef, assemble, spill_files
from .store import DEFAULT_MAX_FILE_BYTES, DataWriter

if TYPE_CHECKING:
    from ..engine.executors.base import Executor

#: zstd level of the blobs: level 1 compresses weight bytes as well as higher levels, and faster
DEFAULT_LEVEL = 1


@dataclass
class ExportResult:
    """What :func:`export_delta` wrote."""

    path: Path
    manifest: Manifest
    delta_bytes: int  #: every file of the delta directory
    target_file_bytes: int  #: TARGET's safetensors files, headers included

    @property
    def ratio(self) -> float:
        """Delta size as a fraction of TARGET's weight files."""
        return self.delta_bytes / self.target_file_bytes if self.target_file_bytes else 0.0

    def to_json(self) -> dict[str, Any]:
        """Versioned JSON summary (``"report": "subnetscope.delta_export"``)."""
        m = self.manifest
        numel = sum(t.numel for t in m.tensors)
        changed = sum(t.changed for t in m.tensors)
        return {
            "schema_version": SCHEMA_VERSION,
            "report": "subnetscope.delta_export",
            "tool_version": __version__,
            "path": str(self.path),
            "base": m.base_ref,
            "target": m.target_ref,
            "tensors": len(m.tensors),
            "encodings": dict(Counter(t.encoding for t in m.tensors)),
            "removed": [r["name"] for r in m.removed],
            "numel": numel,
            "changed": changed,
            "density": changed / numel if numel else 0.0,
            "target_bytes": self.target_file_bytes,
            "delta_bytes": self.delta_bytes,
            "ratio": self.ratio,
        }


def _as_checkpoint(ref: str | os.PathLike[str] | Checkpoint) -> Checkpoint:
    return ref if isinstance(ref, Checkpoint) else load_checkpoint(ref)


def _storage_order(ck: Checkpoint) -> list[TensorInfo]:
    files = {p: i for i, p in enumerate(ck.files)}
    return sorted(ck.tensors.values(), key=lambda t: (files.get(t.path, 0), t.start, natural_key(t.name)))


def _reason(t: TensorInfo, b: TensorInfo | None) -> str | None:
    if b is None:
        return "new"
    if b.shape != t.shape:
        return "shape"
    if b.dtype != t.dtype:
        return "dtype"
    return None


class DeltaEncoder:
    """The export as an engine consumer: per chunk the hash of TARGET's bits and the encoded blobs' refs."""

    def __init__(self, level: int, spiller: Spiller) -> None:
        self.level = level
        self.spiller = spiller
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        return {"level": self.level, "spiller": self.spiller}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def chunk(
        self, row: Row, start: int, count: int, arrays: Sequence[np.ndarray]
    ) -> tuple[list[SpillRef], str]:
        """Encode one chunk (rows are ordered: the running sha256 lives in a thread-local)."""
        if start == 0:
            self._local.h = hashlib.sha256()
        h = self._local.h
        tb = arrays[0]
        h.update(tb.data)
        enc = encode_whole(tb, self.level) if len(arrays) == 1 else encode_chunk(arrays[1], tb, self.level)
        refs = [self.spiller.put(start // row.payload[3], enc)] if enc is not None and count else []
        return refs, h.hexdigest() if start + count >= row.numel else ""

    def merge(self, row: Row, state: Any, partial: Any) -> tuple[list[SpillRef], str]:
        """Collect the chunks' refs; the digest comes with the last one."""
        if state is None:
            return list(partial[0]), partial[1]
        return state[0] + partial[0], partial[1] or state[1]

    def finish(self, row: Row, state: Any) -> tuple[list[SpillRef], str]:
        """The tensor's refs and sha256."""
        if not row.numel:  # an empty tensor: nothing was read
            return [], hashlib.sha256().hexdigest()
        return state


def _encoding(entry: TensorEntry, nchunks: int) -> str:
    if entry.reason is not None:
        return "whole"
    if not entry.chunks:
        return "unchanged"
    if len(entry.chunks) == nchunks and all(c.positions == "all" for c in entry.chunks):
        return "dense"
    return "sparse"


def _codec(spill_dir: Path) -> Codec:
    return Codec(
        lambda res: {"refs": [r.to_json() for r in res[0][0]], "sha256": res[0][1]},
        lambda obj: [([SpillRef.from_json(r) for r in obj["refs"]], str(obj["sha256"]))],
        lambda res: spill_files(res[0][0], spill_dir),
    )


def export_delta(
    base: str | os.PathLike[str] | Checkpoint,
    target: str | os.PathLike[str] | Checkpoint,
    out_dir: str | os.PathLike[str],
    *,
    jobs: int | None = None,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    zstd_level: int = DEFAULT_LEVEL,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    overwrite: bool = False,
    progress: bool = False,
    executor: str | Executor | None = None,
    ray_address: str | None = None,
    resume: str | os.PathLike[str] | None = None,
) -> ExportResult:
    """Write the bit-exact delta that rebuilds ``target`` from ``base`` into the directory ``out_dir``.

    ``base`` and ``target`` are checkpoints (path, hub id, or an opened :class:`Checkpoint`). The
    directory appears atomically, holding ``delta.json``, the data files and TARGET's config and
    tokenizer files. Nothing is read into memory beyond a few chunks of ``chunk_elements`` per worker.
    ``out_dir`` may not be, hold or lie inside an input; with ``overwrite`` an existing ``out_dir`` is
    replaced only when it holds a delta and nothing else. ``executor`` / ``ray_address`` choose where the
    pass runs and ``resume`` keeps finished tensors, as for :func:`subnetscope.compare`; the delta's bytes
    do not depend on either.
    """
    from ..engine.executors.factory import resolve

    validate.chunk_elements(chunk_elements, multiple_of_8=True)
    validate.jobs(jobs)
    validate.int_range(zstd_level, "zstd_level", -7, 22)
    validate.int_range(max_file_bytes, "max_file_bytes")
    ex = resolve(executor, jobs, ray_address)
    bck, tck = _as_checkpoint(base), _as_checkpoint(target)
    out = Path(out_dir)
    check_outputs(
        [*checkpoint_inputs(bck, "BASE"), *checkpoint_inputs(tck, "TARGET")],
        [Output(out, "the delta directory", DIR, overwrite, not_a_delta), Output(resume, "resume", INTO)],
    )
    order = _storage_order(tck)
    chunk = chunk_elements
    rows = []
    for k, t in enumerate(order):
        b = bck.tensors.get(t.name)
        reason = _reason(t, b)
        infos = (t,) if reason is not None or b is None else (t, b)
        rows.append(Row(k, t.name, infos, t.numel, (t, b, reason, chunk), ordered=True))
    removed = [
        {"name": n, "shape": list(bck.tensors[n].shape), "dtype": bck.tensors[n].dtype.code}
        for n in sorted(set(bck.tensors) - set(tck.tensors), key=natural_key)
    ]
    base_fp = of_checkpoint(bck)

    with atomic_dir(out, overwrite, not_a_delta) as tmp:
        spill_dir = Path(resume) / "spill" if resume is not None else tmp / ".spill"  # made on first use
        identity = {"kind": "subnetscope.delta_export", "base": base_fp.to_json(),
                    "target": of_checkpoint(tck).to_json(), "chunk_elements": chunk, "zstd_level": zstd_level,
                    "tool_version": __version__}  # fmt: skip
        spiller = Spiller(spill_dir)
        job = Job(rows, [DeltaEncoder(zstd_level, spiller)], chunk, "delta export", progress)
        try:
            results = run(job, ex, resume, identity, _codec(spill_dir))
        finally:
            spiller.close()
        writer = DataWriter(tmp, max_file_bytes)
        tensors = []
        try:
            for row, res in zip(rows, results):
                t, _b, reason, _c = row.payload
                refs, digest = res[0]
                entry = TensorEntry(t.name, t.shape, t.dtype.code, digest, "whole", 0, reason)
                entry.chunks = assemble(refs, spill_dir, writer)
                entry.changed = sum(c.changed for c in entry.chunks)
                entry.encoding = _encoding(entry, -(-t.numel // chunk))
                tensors.append(entry)
        finally:
            files = writer.close()
        if resume is None:
            shutil.rmtree(spill_dir, ignore_errors=True)
        # what a rebuild reads from the base: known only now (a densely changed tensor is not read)
        patch_fp = of_checkpoint(bck, [t.name for t in tensors if t.encoding in FROM_BASE])
        manifest = Manifest(
            tool_version=__version__,
            base_fingerprint=base_fp,
            patch_fingerprint=patch_fp,
            chunk_elements=chunk,
            zstd_level=zstd_level,
            files=files,
            side_files=copy_side_files(side_files(tck), tmp),
            tensors=tensors,
            removed=removed,
            base_ref=bck.ref or str(bck.root),
            target_ref=tck.ref or str(tck.root),
        )
        write_manifest(manifest, tmp)
        delta_bytes = sum(p.stat().st_size for p in tmp.iterdir() if p.is_file())
    manifest.path = out
    assert (out / MANIFEST_NAME).is_file()
    return ExportResult(out, manifest, delta_bytes, sum(p.stat().st_size for p in tck.files))
