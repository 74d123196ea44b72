"""The sender: keeps one snapshot of the weights it last sent and turns what changed into patches."""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from ..delta.encode import to_planes
from ..kernels import delta as dk
from . import kernels
from .bits import bits_view, is_float, wire_name
from .errors import SyncStructureError
from .hashing import Digest, hex64, model_digest, tensor_hash
from .patch import BY_EXPONENT, FLAT, LEVEL, Patch, TensorEntry, pack
from .state import CHUNK, Layout, blocks, canonical, layout_of, named_tensors

#: elements compared per kernel call on the CPU: small enough that the snapshot block diff_pack just read is
#: still in cache when the changed elements' old values are taken from it (4 MiB blocks ran 2x slower)
COMPARE_CHUNK = 1 << 16
#: compare with torch (the GPU path) on the CPU too: lets the tests run the device path without a GPU
TORCH_COMPARE = False


def blk_needs_cast(t: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether ``t`` must be cast (or copied, being non-contiguous) before it is compared."""
    return t.dtype != dtype or not t.is_contiguous()


class Sender:
    """The trainer's side of a sync stream.

    Args:
        model: an ``nn.Module`` (parameters and persistent buffers, as ``state_dict`` names them) or a
            mapping of names to tensors; read again at every :meth:`diff`, so it may be trained in place.
        dtype: send every tensor cast to this dtype (e.g. ``torch.bfloat16`` for a trainer that keeps fp32
            masters and serves bf16 weights); None sends each tensor in its own dtype.
        level: zstd level of the patch streams.
        positions: ``"exponent"`` (default) codes where bf16/fp16/fp32 tensors changed as gaps within
            groups of elements whose old values share an exponent (where changes concentrate: a step moves
            small weights by more ULPs), at the cost of one pass over the old values on both sides;
            ``"flat"`` codes plain gaps. Tensors on a GPU always use flat positions.

    The snapshot (one copy of the weights in the sent dtype, on each tensor's own device) is the state of
    the last patch; :meth:`diff` compares the model against it, on the device, and moves only the changed
    positions and values to the host.
    """

    def __init__(
        self, model: Any, *, dtype: torch.dtype | None = None, level: int = LEVEL, positions: str = "exponent"
    ) -> None:
        if positions not in ("exponent", "flat"):
            raise ValueError(f"positions must be 'exponent' or 'flat', not {positions!r}")
        self._model = model
        self.positions = positions
        self.dtype = dtype
        self.level = level
        self.stream = secrets.token_hex(8)  #: random id of this sender's stream
        self.version = 0  #: the version of the last patch (0: the starting weights)
        self._bitmap = np.empty(0, dtype=np.uint8)
        self._values: dict[int, np.ndarray] = {}
        self._take(*self._read())

    # -- state ------------------------------------------------------------------------------------------

    def _read(self) -> tuple[dict[str, torch.Tensor], dict[str, str], Layout]:
        tensors, aliases = canonical(named_tensors(self._model))
        return tensors, aliases, layout_of(tensors, aliases, self.dtype)

    def _take(self, tensors: dict[str, torch.Tensor], aliases: dict[str, str], layout: Layout) -> None:
        """Snapshot ``tensors`` (a fresh copy, cast to the sent dtype) and hash them."""
        self._snap: dict[str, torch.Tensor] = {}
        for name, t in tensors.items():
            snap = torch.empty(t.shape, dtype=self.dtype or t.dtype, device=t.device)
            with torch.no_grad():
                snap.copy_(t)
            self._snap[name] = snap
        self._aliases = aliases
        self._layout = layout
        self._hash = {n: tensor_hash(s) for n, s in self._snap.items()}
        self._digest = self._model_digest()

    def _model_digest(self) -> str:
        return model_digest({n: (self._layout.tensors[n][0], self._layout.tensors[n][1], h)
                             for n, h in self._hash.items()})  # fmt: skip

    def digest(self) -> Digest:
        """The digest of the model's current weights (in the sent dtype): a full pass over them."""
        tensors, aliases, layout = self._read()
        hashes = {n: tensor_hash(t, self.dtype) for n, t in tensors.items()}
        model = model_digest({n: (layout.tensors[n][0], layout.tensors[n][1], h) for n, h in hashes.items()})
        return Digest(model, {n: hex64(h) for n, h in hashes.items()})

    @property
    def snapshot(self) -> Mapping[str, torch.Tensor]:
        """The weights as of the last patch (read-only by contract: the next diff compares against it)."""
        return self._snap

    # -- patches ----------------------------------------------------------------------------------------

    def _scratch(self, n: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(bitmap for diff_pack, the same padded to whole 8-byte words with zeros, values)``."""
        words = (n + 63) // 64
        if self._bitmap.shape[0] < 8 * words:
            self._bitmap = np.empty(8 * max(words, CHUNK // 64), dtype=np.uint8)
        padded = self._bitmap[: 8 * words]
        padded[(n + 7) // 8 :] = 0
        v = self._values.get(dtype.itemsize)
        if v is None or v.shape[0] < n:
            v = self._values[dtype.itemsize] = np.empty(max(n, CHUNK), dtype=dtype)
        return padded[: (n + 7) // 8], padded, v[:n].view(dtype)

    @staticmethod
    def _cast_blocks(t: torch.Tensor, dtype: torch.dtype) -> Iterator[tuple[int, torch.Tensor]]:
        """``(start, contiguous block in dtype)`` of :data:`COMPARE_CHUNK` elements; casts run on
        :data:`~subnetscope.sync.state.CHUNK`-element blocks (one torch call per 64K elements cost 10x)."""
        for start, blk in blocks(t, CHUNK if blk_needs_cast(t, dtype) else COMPARE_CHUNK):
            cur = blk if blk.dtype == dtype else blk.to(dtype)
            for a in range(0, cur.shape[0], COMPARE_CHUNK):
                yield start + a, cur[a : a + COMPARE_CHUNK]

    def _changes(self, t: torch.Tensor, snap: torch.Tensor, by_exp: bool) -> tuple[np.ndarray, ...]:
        """Positions, old bits and new bits (host arrays) where ``t`` (cast) differs from ``snap`` (and,
        ``by_exp``, ranks and exponent buckets); the snapshot is updated there."""
        flat_snap = bits_view(snap).view(-1)
        parts: list[tuple[np.ndarray, ...]] = []
        cnt = np.zeros(256, dtype=np.int64)
        dname = wire_name(snap.dtype)
        for start, cur in self._cast_blocks(t.detach(), snap.dtype):
            sb = flat_snap[start : start + cur.shape[0]]
            cb = bits_view(cur)
            if sb.device.type == "cpu" and not TORCH_COMPARE:
                a, b = sb.numpy(), cb.numpy()
                bitmap, padded, values = self._scratch(a.shape[0], a.dtype)
                k = dk.diff_pack(a, b, bitmap, values)
                if not k and not by_exp:
                    continue
                new = values[:k].copy()
                if by_exp:
                    local, old, rank, bkt = kernels.rank_take(
                        padded,
                        a.view(f"u{a.dtype.itemsize}"),
                        new.view(f"u{a.dtype.itemsize}"),
                        k,
                        cnt,
                        dname,
                    )
                    if k:
                        parts.append((local + start, old, new, rank, bkt))
                    continue
                local, old = kernels.take(padded, a, new, k)
            else:
                pos = (sb != cb).nonzero().squeeze(1)
                if not pos.numel():
                    continue
                new_t = cb[pos]
                old_t = sb[pos]
                sb[pos] = new_t
                local, old, new = pos.cpu().numpy(), old_t.cpu().numpy(), new_t.cpu().numpy()
            parts.append((local + start, old, new))
        u = np.dtype(f"u{snap.element_size()}")
        if not parts:
            e = np.zeros(0, dtype=np.int64)
            return (e, np.zeros(0, dtype=u), np.zeros(0, dtype=u)) + ((e, e) if by_exp else ())
        cols = [
            np.concatenate([p[i] for p in parts]) if len(parts) > 1 else parts[0][i]
            for i in range(len(parts[0]))
        ]
        cols[1], cols[2] = cols[1].view(u), cols[2].view(u)
        return tuple(cols)

    def _check_structure(self) -> dict[str, torch.Tensor]:
        tensors, aliases, layout = self._read()
        if layout != self._layout:
            raise SyncStructureError(
                f"the model changed structure since version {self.version}: "
                f"{self._layout.describe_difference(layout)}",
                "send an anchor with sender.full() (receivers must then hold the new structure)",
            )
        return tensors

    def diff(self, meta: dict[str, Any] | None = None) -> Patch:
        """What changed since the last patch (or since construction), as the next version's patch.

        ``meta``: JSON-serialisable data carried along (e.g. ``{"step": 12}``).
        """
        tensors = self._check_structure()
        parent_digest = self._digest
        entries: list[TensorEntry] = []
        pos8, posx, codes, esc, table = [], [], [], [], []
        for name, t in tensors.items():
            snap = self._snap[name]
            dname = wire_name(snap.dtype)
            host = snap.device.type == "cpu" and not TORCH_COMPARE
            by_exp = self.positions == "exponent" and dname in kernels.EXPONENT and host
            got = self._changes(t, snap, by_exp)
            idx, old, new = got[:3]
            x = e = nt = 0
            mode = FLAT
            if idx.shape[0]:
                pos = None
                if by_exp:
                    order, pos, tab = kernels.bucket_order(idx, got[3], got[4])
                    idx, old, new = idx[order], old[order], new[order]
                    table.append(tab)
                    nt, mode = len(tab), BY_EXPONENT
                small, extra, c, es, self._hash[name] = kernels.encode(
                    idx, old, new, snap.element_size(), is_float(dname), self._hash[name], pos=pos
                )
                pos8.append(small)
                posx.append(extra)
                codes.append(c)
                esc.append(es)
                x, e = len(extra), len(es)
            entries.append(
                TensorEntry(
                    name, dname, tuple(snap.shape), hex64(self._hash[name]), int(idx.shape[0]), x, e, mode, nt
                )
            )
        self._digest = self._model_digest()
        streams = []
        for parts in (pos8, posx, codes, esc, table):
            raw = b"".join(parts)
            codec, stored = pack(raw, self.level)
            streams.append((codec, stored, len(raw)))
        self.version += 1
        return Patch("diff", self.stream, self.version, self.version - 1, parent_digest, self._digest, entries,
                     dict(self._aliases), streams, dict(meta or {}))  # fmt: skip

    def full(self, meta: dict[str, Any] | None = None) -> Patch:
        """An anchor: every value of the model's current weights, as the next version. Any receiver with
        the same tensor names, shapes and dtypes can start from it. If the model changed structure, the
        sender adopts the new one here."""
        tensors, aliases, layout = self._read()
        if layout != self._layout:
            self._take(tensors, aliases, layout)
        else:
            for name, t in tensors.items():
                with torch.no_grad():
                    self._snap[name].copy_(t)
                self._hash[name] = tensor_hash(self._snap[name])
            self._digest = self._model_digest()
        entries, streams = [], []
        for name, snap in self._snap.items():
            raw = to_planes(bits_view(snap).reshape(-1).cpu().numpy())
            codec, stored = pack(raw, self.level)
            streams.append((codec, stored, len(raw)))
            entries.append(
                TensorEntry(
                    name, wire_name(snap.dtype), tuple(snap.shape), hex64(self._hash[name]), snap.numel()
                )
            )
        self.version += 1
        return Patch("full", self.stream, self.version, None, None, self._digest, entries, dict(self._aliases),
                     streams, dict(meta or {}))  # fmt: skip
