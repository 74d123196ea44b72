"""The overlap pass on the engine: two masks (and the base), or a base and two finetunes, chunk by chunk.

Masks mode: each row is one tensor's packed bits in both mask files (inputs marked ``packed``) and, with a
base, its weights; rows are *ordered* (one worker reads a tensor's bits front to back) so that every
tensor's bits are checked against the sha256 its mask records as they are read. Deltas mode: each row is a
tensor of the base and both finetunes; chunks are independent. Either way the consumer returns an
:class:`~subnetscope.results.overlap.OverlapCounts` per chunk (popcounts of AND, magnitude bins, delta
sums), which add up; results are the same on every executor.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__, validate
from .. import magnitude_bins as mb
from ..dtypes import DType, decode
from ..engine.job import Job, Row
from ..engine.run import Codec, run
from ..errors import MaskFormatError, MaskMismatchError, MismatchError
from ..fingerprint import of_checkpoint
from ..io.checkpoint import Checkpoint
from ..io.safetensors_header import TensorInfo, read_header
from ..kernels.popcount import clear_tail, popcount
from ..maskfile import MaskFile
from ..naming import Namer
from ..results.overlap import DeltaSums, OverlapCounts, OverlapReport, TensorOverlap
from ..results.schema import Finding

if TYPE_CHECKING:
    from ..engine.executors.base import Executor

#: elements per chunk (a multiple of 8 so chunks start on packed-byte boundaries)
DEFAULT_CHUNK_ELEMENTS = 1 << 20

MaskLike = str | os.PathLike[str] | MaskFile
CheckpointLike = str | os.PathLike[str] | Checkpoint


def _open_mask(m: MaskLike) -> MaskFile:
    return m if isinstance(m, MaskFile) else MaskFile(m)


def _ck(x: CheckpointLike) -> Checkpoint:
    from ..refs import load_checkpoint

    return x if isinstance(x, Checkpoint) else load_checkpoint(x)


def _describe_mask(m: MaskFile) -> dict[str, Any]:
    return {
        "ref": str(m.path),
        "tolerance": m.tolerance,
        "semantics": m.semantics,
        "base_ref": m.metadata.get("base_ref"),
        "target_ref": m.metadata.get("target_ref"),
        "numel": m.numel,
        "tensors": len(m),
    }


def _describe_ck(ck: Checkpoint) -> dict[str, Any]:
    return {"ref": ck.ref, "path": str(ck.root), "tensors": len(ck), "numel": ck.numel}


def _model_type(ck: Checkpoint | None) -> str | None:
    if ck is None:
        return None
    mt = ck.config().get("model_type")
    return mt if isinstance(mt, str) else None


def _chunk(chunk_elements: int | None) -> int:
    c = chunk_elements or DEFAULT_CHUNK_ELEMENTS
    return max(8, c - c % 8)


_CODEC = Codec(lambda res: res[0].to_state(), lambda obj: [OverlapCounts.from_state(obj)])


def _run(rows: list[Row], consumer: Any, chunk: int, progress: bool, executor: str | Executor | None,
         jobs: int | None, ray_address: str | None, resume: str | os.PathLike[str] | None,
         identity: dict[str, Any]) -> list[OverlapCounts]:  # fmt: skip
    from ..engine.executors.factory import resolve

    ex = resolve(executor, jobs, ray_address)
    job = Job(rows, [consumer], chunk, "overlap", progress)
    return [r[0] for r in run(job, ex, resume, {**identity, "tool_version": __version__}, _CODEC)]


class MaskOverlap:
    """Consumer of masks mode: per chunk the counts of both masks' bits (and their magnitude bins when the
    row has the base); checks every tensor's bits against their recorded sha256 as they are read."""

    def __init__(self, digests: tuple[dict[str, str], dict[str, str]], paths: tuple[str, str]) -> None:
        self.digests = digests
        self.paths = paths
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        return {"digests": self.digests, "paths": self.paths}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def chunk(self, row: Row, start: int, count: int, arrays: Sequence[np.ndarray]) -> OverlapCounts:
        """Counts of one chunk (rows are ordered: the running sha256 of each mask lives in a thread-local)."""
        if start == 0:
            self._local.h = (hashlib.sha256(), hashlib.sha256())
        hashes = self._local.h
        nbytes = (count + 7) // 8
        packed = []
        for k in (0, 1):
            raw = arrays[k]
            if raw.shape[0] != nbytes:
                raise MaskFormatError(
                    f"{self.paths[k]}: truncated inside tensor {row.name!r}", "regenerate the mask"
                )
            hashes[k].update(raw)
            packed.append(clear_tail(raw, count))
        p1, p2 = packed
        c = OverlapCounts(numel=count, changed1=popcount(p1), changed2=popcount(p2),
                          intersection=popcount(p1 & p2))  # fmt: skip
        if len(row.infos) > 2:
            c.bins = mb.empty_hist()
            _bin_chunk(c.bins, row.infos[2], start, count, p1, p2, arrays[2])
        if start + count >= row.numel:
            for k in (0, 1):
                if hashes[k].hexdigest() != self.digests[k].get(row.name):
                    raise MaskFormatError(
                        f"{self.paths[k]}: the bits of tensor {row.name!r} do not match their recorded "
                        "sha256 (edited or damaged)",
                        "regenerate the mask with `subnetscope mask`",
                    )
        return c

    def merge(self, row: Row, state: OverlapCounts | None, partial: OverlapCounts) -> OverlapCounts:
        """Add counts."""
        if state is None:
            return partial
        state.add(partial)
        return state

    def finish(self, row: Row, state: OverlapCounts) -> OverlapCounts:
        """The tensor's counts."""
        return state


def overlap(
    mask1: MaskLike,
    mask2: MaskLike,
    *,
    base: CheckpointLike | None = None,
    jobs: int | None = None,
    chunk_elements: int | None = None,
    progress: bool = False,
    executor: str | Executor | None = None,
    ray_address: str | None = None,
    resume: str | os.PathLike[str] | None = None,
) -> OverlapReport:
    """Overlap of the subnetworks recorded in two mask files.

    Args:
        mask1, mask2: mask files (``subnetscope mask`` / ``compare --mask-out``) made over the same base;
            masks over different bases raise :class:`~subnetscope.errors.MaskMismatchError`.
        base: the base checkpoint; when given, it must be the masks' base (checked by fingerprint), and the
            report adds the magnitude-matched baseline (bins of the base weights' exponent).
        jobs: workers over tensors (default: CPUs, at most 8); the result does not depend on it.
        chunk_elements: elements per read (default 1 Mi).
        progress: progress bar on stderr (only on a terminal).
        executor, ray_address: where the pass runs, as for :func:`subnetscope.compare` (default threads).
        resume: a directory keeping finished tensors (:mod:`subnetscope.engine.resume`).
    """
    validate.jobs(jobs)
    chunk_elements = validate.chunk_elements(chunk_elements)
    m1, m2 = _open_mask(mask1), _open_mask(mask2)
    m1.check_compatible(m2)
    findings: list[Finding] = []
    if m1.tolerance != m2.tolerance or m1.semantics != m2.semantics:
        findings.append(Finding(
            "settings_differ", "",
            f"the masks were made with different settings: tol {m1.tolerance:g} ({m1.semantics}) vs "
            f"tol {m2.tolerance:g} ({m2.semantics})",
        ))  # fmt: skip
    names = list(m1.shapes)
    if set(names) != set(m2.shapes) or any(m1.shapes[n] != m2.shapes[n] for n in names):
        raise MaskMismatchError(
            f"{m1.path} and {m2.path} cover different tensors or shapes",
            "regenerate the masks against one base",
        )
    bck = _ck(base) if base is not None else None
    if bck is not None:
        _check_mask_base(m1, bck)
        _check_mask_base(m2, bck)
    namer = Namer(_model_type(bck))
    i1, i2 = read_header(m1.path).tensors, read_header(m2.path).tensors
    rows = []
    for k, name in enumerate(names):
        infos = (i1[name], i2[name]) + ((bck.tensors[name],) if bck is not None else ())
        rows.append(Row(k, name, infos, math.prod(m1.shapes[name]), ordered=True, packed=(True, True)))
    consumer = MaskOverlap((m1.digests, m2.digests), (str(m1.path), str(m2.path)))
    identity = {"mode": "masks", "digests": [m1.digests, m2.digests],
                "base": of_checkpoint(bck).to_json() if bck is not None else None}  # fmt: skip
    counts = _run(
        rows, consumer, _chunk(chunk_elements), progress, executor, jobs, ray_address, resume, identity
    )
    tensors = []
    for name, c in zip(names, counts):
        layer, kind = namer.classify(name)
        tensors.append(TensorOverlap(name, list(m1.shapes[name]), layer, kind, c))
    return OverlapReport(
        "masks",
        [_describe_mask(m1), _describe_mask(m2)],
        _describe_ck(bck) if bck is not None else None,
        tensors,
        findings,
    )


def _check_mask_base(m: MaskFile, base: Checkpoint) -> None:
    missing = [n for n in m.shapes if n not in base.tensors]
    if missing:
        raise MaskMismatchError(
            f"{m.path}: mask was made for another model: {len(missing)} of its tensors are not in {base.ref} "
            f"(e.g. {missing[0]!r})",
            "give the base the masks were computed against",
        )
    m.check_base(of_checkpoint(base, list(m.shapes)), what=str(base.ref))


def _bin_chunk(
    hist: np.ndarray, binfo: TensorInfo, start: int, count: int, p1: np.ndarray, p2: np.ndarray,
    base_bits: np.ndarray,
) -> None:  # fmt: skip
    """Bin elements ``[start, start + count)`` (packed updated bits ``p1``/``p2``) by the base weights
    (``base_bits``: the base's elements of that range, fewer where the target added rows)."""
    nb = max(0, min(count, binfo.numel - start))
    if nb:
        if binfo.dtype.is_float:
            local = mb.local_hist(binfo.dtype)
            mb.count_local(base_bits[:nb], binfo.dtype, p1, p2, local)
            mb.add_local(hist, local, binfo.dtype)
        else:
            mb.add_special(hist, mb.NONFLOAT, p1, p2, nb)
    if nb < count:  # rows the target added: no base value
        m1 = np.unpackbits(p1, count=count, bitorder="little")[nb:]
        m2 = np.unpackbits(p2, count=count, bitorder="little")[nb:]
        mb.add_special(
            hist, mb.NEW, np.packbits(m1, bitorder="little"), np.packbits(m2, bitorder="little"), count - nb
        )


# ---------------------------------------------------------------------------------------------------------
# deltas mode


def changed_packed(a: np.ndarray, b: np.ndarray, ad: DType, bd: DType, tol: float) -> tuple[np.ndarray, int]:
    """Packed bits (little order) of ``|b - a| > tol`` (exact semantics, as ``compare``) and their count."""
    from ..kernels.compare import count_chunk

    n = a.shape[0]
    if ad == bd and ad.is_float:
        thr = np.array([float(tol)], dtype=np.float64)
        out = np.zeros(4, dtype=np.int64)
        packed = np.empty((n + 7) // 8, dtype=np.uint8)
        count_chunk(a, b, ad, thr, False, out, packed)
        return packed, n - int(out[0])
    if ad == bd:
        ch = a != b
    else:
        av, bv = decode(a, ad), decode(b, bd)
        with np.errstate(invalid="ignore"):
            ch = ~((av == bv) | (np.isnan(av) & np.isnan(bv)) | (np.abs(bv - av) <= tol))
    return np.packbits(ch, bitorder="little"), int(np.count_nonzero(ch))


def _delta_sums(
    a: np.ndarray, b1: np.ndarray, b2: np.ndarray, dts: tuple[DType, DType, DType], shared: np.ndarray
) -> DeltaSums:
    av, v1, v2 = decode(a, dts[0]), decode(b1, dts[1]), decode(b2, dts[2])
    with np.errstate(invalid="ignore", over="ignore"):
        d1 = v1 - av
        d2 = v2 - av
    fin = np.isfinite(d1) & np.isfinite(d2)
    s = DeltaSums()
    s.nonfinite = int(a.shape[0] - np.count_nonzero(fin))
    if s.nonfinite:
        d1 = np.where(fin, d1, 0.0)
        d2 = np.where(fin, d2, 0.0)
    sh = shared & fin
    x, y = d1[sh], d2[sh]
    s.shared = int(x.size)
    s.sign_agree = int(np.count_nonzero(np.sign(x) == np.sign(y)))
    s.dot = float(np.dot(x, y))
    s.sq1 = float(np.dot(x, x))
    s.sq2 = float(np.dot(y, y))
    s.dot_full = float(np.dot(d1, d2))
    s.sq1_full = float(np.dot(d1, d1))
    s.sq2_full = float(np.dot(d2, d2))
    return s


class DeltaOverlap(MaskOverlap):
    """Consumer of deltas mode: per chunk the updated sets of both finetunes, their overlap, magnitude bins
    and delta sums."""

    def __init__(self, tolerance: float) -> None:
        self.tolerance = tolerance

    def __getstate__(self) -> dict[str, Any]:
        return {"tolerance": self.tolerance}

    def chunk(self, row: Row, start: int, count: int, arrays: Sequence[np.ndarray]) -> OverlapCounts:
        """Counts of one chunk."""
        a, b1, b2 = arrays
        bi, ti1, ti2 = row.infos
        m1, k1 = changed_packed(a, b1, bi.dtype, ti1.dtype, self.tolerance)
        m2, k2 = changed_packed(a, b2, bi.dtype, ti2.dtype, self.tolerance)
        both = m1 & m2
        c = OverlapCounts(numel=count, changed1=k1, changed2=k2, intersection=popcount(both),
                          bins=mb.empty_hist())  # fmt: skip
        assert c.bins is not None
        _bin_chunk(c.bins, bi, start, count, m1, m2, a)
        shared = np.unpackbits(both, count=count, bitorder="little").view(bool)
        c.deltas = _delta_sums(a, b1, b2, (bi.dtype, ti1.dtype, ti2.dtype), shared)
        return c


def overlap_deltas(
    base: CheckpointLike,
    target1: CheckpointLike,
    target2: CheckpointLike,
    *,
    tolerance: float = 1e-5,
    jobs: int | None = None,
    chunk_elements: int | None = None,
    progress: bool = False,
    executor: str | Executor | None = None,
    ray_address: str | None = None,
    resume: str | os.PathLike[str] | None = None,
) -> OverlapReport:
    """Overlap of the updates ``target1 - base`` and ``target2 - base``, computed in one 3-way pass.

    The updated sets are ``|Δ| > tolerance`` (exact semantics, as ``compare``); the report has everything
    :func:`overlap` reports with a base (magnitude-matched baseline included), plus per group the sign
    agreement and the cosine of the two updates on the coordinates both updated (``deltas.cosine``) and of
    the whole update vectors (``deltas.cosine_full``). Tensors that are not the same shape in all three
    checkpoints are skipped, each with a finding. ``executor``, ``ray_address`` and ``resume`` as for
    :func:`overlap`.
    """
    from ..plan import make_plan

    tolerance = validate.tolerance(tolerance)
    validate.jobs(jobs)
    chunk_elements = validate.chunk_elements(chunk_elements)
    b, t1, t2 = _ck(base), _ck(target1), _ck(target2)
    p1, p2 = make_plan(b, t1), make_plan(b, t2)
    findings = [Finding(f.kind, f.tensor, f"{t1.ref}: {f.detail}") for f in p1.findings]
    findings += [Finding(f.kind, f.tensor, f"{t2.ref}: {f.detail}") for f in p2.findings]
    pairs2 = {p.name: p for p in p2.pairs}
    todo = []
    for pa in p1.pairs:
        pb = pairs2.get(pa.name)
        if pb is None:
            continue
        if pa.base.shape != pa.target.shape or pb.base.shape != pb.target.shape:
            findings.append(
                Finding("skipped", pa.name, "shape differs between the checkpoints: not compared")
            )
            continue
        todo.append((pa, pb))
    if not todo:
        raise MismatchError(
            f"{t1.ref} and {t2.ref} share no tensor of the same shape with {b.ref}",
            "give two finetunes of the same base model",
        )
    rows = [Row(k, pa.name, (pa.base, pa.target, pb.target), pa.numel) for k, (pa, pb) in enumerate(todo)]
    identity = {"mode": "deltas", "inputs": [of_checkpoint(c).to_json() for c in (b, t1, t2)],
                "tolerance": float(tolerance)}  # fmt: skip
    counts = _run(rows, DeltaOverlap(tolerance), _chunk(chunk_elements), progress, executor, jobs, ray_address,
                  resume, identity)  # fmt: skip
    tensors = [
        TensorOverlap(pa.name, list(pa.target.shape), pa.layer, pa.kind, c)
        for (pa, _), c in zip(todo, counts)
    ]
    inputs = [
        {"ref": t.ref, "path": str(t.root), "tolerance": float(tolerance), "semantics": "exact"}
        for t in (t1, t2)
    ]
    return OverlapReport("deltas", inputs, _describe_ck(b), tensors, findings)
