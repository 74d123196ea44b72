"""``apply_delta``: BASE + a delta directory → TARGET as a normal Hugging Face checkpoint directory.

Everything that can be checked is checked before anything is written: the manifest (and its seal), the
size and sha256 of every data and side file, and the base's fingerprint. Then each tensor is rebuilt
chunk by chunk on a pool of threads: runs of unchanged chunks are copied from the base file in the
kernel (``copy_file_range``), sparse chunks are read from the base and patched at their positions,
chunks stored whole are decoded; each piece goes straight to its offset in the output shard. With ``verify``
every rebuilt tensor is hashed and compared with the manifest. The output directory appears atomically,
so a failure at any point leaves nothing under its name.
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__, validate
from ..dtypes import DTYPES
from ..engine import default_jobs
from ..errors import DeltaFormatError, UsageError
from ..fingerprint import of_checkpoint
from ..io.atomic import atomic_dir
from ..io.checkpoint import Checkpoint
from ..io.reader import ChunkReader, FileHandles
from ..refs import load_checkpoint
from ..report.schema import SCHEMA_VERSION
from .encode import decode_values, patch_chunk
from .errors import DeltaVerifyError, check_fingerprint
from .format import FROM_BASE, Manifest, TensorEntry, check_files, load_manifest
from .shards import DEFAULT_MAX_SHARD_BYTES, OutTensor, ShardWriter
from .sidefiles import copy_side_files, side_files
from .store import DataReader


@dataclass
class ApplyResult:
    """What :func:`apply_delta` wrote."""

    path: Path
    tensors: int
    nbytes: int  #: bytes of tensor data written
    files: list[str]  #: weight files (and index) written
    side_files: list[str]
    side_files_from: str  #: ``delta`` or ``base``
    verified: bool
    mismatches: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Versioned JSON summary (``"report": "subnetscope.delta_apply"``)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "report": "subnetscope.delta_apply",
            "tool_version": __version__,
            "path": str(self.path),
            "tensors": self.tensors,
            "nbytes": self.nbytes,
            "files": self.files,
            "side_files": self.side_files,
            "side_files_from": self.side_files_from,
            "verified": self.verified,
        }


def structure_detail(manifest: Manifest, shapes: dict[str, tuple[tuple[int, ...], str]]) -> str:
    """The first few tensors the rebuild needs that ``shapes`` (name → (shape, dtype)) lacks or differs in."""
    problems = []
    for t in manifest.tensors:
        if t.encoding not in FROM_BASE:
            continue
        got = shapes.get(t.name)
        if got is None:
            problems.append(f"{t.name!r} is missing")
        elif got != (t.shape, t.dtype):
            problems.append(f"{t.name!r} is {list(got[0])} {got[1]}, expected {list(t.shape)} {t.dtype}")
    if not problems:
        return ""
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return "; ".join(problems[:3]) + more


def _check_base(manifest: Manifest, base: Checkpoint, delta: str) -> None:
    shapes = {n: (i.shape, i.dtype.code) for n, i in base.tensors.items()}
    detail = structure_detail(manifest, shapes)
    fp = of_checkpoint(base)
    check_fingerprint(manifest.base_fingerprint, fp, delta, f"{base.ref or base.root}", detail)
    if (
        detail
    ):  # the fingerprint matched, yet the tensors the rebuild reads differ: the manifest is inconsistent
        raise DeltaFormatError(
            f"{delta}: the manifest's tensors do not fit its own base: {detail}", "re-export the delta"
        )


def _scratch(local: threading.local, bits: np.dtype, n: int) -> np.ndarray:
    """A writable per-thread buffer of ``n`` elements of ``bits``."""
    bufs: dict[str, np.ndarray] | None = getattr(local, "bufs", None)
    if bufs is None:
        bufs = local.bufs = {}
    buf = bufs.get(bits.str)
    if buf is None:
        buf = bufs[bits.str] = np.empty(n, dtype=bits)
    return buf


def _rebuild(
    e: TensorEntry,
    m: Manifest,
    base: Checkpoint,
    handles: FileHandles,
    reader: DataReader,
    out: ShardWriter,
    local: threading.local,
    verify: bool,
) -> str | None:
    """Write one tensor chunk by chunk; its sha256 when ``verify``.

    Runs of unchanged chunks are copied from the base file in the kernel (``copy_file_range``); a sparse
    chunk is read from the base into a private buffer, patched, and written; a chunk stored whole is
    decoded and written. (Patching through a writable map of the output was measured slower here: every
    first write to a page of a shared file map takes a fault.)
    """
    r: ChunkReader | None = getattr(local, "r", None)
    if r is None:
        r = local.r = ChunkReader(handles, m.chunk_elements * 8)
    bits = DTYPES[e.dtype].bits_dtype
    size = bits.itemsize
    b = base.tensors[e.name] if e.encoding in FROM_BASE else None
    h = hashlib.sha256() if verify else None
    records = {rec.index: rec for rec in e.chunks}
    run_start = run_end = 0  # a run of unchanged chunks, copied in one go

    def flush() -> None:
        nonlocal run_start
        if run_end > run_start:
            assert b is not None
            n = (run_end - run_start) * size
            out.copy_from(e.name, run_start * size, handles.fd(b.path), b.start + run_start * size, n)
        run_start = run_end

    for i in range(m.nchunks(e)):
        s, c = m.chunk_span(e, i)
        if c == 0:
            continue
        rec = records.get(i)
        if rec is None:
            assert b is not None
            if h is None:  # extend the run of copied chunks
                run_end = s + c
                continue
            piece = r.read(b, s, c)
        else:
            flush()
            where = f"{m.path}: tensor {e.name!r} chunk {i}"
            pblob, vblob = reader.blobs(rec)
            values = decode_values(rec.val_codec, vblob, bits, rec.changed, where)
            if rec.positions == "all":
                piece = values
            else:
                assert b is not None
                piece = _scratch(local, bits, m.chunk_elements)[:c]
                np.copyto(piece, r.read(b, s, c))  # reads are read-only views: patch a private copy
                patch_chunk(piece, rec.positions, rec.pos_codec, pblob, values, where)
        if h is not None:
            h.update(np.ascontiguousarray(piece).data)
        out.write(e.name, s * size, np.ascontiguousarray(piece).data)
        run_start = run_end = s + c
    flush()
    return h.hexdigest() if h is not None else None


def apply_delta(
    base: str | os.PathLike[str] | Checkpoint,
    delta_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    verify: bool = False,
    jobs: int | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    overwrite: bool = False,
    progress: bool = False,
) -> ApplyResult:
    """Rebuild TARGET from ``base`` and the delta in ``delta_dir`` into the new directory ``out_dir``.

    Refuses (writing nothing) a damaged delta and a base whose fingerprint is not the delta's. With
    ``verify`` the sha256 of every rebuilt tensor is checked against the manifest
    (:class:`~subnetscope.delta.errors.DeltaVerifyError` if one differs; nothing is written then either).
    """
    from ..progress import progress_bar

    validate.jobs(jobs)
    validate.int_range(max_shard_bytes, "max_shard_bytes")
    m = load_manifest(delta_dir)
    nthreads = jobs or default_jobs()
    check_files(m, digests=True, jobs=nthreads)
    bck = base if isinstance(base, Checkpoint) else load_checkpoint(base)
    out = Path(out_dir)
    base_root = bck.root if bck.root.is_dir() else bck.root.parent
    for p in (base_root, Path(delta_dir)):
        if out.resolve() == p.resolve():
            raise UsageError(
                f"{out}: is an input directory", "write the rebuilt checkpoint to a new directory"
            )
    _check_base(m, bck, str(delta_dir))
    outs = [OutTensor(t.name, t.dtype, t.shape, t.nbytes) for t in m.tensors]
    local = threading.local()
    digests: dict[str, str | None] = {}

    with (
        atomic_dir(out, overwrite=overwrite) as tmp,
        FileHandles() as handles,
        DataReader(Path(delta_dir), m.files) as reader,
    ):
        writer = ShardWriter(tmp, outs, max_shard_bytes)
        try:
            with progress_bar(m.target_bytes, "delta apply", enabled=progress, unit="B") as bar:
                todo = sorted(m.tensors, key=lambda t: -t.nbytes)
                with ThreadPoolExecutor(max_workers=nthreads, thread_name_prefix="subnetscope-delta") as ex:
                    futures = [
                        (t, ex.submit(_rebuild, t, m, bck, handles, reader, writer, local, verify))
                        for t in todo
                    ]
                    try:
                        for t, f in futures:
                            digests[t.name] = f.result()
                            bar.update(t.nbytes)
                    except BaseException:
                        for _t, f in futures:
                            f.cancel()
                        raise
        finally:
            writer.close()
        files = writer.finish()
        if verify:
            bad = [t.name for t in m.tensors if digests[t.name] != t.sha256]
            if bad:
                more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
                raise DeltaVerifyError(
                    f"{delta_dir}: rebuilt tensor {bad[0]!r}{more} does not match the sha256 in the manifest; "
                    "nothing was written",
                    "the base differs from the delta's base in places its fingerprint does not sample, or the "
                    "delta is damaged: use the right base or re-export the delta",
                )
        if m.side_files:
            extra = copy_side_files([Path(delta_dir) / f.name for f in m.side_files], tmp)
            source = "delta"
        else:
            extra = copy_side_files(side_files(bck), tmp)
            source = "base"
    return ApplyResult(out, len(m.tensors), m.target_bytes, files, [f.name for f in extra], source, verify)
