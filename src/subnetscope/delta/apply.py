"""``apply_delta``: BASE + a delta directory → TARGET as a normal Hugging Face checkpoint directory.

Everything that can be checked is checked before anything is written: the manifest (and its seal), the
size and sha256 of every data and side file, and the base's fingerprint. Then each tensor is rebuilt
chunk by chunk on the engine, on any executor (:mod:`.rebuild`): runs of unchanged chunks are copied from
the base file in the kernel (``copy_file_range``), sparse chunks are read from the base and patched at
their positions, chunks stored whole are decoded; each piece goes straight to its offset in the output
shard, laid out before any data. With a resume directory the shards live there until the end. The side files
follow (their names are never those of weight or index files, see ``delta.format``). With ``verify`` the
finished directory is then read back as a checkpoint and every tensor is hashed and compared with the
manifest, so what is checked is what is on disk. The output directory appears atomically, so a failure at
any point leaves nothing under its name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__, validate
from ..engine.executors.base import default_jobs
from ..engine.job import Job, Row
from ..engine.resume import JOURNAL, ResumeMismatchError, journaled, open_resume
from ..engine.run import Codec, run
from ..errors import DeltaFormatError
from ..fingerprint import of_checkpoint
from ..io.atomic import atomic_dir
from ..io.checkpoint import Checkpoint, open_checkpoint
from ..io.outputs import DIR, INTO, Input, Output, check_outputs, checkpoint_inputs, path_inputs
from ..io.reader import ChunkReader, FileHandles
from ..refs import load_checkpoint
from ..report.schema import SCHEMA_VERSION
from .errors import DeltaVerifyError, check_fingerprint
from .format import FROM_BASE, MANIFEST_NAME, Manifest, check_files, load_manifest
from .rebuild import Rebuilder, engine_chunk
from .shards import DEFAULT_MAX_SHARD_BYTES, OutTensor, ShardWriter
from .sidefiles import copy_side_files, side_files

if TYPE_CHECKING:
    from ..engine.executors.base import Executor

#: what ``delta apply`` leaves beside the checkpoint it writes: the files it wrote, so that ``overwrite``
#: replaces only such a directory
OUTPUT_RECORD = ".subnetscope-apply.json"
OUTPUT_FORMAT = "subnetscope.delta_apply_output"
#: where a resumable run keeps its partial output, inside the resume directory
PARTIAL = "output"


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


def _partial(resume: Path, outs: list[OutTensor], max_shard_bytes: int) -> ShardWriter:
    """The shards of a resumable run, in ``resume/output``: continued when laid out there, else new."""
    part = resume / PARTIAL
    if ShardWriter.laid_out(part, outs, max_shard_bytes):
        return ShardWriter(part, outs, max_shard_bytes, create=False)
    if journaled(resume):
        raise ResumeMismatchError(
            f"{part}: the partial output of the finished tensors journaled in {resume} is missing or damaged",
            f"delete {resume} to start over",
        )
    part.mkdir(exist_ok=True)
    return ShardWriter(part, outs, max_shard_bytes)


def _take(resume: Path, names: list[str], tmp: Path) -> None:
    """Move the finished shards from ``resume`` into the output ``tmp``: the journal goes first, so an
    interruption in between leaves a resume directory that starts over, never one whose journal names
    bytes that are gone."""
    (resume / JOURNAL).unlink(missing_ok=True)
    for name in names:
        src = resume / PARTIAL / name
        try:
            os.replace(src, tmp / name)
        except OSError:  # another file system
            shutil.copyfile(src, tmp / name)
            src.unlink()


def not_our_output(path: Path) -> str | None:
    """None when ``path`` is a directory written by :func:`apply_delta` and holds nothing else (what
    ``overwrite`` may replace); otherwise why it is not."""
    try:
        rec = json.loads((path / OUTPUT_RECORD).read_text())
        files = set(rec["files"]) if rec.get("format") == OUTPUT_FORMAT else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        files = None
    if files is None:
        return f"it has no {OUTPUT_RECORD} (delta apply marks the directories it writes)"
    extra = sorted(p.name for p in path.iterdir() if p.name not in files and p.name != OUTPUT_RECORD)
    if extra:
        return f"it also holds {extra[0]!r}, which delta apply did not write"
    return None


def verify_checkpoint(directory: Path, m: Manifest, delta: str, jobs: int) -> None:
    """Read back the checkpoint in ``directory`` as any loader would and check it is the delta's TARGET:
    the same tensor names, shapes and dtypes, and every tensor's sha256 (raises
    :class:`~subnetscope.delta.errors.DeltaVerifyError`)."""
    ck = open_checkpoint(directory)
    want = {t.name: t for t in m.tensors}
    hint = (
        "the base differs from the delta's base in places its fingerprint does not sample, or the "
        "delta is damaged: use the right base or re-export the delta"
    )
    odd = sorted(set(ck.tensors) ^ set(want)) or [
        n for n, t in want.items() if (ck.tensors[n].shape, ck.tensors[n].dtype.code) != (t.shape, t.dtype)
    ]
    if odd:
        raise DeltaVerifyError(
            f"{delta}: the rebuilt checkpoint does not hold the manifest's tensors (e.g. {odd[0]!r}); "
            "nothing was written",
            hint,
        )

    def digest(name: str) -> str:
        info = ck.tensors[name]
        h = hashlib.sha256()
        step = max(1, (8 << 20) // info.dtype.itemsize)
        with FileHandles() as handles:
            r = ChunkReader(handles, step * info.dtype.itemsize)
            for s in range(0, info.numel, step):
                h.update(r.read(info, s, min(step, info.numel - s)).data)
        return h.hexdigest()

    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="subnetscope-verify") as ex:
        got = dict(zip(want, ex.map(digest, want)))
    bad = [n for n, t in want.items() if got[n] != t.sha256]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise DeltaVerifyError(
            f"{delta}: rebuilt tensor {bad[0]!r}{more} does not match the sha256 in the manifest; "
            "nothing was written",
            hint,
        )


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
    executor: str | Executor | None = None,
    ray_address: str | None = None,
    resume: str | os.PathLike[str] | None = None,
) -> ApplyResult:
    """Rebuild TARGET from ``base`` and the delta in ``delta_dir`` into the new directory ``out_dir``.

    Refuses (writing nothing) a damaged delta and a base whose fingerprint is not the delta's. With
    ``verify`` the finished directory (weights, index and side files) is read back as a checkpoint and
    every tensor's sha256 is checked against the manifest (:class:`~subnetscope.delta.errors.DeltaVerifyError`
    if one differs; nothing is written then either). ``out_dir`` may not be, hold or lie inside an input;
    with ``overwrite`` an existing ``out_dir`` is replaced only when an earlier ``apply_delta`` wrote it
    (it keeps the list of its files in ``.subnetscope-apply.json``) and it holds nothing else.

    ``executor`` / ``ray_address`` choose where the rebuild runs (as for :func:`subnetscope.compare`; on
    Ray every node must see the base, the delta and the output directory at the same path, a shared
    filesystem). With ``resume`` the shards are written in ``resume/output`` and finished tensors are
    journaled once their bytes are synced; a resumed run continues them. At the end the shards move into
    ``out_dir`` (which still appears atomically) and the journal is cleared, so the directory is used up:
    running again with it starts over. The output's bytes depend on neither.
    """
    from ..engine.executors.factory import resolve

    validate.jobs(jobs)
    validate.int_range(max_shard_bytes, "max_shard_bytes")
    ex = resolve(executor, jobs, ray_address)
    m = load_manifest(delta_dir)
    nthreads = jobs or default_jobs()
    bck = base if isinstance(base, Checkpoint) else load_checkpoint(base)
    out = Path(out_dir)
    delta_files = [Path(delta_dir) / f for f in (MANIFEST_NAME, *(f.name for f in (*m.files, *m.side_files)))]
    check_outputs(
        [*checkpoint_inputs(bck, "BASE"), Input(Path(delta_dir), "the delta directory"),
         *path_inputs(delta_files, "a file of the delta")],
        [Output(out, "the output directory", DIR, overwrite, not_our_output), Output(resume, "resume", INTO)],
    )  # fmt: skip
    check_files(m, digests=True, jobs=nthreads)
    _check_base(m, bck, str(delta_dir))
    outs = [OutTensor(t.name, t.dtype, t.shape, t.nbytes) for t in m.tensors]
    rows = [
        Row(k, t.name, (), t.numel, (t, bck.tensors.get(t.name) if t.encoding in FROM_BASE else None),
            ordered=True, work=t.nbytes)
        for k, t in enumerate(m.tensors)
    ]  # fmt: skip
    identity = {"kind": "subnetscope.delta_apply", "base": of_checkpoint(bck).to_json(),
                "manifest_sha256": hashlib.sha256((Path(delta_dir) / MANIFEST_NAME).read_bytes()).hexdigest(),
                "max_shard_bytes": max_shard_bytes, "tool_version": __version__}  # fmt: skip
    codec = Codec(lambda res: res[0], lambda obj: [str(obj)], None)

    with atomic_dir(out, overwrite, not_our_output) as tmp:
        if resume is None:
            writer = ShardWriter(tmp, outs, max_shard_bytes)
        else:  # check (or make) the resume directory before its partial output goes into it
            open_resume(resume, identity, {r.name: r.numel for r in rows}, codec.decode).close()
            writer = _partial(Path(resume), outs, max_shard_bytes)
            codec = Codec(codec.encode, codec.decode, lambda res: [writer.directory / res[0]])
        rebuilder = Rebuilder(m, Path(delta_dir), writer)
        job = Job(rows, [rebuilder], engine_chunk(m.chunk_elements), "delta apply", progress)
        try:
            run(job, ex, resume, identity, codec)
        finally:
            rebuilder.close()
            writer.close()
        files = writer.finish(tmp)
        if resume is not None:
            _take(Path(resume), writer.names, tmp)
        if m.side_files:
            extra = copy_side_files([Path(delta_dir) / f.name for f in m.side_files], tmp)
            source = "delta"
        else:
            extra = copy_side_files(side_files(bck), tmp)
            source = "base"
        written = [*files, *(f.name for f in extra)]
        (tmp / OUTPUT_RECORD).write_text(
            json.dumps({"format": OUTPUT_FORMAT, "tool_version": __version__, "files": written}, indent=1)
            + "\n"
        )
        if verify:
            verify_checkpoint(tmp, m, str(delta_dir), nthreads)
    return ApplyResult(out, len(m.tensors), m.target_bytes, files, [f.name for f in extra], source, verify)
