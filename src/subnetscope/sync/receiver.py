"""The receiver: applies patches in place, bit-exact, after validating all of a patch against its state."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..delta.encode import from_planes
from . import kernels
from .bits import bits_view, is_float
from .errors import (
    SyncFormatError,
    SyncGapError,
    SyncParentError,
    SyncReplayError,
    SyncVerifyError,
)
from .hashing import Digest, hex64, model_digest, tensor_hash
from .patch import BY_EXPONENT, Patch
from .state import Layout, blocks, canonical, check_layout, gather, layout_of, named_tensors, scatter

_ANCHOR = "ask the sender for an anchor (sender.full()) and apply that"


@dataclass
class _Change:
    """One tensor's validated change, ready to be written: positions and old/new bits (host arrays)."""

    name: str
    idx: np.ndarray | None  #: None: every element (a full patch)
    old: np.ndarray | None
    new: np.ndarray
    hash: int


class Receiver:
    """The rollout side of a sync stream: holds weights that patches update in place.

    Args:
        model: an ``nn.Module`` or a mapping of names to tensors (any device), holding the sender's starting
            weights (version ``version``) or any weights at all if the first patch is an anchor
            (:meth:`Sender.full`).
        version: the version those weights are (0: the sender's starting weights).

    Construction hashes every tensor once (a full pass); each :meth:`apply` then costs O(changed elements).
    """

    def __init__(self, model: Any, *, version: int = 0) -> None:
        self._model = model
        self.version = version  #: the version held now
        self.stream: str | None = None  #: the stream followed (adopted from the first patch applied)
        tensors, aliases = canonical(named_tensors(model))
        self._tensors = tensors
        self._layout = layout_of(tensors, aliases, None)
        self._hash = {n: tensor_hash(t) for n, t in tensors.items()}
        self._digest = self._model_digest(self._hash)

    def _model_digest(self, hashes: dict[str, int]) -> str:
        return model_digest(
            {n: (self._layout.tensors[n][0], self._layout.tensors[n][1], h) for n, h in hashes.items()}
        )

    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        """Canonical name → the receiver's tensor (tied names appear once)."""
        return dict(self._tensors)

    def digest(self) -> Digest:
        """The digest of the weights held now: a full pass over every tensor."""
        hashes = {n: tensor_hash(t) for n, t in self._tensors.items()}
        return Digest(self._model_digest(hashes), {n: hex64(h) for n, h in hashes.items()})

    # -- validation -------------------------------------------------------------------------------------

    def _check_chain(self, p: Patch, where: str) -> None:
        if p.kind == "full":
            if p.stream == self.stream and p.version <= self.version:
                raise SyncReplayError(
                    f"{where}: anchor version {p.version} is not newer than the receiver's version {self.version}",
                    "skip it; apply the patches after the version held",
                )
            return
        assert p.parent is not None
        if self.stream is not None and p.stream != self.stream:
            raise SyncParentError(
                f"{where}: belongs to sync stream {p.stream}, the receiver follows stream {self.stream}",
                _ANCHOR,
            )
        if p.version <= self.version:
            raise SyncReplayError(
                f"{where}: version {p.version} is not newer than the receiver's version {self.version} "
                "(already applied?)",
                "skip it; apply the patches after the version held",
            )
        if p.parent > self.version:
            missing = (f"patch {p.parent} is" if p.parent == self.version + 1
                       else f"patches {self.version + 1}..{p.parent} are")  # fmt: skip
            raise SyncGapError(
                f"{where}: applies on version {p.parent}, the receiver holds version {self.version} "
                f"({missing} missing)",
                f"apply the missing patches first, or {_ANCHOR}",
            )
        if p.parent != self.version or p.parent_digest != self._digest:
            raise SyncParentError(
                f"{where}: applies on a state with digest {p.parent_digest}, the receiver's weights "
                f"(version {self.version}) have digest {self._digest}",
                "the receiver did not start from the sender's weights; " + _ANCHOR,
            )

    def _decode(self, p: Patch, where: str) -> list[_Change]:
        changes: list[_Change] = []
        if p.kind == "full":
            for i, t in enumerate(p.tensors):
                size = self._tensors[t.name].element_size()
                raw = p.raw_stream(i, f"{where}: {t.name}")
                bits = from_planes(raw, np.dtype(f"u{size}"), t.numel)
                if not bits.flags.writeable:
                    bits = bits.copy()
                got = tensor_hash(torch.from_numpy(np.ascontiguousarray(bits).view(_np_signed(size))))
                if hex64(got) != t.hash:
                    raise SyncFormatError(
                        f"{where}: the values of {t.name} do not hash to the sender's hash (damaged)", _ANCHOR
                    )
                changes.append(_Change(t.name, None, None, bits, got))
            return changes
        for t, small, extra, codes, esc, table in p.diff_streams(where):
            h = self._hash[t.name]
            if not t.changed:
                if hex64(h) != t.hash:
                    raise SyncParentError(
                        f"{where}: {t.name} holds other weights than the sender's parent state", _ANCHOR
                    )
                continue
            w = f"{where}: {t.name}"
            tensor = self._tensors[t.name]
            size = tensor.element_size()
            u = f"u{size}"
            if t.positions == BY_EXPONENT:
                if t.dtype not in kernels.EXPONENT:
                    raise SyncFormatError(
                        f"{w}: {t.dtype} positions cannot be coded by exponent (damaged)", _ANCHOR
                    )
                ids, counts = kernels.read_table(table, t.changed, w)
                pos = kernels.positions(small, extra, t.numel, w)
                ranks, ptr, end = kernels.scan_targets(pos, ids, counts)
                host = ((s, bits_view(b).cpu().numpy().view(u)) for s, b in blocks(tensor))
                idx, old = kernels.scan(host, t.dtype, ranks, ptr, end, w)
            else:
                if table:
                    raise SyncFormatError(f"{w}: a flat tensor has a bucket table (damaged)", _ANCHOR)
                idx = kernels.positions(small, extra, t.numel, w)
                old = gather(tensor, torch.from_numpy(idx).to(tensor.device)).cpu().numpy().view(u)
            new, h = kernels.values(idx, old, codes, esc, size, is_float(t.dtype), h, w)
            if hex64(h) != t.hash:
                raise SyncParentError(
                    f"{where}: applying it would not give the sender's {t.name} (hash {hex64(h)}, sender {t.hash}): "
                    "the receiver's values are not the parent state's (written outside apply?)",
                    _ANCHOR,
                )
            changes.append(_Change(t.name, idx, old, new, h))
        return changes

    # -- writing ----------------------------------------------------------------------------------------

    def _write(self, c: _Change, which: str) -> None:
        t = self._tensors[c.name]
        src = c.new if which == "new" else c.old
        assert src is not None
        bits = torch.from_numpy(np.ascontiguousarray(src).view(_np_signed(t.element_size())))
        bits = bits.to(t.device)
        with torch.no_grad():
            if c.idx is None:
                bits_view(t).copy_(bits.reshape(t.shape))
            else:
                scatter(t, torch.from_numpy(c.idx).to(t.device), bits)

    def apply(self, patch: Patch | bytes, *, verify: bool = False, where: str | None = None) -> list[str]:
        """Apply ``patch`` (a :class:`Patch` or its bytes) in place; returns the names it changed.

        Everything is checked before the first write: the checksum, the chain (stream, version, parent and
        the parent's digest), the tensor names, shapes, dtypes and ties, every position and value, and that
        the result hashes to the sender's per-tensor hashes. A refusal raises a
        :class:`~subnetscope.sync.errors.SyncError` and leaves the receiver untouched. With ``verify`` every
        tensor is hashed again after writing (a full pass); on a mismatch the changed elements are
        restored and :class:`SyncVerifyError` is raised.
        """
        if not isinstance(patch, Patch):
            patch = Patch.from_bytes(patch, where or "patch")
        where = where or f"patch {patch.version}"
        theirs = Layout({t.name: (t.dtype, t.shape) for t in patch.tensors}, dict(patch.aliases))
        check_layout(self._layout, theirs, where, "receiver")
        self._check_chain(patch, where)
        changes = self._decode(patch, where)
        for c in changes:
            self._write(c, "new")
        if verify:
            expected = {t.name: t.hash for t in patch.tensors}
            bad = [n for n, t in self._tensors.items() if hex64(tensor_hash(t)) != expected[n]]
            if bad:
                for c in changes:
                    if c.old is not None:
                        self._write(c, "old")
                raise SyncVerifyError(
                    f"{where}: after applying, {len(bad)} tensor(s) do not hash to the sender's ({', '.join(bad[:3])})"
                    + ("; the changed elements were restored" if patch.kind == "diff" else ""),
                    "something else writes these tensors, or the receiver was modified outside apply; "
                    + _ANCHOR,
                )
        for c in changes:
            self._hash[c.name] = c.hash
        self._digest = self._model_digest(self._hash)
        if self._digest != patch.digest:  # pragma: no cover - implied by the per-tensor checks
            raise SyncFormatError(f"{where}: the new state's digest is not the sender's", _ANCHOR)
        self.version = patch.version
        self.stream = patch.stream
        return [c.name for c in changes]

    def changed_tensors(self, patch: Patch) -> Iterator[tuple[str, torch.Tensor]]:
        """``(name, tensor)`` of the tensors ``patch`` changed (after :meth:`apply`), for engines that load
        weights by name (e.g. vLLM's ``model.load_weights(receiver.changed_tensors(patch))``); tied names
        are yielded once, under the sender's name."""
        for name in patch.changed_names():
            yield name, self._tensors[name]


def _np_signed(size: int) -> np.dtype:
    return np.dtype(np.uint8) if size == 1 else np.dtype(f"i{size}")
