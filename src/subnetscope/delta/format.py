"""The on-disk layout of a delta directory, and its validation.

A delta directory holds:

- ``delta.json``, the manifest: format name and version, tool version, the base's fingerprint (all
  tensors, and the subset a rebuild reads from the base), the chunk size, the data and side files with
  their sizes and sha256, every TARGET tensor (name, shape, dtype, sha256 of its raw bytes, encoding and
  chunk records), the tensors removed from BASE, and a sha256 of the manifest itself;
- ``data-00001.bin``, ...: the encoded chunks, back to back (positions blob, then values blob);
- TARGET's config and tokenizer files, copied as they were.

Each tensor is cut into chunks of ``chunk_elements`` elements (the last may be shorter). A chunk with no
record is identical to the base. A record says how many elements changed, how their positions are
encoded (``bitmap``, ``gaps`` or ``all`` for a chunk stored whole), the codec and byte length of the
positions and values blobs, and where they are. Values are the target's raw bits, not differences.

Tensor encodings: ``unchanged`` (no records; copied from the base), ``sparse`` (records for the changed
chunks; the rest is copied from the base), ``dense`` (every chunk stored whole: changed throughout) and
``whole`` (new in TARGET, or a new shape or dtype: stored whole, the base is not read).
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

from ..dtypes import DTYPES
from ..errors import DeltaFormatError
from ..fingerprint import Fingerprint
from ..io import strict_json
from ..io.safetensors_header import file_kind
from .manifest import (
    CHUNK_FIELDS,
    CODECS,
    ENCODINGS,
    FORMAT,
    FORMAT_VERSION,
    FROM_BASE,
    HEX64,
    MANIFEST_NAME,
    NOT_SIDE_FILES,
    POSITIONS,
    REDO_HINT,
    SAFE_NAME,
    SIDE_PATTERNS,
    ChunkRecord,
    Manifest,
    StoredFile,
    TensorEntry,
    is_side_file_name,
    seal_digest,
    write_manifest,
)

__all__ = [
    "CHUNK_FIELDS",
    "CODECS",
    "ENCODINGS",
    "FORMAT",
    "FORMAT_VERSION",
    "FROM_BASE",
    "MANIFEST_NAME",
    "NOT_SIDE_FILES",
    "POSITIONS",
    "SIDE_PATTERNS",
    "ChunkRecord",
    "Manifest",
    "StoredFile",
    "TensorEntry",
    "check_files",
    "is_side_file_name",
    "load_manifest",
    "not_a_delta",
    "parse_manifest",
    "seal_digest",
    "write_manifest",
]


# -- reading and validation ---------------------------------------------------------------------------------


class _Check:
    """Raises :class:`DeltaFormatError` naming the manifest and what is wrong."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(
        self, what: str, hint: str = f"the delta is damaged or was edited: {REDO_HINT}"
    ) -> DeltaFormatError:
        return DeltaFormatError(f"{self.path}: {what}", hint)

    def int_(self, v: object, what: str, lo: int = 0) -> int:
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise self.fail(f"{what} is {v!r}, not an integer >= {lo}")
        return v

    def str_(self, v: object, what: str, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(v, str) or (choices is not None and v not in choices):
            allowed = f" (one of {', '.join(choices)})" if choices else ""
            raise self.fail(f"{what} is {v!r}, not a valid value{allowed}")
        return v

    def sha(self, v: object, what: str) -> str:
        if not isinstance(v, str) or not HEX64.match(v):
            raise self.fail(f"{what} is {v!r}, not a sha256 hex digest")
        return v

    def obj(self, v: object, what: str) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise self.fail(f"{what} is not a JSON object")
        return v

    def list_(self, v: object, what: str) -> list[Any]:
        if not isinstance(v, list):
            raise self.fail(f"{what} is not a JSON list")
        return v


def _stored_files(ck: _Check, raw: object, what: str) -> list[StoredFile]:
    out = []
    for i, f in enumerate(ck.list_(raw, what)):
        f = ck.obj(f, f"{what}[{i}]")
        name = ck.str_(f.get("name"), f"{what}[{i}].name")
        if not SAFE_NAME.match(name) or name in (".", ".."):
            raise ck.fail(f"{what}[{i}].name {name!r} is not a plain file name")
        if what == "side_files" and not is_side_file_name(name):
            raise ck.fail(
                f"side file {name!r} is not a config or tokenizer file: a weight, index or manifest name "
                "would replace what the rebuild writes"
            )
        out.append(
            StoredFile(
                name,
                ck.int_(f.get("bytes"), f"{what}[{i}].bytes"),
                ck.sha(f.get("sha256"), f"{what}[{i}].sha256"),
            )
        )
    names = [f.name for f in out]
    if len(set(names)) != len(names):
        raise ck.fail(f"{what} names a file twice")
    return out


def _fingerprint(ck: _Check, raw: object, what: str) -> Fingerprint:
    try:
        return Fingerprint.from_json(ck.obj(raw, what))
    except (KeyError, TypeError, ValueError):
        raise ck.fail(f"{what} is damaged") from None


def _chunk(ck: _Check, row: object, where: str, m: Manifest, t: TensorEntry, prev: int) -> ChunkRecord:
    row = ck.list_(row, where)
    if len(row) != len(CHUNK_FIELDS):
        raise ck.fail(f"{where} has {len(row)} fields, expected {len(CHUNK_FIELDS)}")
    r = dict(zip(CHUNK_FIELDS, row))
    rec = ChunkRecord(
        index=ck.int_(r["index"], f"{where}.index"),
        changed=ck.int_(r["changed"], f"{where}.changed", 1),
        positions=ck.str_(r["positions"], f"{where}.positions", POSITIONS),
        pos_codec=ck.str_(r["pos_codec"], f"{where}.pos_codec", CODECS),
        pos_bytes=ck.int_(r["pos_bytes"], f"{where}.pos_bytes"),
        val_codec=ck.str_(r["val_codec"], f"{where}.val_codec", CODECS),
        val_bytes=ck.int_(r["val_bytes"], f"{where}.val_bytes"),
        file=ck.int_(r["file"], f"{where}.file"),
        offset=ck.int_(r["offset"], f"{where}.offset"),
    )
    if rec.index <= prev or rec.index >= m.nchunks(t):
        raise ck.fail(
            f"{where}.index {rec.index} is out of order or beyond the tensor's {m.nchunks(t)} chunks"
        )
    _, count = m.chunk_span(t, rec.index)
    if rec.changed > count:
        raise ck.fail(f"{where} claims {rec.changed} changed elements in a chunk of {count}")
    if rec.positions == "all" and (rec.changed != count or rec.pos_bytes != 0):
        raise ck.fail(f"{where} is stored whole but does not cover its {count} elements")
    if rec.positions == "bitmap" and rec.pos_codec == "raw" and rec.pos_bytes != (count + 7) // 8:
        raise ck.fail(f"{where} has a {rec.pos_bytes}-byte bitmap for {count} elements")
    if rec.val_codec == "raw" and rec.val_bytes != rec.changed * t.itemsize:
        raise ck.fail(f"{where} has {rec.val_bytes} value bytes for {rec.changed} {t.dtype} values")
    if rec.file >= len(m.files):
        raise ck.fail(f"{where} names data file #{rec.file}, but the delta has {len(m.files)}")
    if rec.offset + rec.pos_bytes + rec.val_bytes > m.files[rec.file].bytes:
        raise ck.fail(f"{where} lies beyond the end of {m.files[rec.file].name}")
    return rec


def _tensor(ck: _Check, raw: object, i: int, m: Manifest) -> TensorEntry:
    where = f"tensors[{i}]"
    o = ck.obj(raw, where)
    name = ck.str_(o.get("name"), f"{where}.name")
    where = f"tensor {name!r}"
    shape_raw = ck.list_(o.get("shape"), f"{where} shape")
    shape = tuple(ck.int_(s, f"{where} shape") for s in shape_raw)
    t = TensorEntry(
        name=name,
        shape=shape,
        dtype=ck.str_(o.get("dtype"), f"{where} dtype", tuple(DTYPES)),
        sha256=ck.sha(o.get("sha256"), f"{where} sha256"),
        encoding=ck.str_(o.get("encoding"), f"{where} encoding", ENCODINGS),
        changed=ck.int_(o.get("changed"), f"{where} changed"),
        reason=o.get("reason"),
    )
    if t.reason is not None:
        ck.str_(t.reason, f"{where} reason", ("new", "shape", "dtype"))
    prev = -1
    for j, row in enumerate(ck.list_(o.get("chunks"), f"{where} chunks")):
        rec = _chunk(ck, row, f"{where} chunk record {j}", m, t, prev)
        t.chunks.append(rec)
        prev = rec.index
    if sum(c.changed for c in t.chunks) != t.changed:
        raise ck.fail(
            f"{where} says {t.changed} changed elements but its chunks hold {sum(c.changed for c in t.chunks)}"
        )
    whole = t.numel == 0 or (len(t.chunks) == m.nchunks(t) and all(c.positions == "all" for c in t.chunks))
    if t.encoding == "unchanged" and t.chunks:
        raise ck.fail(f"{where} is 'unchanged' but has chunk records")
    if t.encoding in ("dense", "whole") and not whole:
        raise ck.fail(f"{where} is '{t.encoding}' but its chunks do not cover it")
    if (t.encoding == "whole") != (t.reason is not None):
        raise ck.fail(f"{where}: only 'whole' tensors carry a reason")
    return t


def parse_manifest(obj: object, path: Path) -> Manifest:
    """Validate a manifest's JSON object (structure, ranges, the seal) and build a :class:`Manifest`."""
    ck = _Check(path)
    o = ck.obj(obj, "the manifest")
    if o.get("format") != FORMAT:
        raise DeltaFormatError(
            f"{path}: not a subnetscope delta manifest (format {o.get('format')!r})",
            "give the directory written by `subnetscope delta export`",
        )
    if o.get("format_version") != FORMAT_VERSION:
        raise DeltaFormatError(
            f"{path}: delta format version {o.get('format_version')!r} is not supported (this tool reads {FORMAT_VERSION!r})",
            "use the subnetscope version that wrote it, or re-export the delta",
        )
    if o.get("manifest_sha256") != seal_digest(o):
        raise ck.fail("the manifest does not match its own manifest_sha256 (edited or damaged)")
    base = ck.obj(o.get("base"), "base")
    target = ck.obj(o.get("target"), "target")
    if list(o.get("chunk_fields") or []) != list(CHUNK_FIELDS):
        raise ck.fail(f"chunk_fields {o.get('chunk_fields')!r} are not {list(CHUNK_FIELDS)}")
    m = Manifest(
        tool_version=ck.str_(o.get("tool_version"), "tool_version"),
        base_fingerprint=_fingerprint(ck, base.get("fingerprint"), "base.fingerprint"),
        patch_fingerprint=_fingerprint(ck, base.get("patch_fingerprint"), "base.patch_fingerprint"),
        chunk_elements=ck.int_(o.get("chunk_elements"), "chunk_elements", 8),
        zstd_level=ck.int_(o.get("zstd_level"), "zstd_level", -(1 << 17)),
        files=_stored_files(ck, o.get("files"), "files"),
        side_files=_stored_files(ck, o.get("side_files"), "side_files"),
        tensors=[],
        removed=[],
        base_ref=str(base.get("ref", "")),
        target_ref=str(target.get("ref", "")),
        path=path.parent,
    )
    if m.chunk_elements % 8:
        raise ck.fail(f"chunk_elements {m.chunk_elements} is not a multiple of 8")
    overlap = {f.name for f in m.files} & ({f.name for f in m.side_files} | {MANIFEST_NAME})
    if overlap:
        raise ck.fail(f"file {sorted(overlap)[0]!r} is listed twice")
    for i, t in enumerate(ck.list_(o.get("tensors"), "tensors")):
        m.tensors.append(_tensor(ck, t, i, m))
    names = [t.name for t in m.tensors]
    if len(set(names)) != len(names):
        raise ck.fail("a tensor is listed twice")
    for i, r in enumerate(ck.list_(o.get("removed"), "removed")):
        r = ck.obj(r, f"removed[{i}]")
        n = ck.str_(r.get("name"), f"removed[{i}].name")
        if n in set(names):
            raise ck.fail(f"tensor {n!r} is both in the target and removed")
        m.removed.append(r)
    return m


def load_manifest(delta_dir: str | os.PathLike[str]) -> Manifest:
    """Read and validate ``delta.json`` of a delta directory (no data is read)."""
    d = Path(delta_dir)
    path = d / MANIFEST_NAME
    if not d.is_dir():
        raise DeltaFormatError(
            f"{d}: not a delta directory (no such directory)",
            "give the directory written by `subnetscope delta export`",
        )
    if not path.exists():
        raise DeltaFormatError(
            f"{d}: no {MANIFEST_NAME} in this directory (not a delta, or an incomplete copy)",
            "give the directory written by `subnetscope delta export`, copied whole",
        )
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise DeltaFormatError(
                f"{path}: is {file_kind(mode)}, not a regular file", f"the delta is damaged: {REDO_HINT}"
            )
        obj = strict_json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DeltaFormatError(
            f"{path}: not readable JSON ({e})", f"the delta is damaged: {REDO_HINT}"
        ) from None
    return parse_manifest(obj, path)


def not_a_delta(path: Path) -> str | None:
    """None when ``path`` holds a subnetscope delta and nothing else (what ``overwrite`` may replace);
    otherwise why it does not."""
    try:
        m = load_manifest(path)
    except DeltaFormatError:
        return f"it holds no valid {MANIFEST_NAME}"
    known = {MANIFEST_NAME, *(f.name for f in m.files), *(f.name for f in m.side_files)}
    extra = sorted(p.name for p in path.iterdir() if p.name not in known)
    if extra:
        return f"it also holds {extra[0]!r}, which is not part of the delta"
    return None


def check_files(manifest: Manifest, digests: bool = True, jobs: int = 2) -> None:
    """Check that every data and side file exists with its recorded size (and, with ``digests``, sha256).

    Run before anything is written, so a truncated or altered delta is refused up front.
    """
    from concurrent.futures import ThreadPoolExecutor

    assert manifest.path is not None
    d = manifest.path
    stored = manifest.files + manifest.side_files
    for f in stored:
        p = d / f.name
        if not p.is_file():
            raise DeltaFormatError(
                f"{d}: file {f.name} is missing", f"copy the delta directory whole, or {REDO_HINT}"
            )
        size = p.stat().st_size
        if size != f.bytes:
            raise DeltaFormatError(
                f"{p}: is {size} bytes, the manifest says {f.bytes} (truncated or damaged)",
                f"copy the delta directory again, or {REDO_HINT}",
            )
    if not digests:
        return

    def digest(f: StoredFile) -> tuple[StoredFile, str]:
        h = hashlib.sha256()
        with open(d / f.name, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        return f, h.hexdigest()

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as ex:
        for f, got in ex.map(digest, stored):
            if got != f.sha256:
                raise DeltaFormatError(
                    f"{d / f.name}: its sha256 does not match the manifest (damaged or altered)",
                    f"copy the delta directory again, or {REDO_HINT}",
                )
