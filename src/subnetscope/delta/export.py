"""``export_delta``: BASE + TARGET → a delta directory, in one streaming pass over both.

Every TARGET tensor is read chunk by chunk (raw bits, through ``io.reader.ChunkReader``) and hashed;
a tensor the base also has with the same shape and dtype is compared bit for bit with the base's chunk
and only the changed positions and their new values are stored; any other tensor is stored whole.
Tensors run on a pool of threads (largest first); each chunk's blobs are appended to the data file as
soon as they are encoded, so memory stays at a few chunks per thread whatever the model size.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__, validate
from ..engine import default_jobs
from ..fingerprint import of_checkpoint
from ..io.atomic import atomic_dir
from ..io.checkpoint import Checkpoint
from ..io.outputs import DIR, Output, check_outputs, checkpoint_inputs
from ..io.reader import DEFAULT_CHUNK_ELEMENTS, ChunkReader, FileHandles
from ..io.safetensors_header import TensorInfo
from ..plan import natural_key
from ..progress import progress_bar
from ..refs import load_checkpoint
from ..report.schema import SCHEMA_VERSION
from .encode import EncodedChunk, encode_chunk, encode_whole
from .format import FROM_BASE, MANIFEST_NAME, Manifest, TensorEntry, not_a_delta, write_manifest
from .sidefiles import copy_side_files, side_files
from .store import DEFAULT_MAX_FILE_BYTES, DataWriter

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
) -> ExportResult:
    """Write the bit-exact delta that rebuilds ``target`` from ``base`` into the directory ``out_dir``.

    ``base`` and ``target`` are checkpoints (path, hub id, or an opened :class:`Checkpoint`). The
    directory appears atomically, holding ``delta.json``, the data files and TARGET's config and
    tokenizer files. Nothing is read into memory beyond a few chunks of ``chunk_elements`` per thread.
    ``out_dir`` may not be, hold or lie inside an input; with ``overwrite`` an existing ``out_dir`` is
    replaced only when it holds a delta and nothing else.
    """
    validate.chunk_elements(chunk_elements, multiple_of_8=True)
    validate.jobs(jobs)
    validate.int_range(zstd_level, "zstd_level", -7, 22)
    validate.int_range(max_file_bytes, "max_file_bytes")
    bck, tck = _as_checkpoint(base), _as_checkpoint(target)
    out = Path(out_dir)
    check_outputs(
        [*checkpoint_inputs(bck, "BASE"), *checkpoint_inputs(tck, "TARGET")],
        [Output(out, "the delta directory", DIR, overwrite, not_a_delta)],
    )
    order = _storage_order(tck)
    plan = [(t, bck.tensors.get(t.name), _reason(t, bck.tensors.get(t.name))) for t in order]
    removed = [
        {"name": n, "shape": list(bck.tensors[n].shape), "dtype": bck.tensors[n].dtype.code}
        for n in sorted(set(bck.tensors) - set(tck.tensors), key=natural_key)
    ]
    base_fp = of_checkpoint(bck)
    nthreads = jobs or default_jobs()
    chunk = chunk_elements
    local = threading.local()
    bar_lock = threading.Lock()
    total = sum(t.nbytes + (t.nbytes if r is None else 0) for t, _b, r in plan)

    with atomic_dir(out, overwrite, not_a_delta) as tmp, FileHandles() as handles:
        writer = DataWriter(tmp, max_file_bytes)
        try:
            with progress_bar(total, "delta export", enabled=progress, unit="B") as bar:

                def readers() -> tuple[ChunkReader, ChunkReader]:
                    r = getattr(local, "r", None)
                    if r is None:
                        r = local.r = (ChunkReader(handles, chunk * 8), ChunkReader(handles, chunk * 8))
                    return r

                def work(t: TensorInfo, b: TensorInfo | None, reason: str | None) -> TensorEntry:
                    rt, rb = readers()
                    h = hashlib.sha256()
                    entry = TensorEntry(t.name, t.shape, t.dtype.code, "", "whole", 0, reason)
                    n = t.numel
                    for i, s in enumerate(range(0, n, chunk)):
                        c = min(chunk, n - s)
                        tb = rt.read(t, s, c)
                        h.update(tb.data)
                        enc: EncodedChunk | None
                        if b is None or reason is not None:
                            enc = encode_whole(tb, zstd_level)
                        else:
                            enc = encode_chunk(rb.read(b, s, c), tb, zstd_level)
                        if enc is not None:
                            entry.chunks.append(writer.append(i, enc))
                            entry.changed += enc.changed
                        with bar_lock:
                            bar.update(c * t.dtype.itemsize * (1 if reason is not None else 2))
                    entry.sha256 = h.hexdigest()
                    if reason is None:
                        nchunks = -(-n // chunk)
                        if not entry.chunks:
                            entry.encoding = "unchanged"
                        elif len(entry.chunks) == nchunks and all(c.positions == "all" for c in entry.chunks):
                            entry.encoding = "dense"
                        else:
                            entry.encoding = "sparse"
                    return entry

                by_size = sorted(plan, key=lambda p: -p[0].nbytes)
                with ThreadPoolExecutor(max_workers=nthreads, thread_name_prefix="subnetscope-delta") as ex:
                    futures = {p[0].name: ex.submit(work, *p) for p in by_size}
                    try:
                        entries = {name: f.result() for name, f in futures.items()}
                    except BaseException:
                        for f in futures.values():
                            f.cancel()
                        raise
        finally:
            files = writer.close()
        tensors = [entries[t.name] for t, _b, _r in plan]
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
