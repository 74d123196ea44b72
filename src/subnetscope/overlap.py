"""Overlap of two subnetworks (two sets of updated parameters) against random baselines (paper §5, App. E).

For updated sets I1 and I2 over the same n parameters:

- ``o1 = |I1 ∩ I2| / |I1|``, ``o2 = |I1 ∩ I2| / |I2|``, Jaccard ``|I1 ∩ I2| / |I1 ∪ I2|``;
- uniform baselines ``o1_random = |I2| / n``, ``o2_random = |I1| / n`` (App. E), and ``z``: how many standard
  deviations the observed intersection lies above that of two random sets of the same sizes (the
  intersection is then hypergeometric: mean ``|I1| |I2| / n``);
- with the base weights, the *magnitude-matched* baseline (:mod:`subnetscope.magnitude_bins`): the same
  quantities if each run's updated set were drawn at random within each bin of |w|, keeping its count;
- from deltas (:func:`overlap_deltas`), also the sign agreement and the cosine of the two updates on the
  shared coordinates, and the cosine of the whole update vectors (float64 accumulation).

Everything is computed per tensor, chunk by chunk of packed bits (popcount of AND), and merged per matrix
type, per layer and overall; no whole mask or model is ever held in memory.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import __version__
from . import magnitude_bins as mb
from .dtypes import DType, decode
from .errors import MaskFormatError, MaskMismatchError, MismatchError, UsageError
from .io.checkpoint import Checkpoint
from .io.reader import ChunkReader, FileHandles
from .io.safetensors_header import TensorInfo, read_header
from .kernels.popcount import clear_tail, popcount
from .maskfile import MaskFile
from .naming import KINDS, Namer
from .progress import progress_bar
from .report.schema import SCHEMA_VERSION, Finding

REPORT_KIND = "subnetscope.overlap"

#: elements per chunk (a multiple of 8 so chunks start on packed-byte boundaries)
DEFAULT_CHUNK_ELEMENTS = 1 << 20

MaskLike = str | os.PathLike[str] | MaskFile
CheckpointLike = str | os.PathLike[str] | Checkpoint

# ---------------------------------------------------------------------------------------------------------
# results


@dataclass
class DeltaSums:
    """Sums over the two updates ``d1 = T1 - B``, ``d2 = T2 - B`` (float64; non-finite elements skipped)."""

    shared: int = 0  #: coordinates updated by both runs (finite deltas)
    sign_agree: int = 0  #: of those, how many move in the same direction
    dot: float = 0.0  #: Σ d1·d2 over the shared coordinates
    sq1: float = 0.0  #: Σ d1² over the shared coordinates
    sq2: float = 0.0
    sq1_full: float = 0.0  #: Σ d1² over every coordinate
    sq2_full: float = 0.0
    dot_full: float = 0.0  #: Σ d1·d2 over every coordinate
    nonfinite: int = 0  #: elements skipped because a delta is NaN/Inf

    def add(self, o: DeltaSums) -> None:
        """Add ``o`` into ``self``."""
        for f in (
            "shared",
            "sign_agree",
            "dot",
            "sq1",
            "sq2",
            "sq1_full",
            "sq2_full",
            "dot_full",
            "nonfinite",
        ):
            setattr(self, f, getattr(self, f) + getattr(o, f))

    def to_json(self) -> dict[str, Any]:
        """Derived quantities: sign agreement and cosines (null when undefined)."""
        return {
            "shared": self.shared,
            "sign_agreement": self.sign_agree / self.shared if self.shared else None,
            "cosine": _cos(self.dot, self.sq1, self.sq2),
            "cosine_full": _cos(self.dot_full, self.sq1_full, self.sq2_full),
            "nonfinite_skipped": self.nonfinite,
        }


def _cos(dot: float, a: float, b: float) -> float | None:
    return dot / math.sqrt(a * b) if a > 0 and b > 0 else None


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def hypergeometric(n: int, c1: int, c2: int) -> tuple[float, float]:
    """Mean and variance of ``|I1 ∩ I2|`` for random subsets of sizes ``c1``, ``c2`` of ``n`` elements."""
    if n <= 0:
        return 0.0, 0.0
    mean = c1 * c2 / n
    var = c1 * c2 * (n - c1) * (n - c2) / (n * n * (n - 1)) if n > 1 else 0.0
    return mean, var


def _z(observed: int, mean: float, var: float) -> float | None:
    return (observed - mean) / math.sqrt(var) if var > 0 else None


@dataclass
class OverlapCounts:
    """Mergeable counts of one tensor or group: sizes, intersection, optional bins and delta sums."""

    numel: int = 0
    changed1: int = 0
    changed2: int = 0
    intersection: int = 0
    bins: np.ndarray | None = None  #: global magnitude histogram (see :mod:`subnetscope.magnitude_bins`)
    deltas: DeltaSums | None = None

    def add(self, o: OverlapCounts) -> None:
        """Add ``o`` into ``self``."""
        self.numel += o.numel
        self.changed1 += o.changed1
        self.changed2 += o.changed2
        self.intersection += o.intersection
        if o.bins is not None:
            if self.bins is None:
                self.bins = mb.empty_hist()
            self.bins += o.bins
        if o.deltas is not None:
            if self.deltas is None:
                self.deltas = DeltaSums()
            self.deltas.add(o.deltas)

    @property
    def union(self) -> int:
        """``|I1 ∪ I2|``."""
        return self.changed1 + self.changed2 - self.intersection

    def to_json(self, with_bins: bool = False) -> dict[str, Any]:
        """JSON form: counts, o1/o2, baselines, Jaccard, z-scores (null where undefined)."""
        n, c1, c2, i = self.numel, self.changed1, self.changed2, self.intersection
        mean, var = hypergeometric(n, c1, c2)
        d: dict[str, Any] = {
            "numel": n,
            "changed": [c1, c2],
            "density": [_ratio(c1, n), _ratio(c2, n)],
            "sparsity": [1 - c1 / n if n else None, 1 - c2 / n if n else None],
            "intersection": i,
            "union": self.union,
            "o1": _ratio(i, c1),
            "o2": _ratio(i, c2),
            "o1_random": _ratio(c2, n),
            "o2_random": _ratio(c1, n),
            "jaccard": _ratio(i, self.union),
            "expected_intersection": mean,
            "jaccard_random": _ratio(mean, c1 + c2 - mean),
            "z": _z(i, mean, var),
        }
        if self.bins is not None:
            m_mean, m_var = mb.expected_intersection(self.bins)
            d["magnitude"] = {
                "expected_intersection": m_mean,
                "o1_random": _ratio(m_mean, c1),
                "o2_random": _ratio(m_mean, c2),
                "jaccard_random": _ratio(m_mean, c1 + c2 - m_mean),
                "z": _z(i, m_mean, m_var),
                "lift": _ratio(i, m_mean),
            }
            if with_bins:
                h = self.bins
                d["magnitude"]["bins"] = [
                    {"bin": mb.bin_label(int(j)), "exponent": mb.bin_exponent(int(j)), "numel": int(h[mb.N, j]),
                     "changed": [int(h[mb.C1, j]), int(h[mb.C2, j])], "intersection": int(h[mb.BOTH, j])}
                    for j in np.flatnonzero(h[mb.N])
                ]  # fmt: skip
        if self.deltas is not None:
            d["deltas"] = self.deltas.to_json()
        return d


@dataclass
class TensorOverlap:
    """The overlap of one tensor."""

    name: str
    shape: list[int]
    layer: int | None
    kind: str
    counts: OverlapCounts

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {"name": self.name, "shape": self.shape, "layer": self.layer, "kind": self.kind,
                **self.counts.to_json()}  # fmt: skip


@dataclass
class OverlapReport:
    """Result of :func:`overlap` / :func:`overlap_deltas`."""

    mode: str  #: ``masks`` or ``deltas``
    inputs: list[dict[str, Any]]  #: one entry per run: ``ref``, ``tolerance``, ``semantics``
    base: dict[str, Any] | None  #: the base checkpoint when given (magnitude baseline, deltas)
    tensors: list[TensorOverlap]
    findings: list[Finding] = field(default_factory=list)
    tool_version: str = __version__

    @property
    def overall(self) -> OverlapCounts:
        """Counts over every tensor."""
        c = OverlapCounts()
        for t in self.tensors:
            c.add(t.counts)
        return c

    def by_kind(self) -> dict[str, OverlapCounts]:
        """Counts per matrix type, in :data:`~subnetscope.naming.KINDS` order."""
        out: dict[str, OverlapCounts] = {}
        for t in self.tensors:
            out.setdefault(t.kind, OverlapCounts()).add(t.counts)
        return {k: out[k] for k in KINDS if k in out}

    def by_layer(self) -> dict[int, OverlapCounts]:
        """Counts per layer (tensors outside layers are not included)."""
        out: dict[int, OverlapCounts] = {}
        for t in self.tensors:
            if t.layer is not None:
                out.setdefault(t.layer, OverlapCounts()).add(t.counts)
        return dict(sorted(out.items()))

    def to_json(self) -> dict[str, Any]:
        """The versioned JSON document; the whole-model keys are also at the top level."""
        overall = self.overall.to_json(with_bins=True)
        return {
            "schema_version": SCHEMA_VERSION,
            "report": REPORT_KIND,
            "tool": {"name": "subnetscope", "version": self.tool_version},
            "mode": self.mode,
            "inputs": self.inputs,
            "base": self.base,
            **overall,
            "overall": overall,
            "by_kind": {k: c.to_json() for k, c in self.by_kind().items()},
            "by_layer": {str(k): c.to_json() for k, c in self.by_layer().items()},
            "findings": [f.to_json() for f in self.findings],
            "tensors": [t.to_json() for t in self.tensors],
        }


# ---------------------------------------------------------------------------------------------------------
# reading masks chunk by chunk


class _MaskStream:
    """Packed bytes of one mask's tensors, read in chunks with the sha256 checked at the end of each."""

    def __init__(self, mask: MaskFile) -> None:
        self.mask = mask
        self.infos: dict[str, TensorInfo] = read_header(mask.path).tensors
        self.fd = os.open(mask.path, os.O_RDONLY)

    def close(self) -> None:
        os.close(self.fd)

    def tensor(self, name: str) -> _TensorBits:
        """Sequential reader of one tensor's packed bytes."""
        return _TensorBits(self, name)


class _TensorBits:
    """Reads one tensor's packed bytes front to back, hashing them; :meth:`verify` at the end."""

    def __init__(self, stream: _MaskStream, name: str) -> None:
        self.stream = stream
        self.name = name
        self.info = stream.infos[name]
        self.pos = 0
        self.hash = hashlib.sha256()

    def read(self, nbytes: int) -> np.ndarray:
        """The next ``nbytes`` packed bytes (fewer at the end of the tensor)."""
        n = min(nbytes, self.info.nbytes - self.pos)
        raw = os.pread(self.stream.fd, n, self.info.start + self.pos) if n > 0 else b""
        if len(raw) != max(n, 0):
            raise MaskFormatError(
                f"{self.stream.mask.path}: truncated inside tensor {self.name!r}", "regenerate the mask"
            )
        self.hash.update(raw)
        self.pos += len(raw)
        return np.frombuffer(raw, dtype=np.uint8)

    def verify(self) -> None:
        """Raise :class:`MaskFormatError` unless every byte was read and matches the recorded sha256."""
        if self.pos < self.info.nbytes:
            self.read(self.info.nbytes - self.pos)
        if self.hash.hexdigest() != self.stream.mask.digests.get(self.name):
            raise MaskFormatError(
                f"{self.stream.mask.path}: the bits of tensor {self.name!r} do not match their recorded "
                "sha256 (edited or damaged)",
                "regenerate the mask with `subnetscope mask`",
            )


def _open_mask(m: MaskLike) -> MaskFile:
    return m if isinstance(m, MaskFile) else MaskFile(m)


def _ck(x: CheckpointLike) -> Checkpoint:
    from .refs import load_checkpoint

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


def _run_tensors(
    names: Sequence[str],
    work: Callable[[str], OverlapCounts],
    jobs: int | None,
    progress: bool,
    sizes: Sequence[int],
    desc: str,
) -> list[OverlapCounts]:
    """Run ``work`` on every tensor (threads over tensors), results in the given order."""
    from .engine import default_jobs

    nj = jobs or default_jobs()
    out: list[OverlapCounts | None] = [None] * len(names)
    with progress_bar(sum(sizes), desc, enabled=progress) as bar:
        if nj == 1 or len(names) <= 1:
            for i, n in enumerate(names):
                out[i] = work(n)
                bar.update(sizes[i])
        else:
            with ThreadPoolExecutor(max_workers=nj, thread_name_prefix="subnetscope-overlap") as ex:
                futs = {ex.submit(work, n): i for i, n in enumerate(names)}
                try:
                    for f, i in futs.items():
                        out[i] = f.result()
                        bar.update(sizes[i])
                except BaseException:
                    for f in futs:
                        f.cancel()
                    raise
    return [o for o in out if o is not None]


# ---------------------------------------------------------------------------------------------------------
# masks mode


def overlap(
    mask1: MaskLike,
    mask2: MaskLike,
    *,
    base: CheckpointLike | None = None,
    jobs: int | None = None,
    chunk_elements: int | None = None,
    progress: bool = False,
) -> OverlapReport:
    """Overlap of the subnetworks recorded in two mask files.

    Args:
        mask1, mask2: mask files (``subnetscope mask`` / ``compare --mask-out``) made over the same base;
            masks over different bases raise :class:`~subnetscope.errors.MaskMismatchError`.
        base: the base checkpoint; when given, it must be the masks' base (checked by fingerprint), and the
            report adds the magnitude-matched baseline (bins of the base weights' exponent).
        jobs: worker threads over tensors (default: CPUs, at most 8); the result does not depend on it.
        chunk_elements: elements per read (default 1 Mi).
        progress: progress bar on stderr (only on a terminal).
    """
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
    chunk = _chunk(chunk_elements)
    s1, s2 = _MaskStream(m1), _MaskStream(m2)
    local = threading.local()
    try:
        with FileHandles() as handles:

            def work(name: str) -> OverlapCounts:
                numel = math.prod(m1.shapes[name])
                binfo = bck.tensors[name] if bck is not None else None
                reader = None
                if binfo is not None:
                    reader = getattr(local, "reader", None)
                    if reader is None:
                        reader = local.reader = ChunkReader(handles, chunk * 8)
                return _mask_tensor(s1, s2, name, numel, binfo, reader, chunk)

            sizes = [math.prod(m1.shapes[n]) for n in names]
            counts = _run_tensors(names, work, jobs, progress, sizes, "overlap")
    finally:
        s1.close()
        s2.close()
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
    from .fingerprint import of_checkpoint

    missing = [n for n in m.shapes if n not in base.tensors]
    if missing:
        raise MaskMismatchError(
            f"{m.path}: mask was made for another model: {len(missing)} of its tensors are not in {base.ref} "
            f"(e.g. {missing[0]!r})",
            "give the base the masks were computed against",
        )
    m.check_base(of_checkpoint(base, list(m.shapes)), what=str(base.ref))


def _mask_tensor(
    s1: _MaskStream,
    s2: _MaskStream,
    name: str,
    numel: int,
    binfo: TensorInfo | None,
    reader: ChunkReader | None,
    chunk: int,
) -> OverlapCounts:
    c = OverlapCounts(numel=numel)
    hist = None
    local = None
    if binfo is not None:
        hist = mb.empty_hist()
        if binfo.dtype.is_float:
            local = mb.local_hist(binfo.dtype)
    r1, r2 = s1.tensor(name), s2.tensor(name)
    for start in range(0, numel, chunk):
        count = min(chunk, numel - start)
        nbytes = (count + 7) // 8
        p1 = clear_tail(r1.read(nbytes), count)
        p2 = clear_tail(r2.read(nbytes), count)
        c.changed1 += popcount(p1)
        c.changed2 += popcount(p2)
        c.intersection += popcount(p1 & p2)
        if hist is not None and binfo is not None and reader is not None:
            _bin_chunk(hist, local, binfo, reader, start, count, p1, p2)
    r1.verify()
    r2.verify()
    if hist is not None:
        if local is not None and binfo is not None:
            mb.add_local(hist, local, binfo.dtype)
        c.bins = hist
    return c


def _bin_chunk(
    hist: np.ndarray,
    local: np.ndarray | None,
    binfo: TensorInfo,
    reader: ChunkReader,
    start: int,
    count: int,
    p1: np.ndarray,
    p2: np.ndarray,
    base_bits: np.ndarray | None = None,
) -> None:
    """Bin elements ``[start, start + count)`` (packed updated bits ``p1``/``p2``) by the base weights."""
    nb = max(0, min(count, binfo.numel - start))
    if nb:
        if local is not None:
            bits = base_bits if base_bits is not None else reader.read(binfo, start, nb)
            mb.count_local(bits[:nb], binfo.dtype, p1, p2, local)
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
    from .kernels.compare import count_chunk

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


def overlap_deltas(
    base: CheckpointLike,
    target1: CheckpointLike,
    target2: CheckpointLike,
    *,
    tolerance: float = 1e-5,
    jobs: int | None = None,
    chunk_elements: int | None = None,
    progress: bool = False,
) -> OverlapReport:
    """Overlap of the updates ``target1 - base`` and ``target2 - base``, computed in one 3-way pass.

    The updated sets are ``|Δ| > tolerance`` (exact semantics, as ``compare``); the report has everything
    :func:`overlap` reports with a base (magnitude-matched baseline included), plus per group the sign
    agreement and the cosine of the two updates on the coordinates both updated (``deltas.cosine``) and of
    the whole update vectors (``deltas.cosine_full``). Tensors that are not the same shape in all three
    checkpoints are skipped, each with a finding.
    """
    from .plan import make_plan

    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise UsageError(
            f"tolerance {tolerance!r} is not a finite non-negative number", "use values like 1e-5"
        )
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
    chunk = _chunk(chunk_elements)
    local = threading.local()
    by_name = {pa.name: (pa, pb) for pa, pb in todo}
    with FileHandles() as handles:

        def work(name: str) -> OverlapCounts:
            pa, pb = by_name[name]
            r = getattr(local, "r", None)
            if r is None:
                r = local.r = tuple(ChunkReader(handles, chunk * 8) for _ in range(3))
            return _delta_tensor(pa.base, pa.target, pb.target, r, chunk, tolerance)

        names = [pa.name for pa, _ in todo]
        sizes = [pa.numel for pa, _ in todo]
        counts = _run_tensors(names, work, jobs, progress, sizes, "overlap")
    tensors = [
        TensorOverlap(pa.name, list(pa.target.shape), pa.layer, pa.kind, c)
        for (pa, _), c in zip(todo, counts)
    ]
    inputs = [
        {"ref": t.ref, "path": str(t.root), "tolerance": float(tolerance), "semantics": "exact"}
        for t in (t1, t2)
    ]
    return OverlapReport("deltas", inputs, _describe_ck(b), tensors, findings)


def _delta_tensor(
    bi: TensorInfo,
    ti1: TensorInfo,
    ti2: TensorInfo,
    readers: tuple[ChunkReader, ...],
    chunk: int,
    tol: float,
) -> OverlapCounts:
    n = bi.numel
    c = OverlapCounts(numel=n, bins=mb.empty_hist(), deltas=DeltaSums())
    assert c.bins is not None and c.deltas is not None
    local = mb.local_hist(bi.dtype) if bi.dtype.is_float else None
    for start in range(0, n, chunk):
        cnt = min(chunk, n - start)
        a = readers[0].read(bi, start, cnt)
        b1 = readers[1].read(ti1, start, cnt)
        b2 = readers[2].read(ti2, start, cnt)
        m1, k1 = changed_packed(a, b1, bi.dtype, ti1.dtype, tol)
        m2, k2 = changed_packed(a, b2, bi.dtype, ti2.dtype, tol)
        both = m1 & m2
        c.changed1 += k1
        c.changed2 += k2
        c.intersection += popcount(both)
        _bin_chunk(c.bins, local, bi, readers[0], start, cnt, m1, m2, base_bits=a)
        shared = np.unpackbits(both, count=cnt, bitorder="little").view(bool)
        c.deltas.add(_delta_sums(a, b1, b2, (bi.dtype, ti1.dtype, ti2.dtype), shared))
    if local is not None:
        mb.add_local(c.bins, local, bi.dtype)
    return c


# ---------------------------------------------------------------------------------------------------------
# human output


def _p(x: float | None) -> str:
    from .report.table import pct

    return "-" if x is None else pct(x)


def _f(x: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def _rows(
    report: OverlapReport, groups: Sequence[tuple[str, OverlapCounts]]
) -> tuple[list[str], list[list[str]]]:
    from .report.table import human_count

    mag = report.base is not None
    dl = report.mode == "deltas"
    head = ["", "params", "changed 1", "changed 2", "both", "o1", "o1 rand", "o2", "o2 rand", "jaccard", "z"]
    if mag:
        head += ["o1 mag", "o2 mag", "z mag"]
    if dl:
        head += ["sign agr", "cos"]
    rows = []
    for label, c in groups:
        j = c.to_json()
        r = [label, human_count(c.numel), _p(j["density"][0]), _p(j["density"][1]), human_count(c.intersection),
             _p(j["o1"]), _p(j["o1_random"]), _p(j["o2"]), _p(j["o2_random"]), _p(j["jaccard"]), _f(j["z"])]  # fmt: skip
        if mag:
            m = j["magnitude"]
            r += [_p(m["o1_random"]), _p(m["o2_random"]), _f(m["z"])]
        if dl:
            d = j["deltas"]
            r += [_p(d["sign_agreement"]), _f(d["cosine"], "{:.3f}")]
        rows.append(r)
    return head, rows


def render(report: OverlapReport, layers: bool = True) -> str:
    """The ``overlap`` output for people: a summary, then tables overall, per matrix type, per layer."""
    from .report.table import fmt_tol, human_count, table

    ov = report.overall
    j = ov.to_json()
    out = [f"subnetscope overlap ({report.mode})"]
    for k, inp in enumerate(report.inputs, 1):
        ch = ov.changed1 if k == 1 else ov.changed2
        out.append(f"  run {k}: {inp['ref']}  (tol {fmt_tol(inp['tolerance'])}, {inp['semantics']}; "
                   f"{human_count(ch)} of {human_count(ov.numel)} updated, {_p(_ratio(ch, ov.numel))})")  # fmt: skip
    if report.base is not None:
        out.append(f"  base:  {report.base['ref']}")
    out.append(
        f"  |I1 ∩ I2| = {ov.intersection:,}: o1 = {_p(j['o1'])} (uniform baseline {_p(j['o1_random'])}), "
        f"o2 = {_p(j['o2'])} (uniform baseline {_p(j['o2_random'])}), z = {_f(j['z'])}"
    )
    if "magnitude" in j:
        m = j["magnitude"]
        out.append(
            f"  magnitude-matched baseline: o1 {_p(m['o1_random'])}, o2 {_p(m['o2_random'])}, "
            f"z = {_f(m['z'])} (observed/expected intersection {_f(m['lift'], '{:.2f}')}x)"
        )
    if "deltas" in j:
        d = j["deltas"]
        out.append(
            f"  updates on the {d['shared']:,} shared coordinates: sign agreement {_p(d['sign_agreement'])}, "
            f"cosine {_f(d['cosine'], '{:.4f}')}; cosine of the whole updates {_f(d['cosine_full'], '{:.4f}')}"
        )
    head, rows = _rows(report, [("overall", ov)])
    out += ["", table(head, rows)]
    head, rows = _rows(report, list(report.by_kind().items()))
    out += ["", "per matrix type", table(["type", *head[1:]], rows)]
    by_layer = report.by_layer()
    if layers and by_layer:
        head, rows = _rows(report, [(str(k), c) for k, c in by_layer.items()])
        out += ["", "per layer", table(["layer", *head[1:]], rows)]
    if report.findings:
        out += ["", f"findings ({len(report.findings)})"]
        out += [f"  {f.kind:15s} {f.tensor}: {f.detail}" for f in report.findings[:50]]
        if len(report.findings) > 50:
            out.append(f"  ... and {len(report.findings) - 50} more (see --format json)")
    return "\n".join(out)
