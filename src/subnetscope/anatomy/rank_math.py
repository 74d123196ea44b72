"""The arithmetic of ``rank``: Gram matrices of float32 deltas (blocked, float64), their eigenvalues on the
CPU or a CUDA device, and ranks at multiples of the tolerance (see :mod:`subnetscope.anatomy.rank` for why
this counts what :func:`torch.linalg.matrix_rank` counts)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import validate
from ..dtypes import DType, decode
from ..errors import UsageError
from ..io.reader import ChunkReader, FileHandles
from ..io.safetensors_header import TensorInfo
from ..plan import Pair
from ..results.rank import DEFAULT_RTOL_MULTIPLIERS, EPS32, MatrixRank

#: float64 elements per block when the Gram matrix is accumulated (64 MiB)
_BLOCK_ELEMENTS = 8 << 20


def resolve_device(device: str | None) -> str:
    """``"auto"``/None → ``"cuda"`` when torch sees a GPU, else ``"cpu"``; otherwise checked and returned."""
    if device in (None, "auto"):
        # skip the (slow) torch import on machines without an NVIDIA driver
        if not os.path.exists("/proc/driver/nvidia/version"):
            return "cpu"
        try:
            import torch
        except ImportError:
            return "cpu"
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return "cpu"
    if device.startswith("cuda"):
        try:
            import torch
        except ImportError:
            raise UsageError(
                f"device {device!r} needs torch", "pip install torch, or use `device='cpu'`"
            ) from None
        if not torch.cuda.is_available():
            raise UsageError(
                f"device {device!r}: torch sees no CUDA GPU", "use `device='cpu'` or `device='auto'`"
            )
        return device
    raise UsageError(f"unknown device {device!r}", "use auto, cpu or cuda[:N]")


def gram(delta: np.ndarray) -> np.ndarray:
    """float64 Gram matrix of the smaller side of a 2-D float array, accumulated in column/row blocks."""
    m, n = delta.shape
    if m >= n:
        g = np.zeros((n, n), dtype=np.float64)
        step = max(1, _BLOCK_ELEMENTS // max(n, 1))
        for r in range(0, m, step):
            blk = delta[r : r + step].astype(np.float64)
            g += blk.T @ blk
        return g
    g = np.zeros((m, m), dtype=np.float64)
    step = max(1, _BLOCK_ELEMENTS // max(m, 1))
    for c in range(0, n, step):
        blk = delta[:, c : c + step].astype(np.float64)
        g += blk @ blk.T
    return g


def gram_eigenvalues(g: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Eigenvalues (ascending, float64, clamped at 0) of a symmetric Gram matrix."""
    if device != "cpu":
        import torch

        lam_t = torch.linalg.eigvalsh(torch.from_numpy(g).to(device))
        lam = lam_t.cpu().numpy()
    else:
        lam = np.linalg.eigvalsh(g)
    out: np.ndarray = np.maximum(lam, 0.0)
    return out


def _gram_torch(delta: np.ndarray, device: str) -> np.ndarray:
    import torch

    d = torch.from_numpy(np.ascontiguousarray(delta)).to(device).double()
    g = d.T @ d if d.shape[0] >= d.shape[1] else d @ d.T
    out: np.ndarray = g.cpu().numpy()
    return out


def rank_from_gram(
    g: np.ndarray, rows: int, cols: int, rtol_multipliers: Sequence[float] = DEFAULT_RTOL_MULTIPLIERS,
    device: str = "cpu", name: str = "",
) -> MatrixRank:  # fmt: skip
    """Rank statistics from the float64 Gram matrix of the smaller side of a ``rows × cols`` delta."""
    lam = gram_eigenvalues(g, device)
    fro2 = float(np.trace(g))
    return _from_eigenvalues(lam, fro2, rows, cols, rtol_multipliers, name)


def _from_eigenvalues(
    lam: np.ndarray, fro2: float, rows: int, cols: int, mults: Sequence[float], name: str
) -> MatrixRank:
    sig = np.sqrt(lam)
    smax = float(sig[-1]) if sig.size else 0.0
    tol = smax * max(rows, cols) * EPS32
    if smax == 0.0:
        return MatrixRank(name, rows, cols, 0, 0.0, 0.0, 0.0, 0.0, [0] * len(mults), 0.0)
    rank = int(np.count_nonzero(sig > tol))
    ranks_at = [int(np.count_nonzero(sig > m * tol)) for m in mults]
    kept = sig[sig > tol]
    p = kept / kept.sum()
    erank = float(np.exp(-np.sum(p * np.log(p))))
    return MatrixRank(name, rows, cols, rank, smax, tol, fro2 / (smax * smax), erank, ranks_at, float(sig[0]))


def delta_rank(
    delta: Any,
    rtol_multipliers: Sequence[float] = DEFAULT_RTOL_MULTIPLIERS,
    device: str = "cpu",
    name: str = "",
) -> MatrixRank:
    """Rank statistics of one 2-D float32 delta (numpy array or torch tensor); ``rank`` equals
    ``torch.linalg.matrix_rank(delta)`` (see the module docstring for the argument)."""
    rtol_multipliers = validate.positive_reals(rtol_multipliers, "rtol_multipliers")
    d = delta.detach().cpu().numpy() if hasattr(delta, "detach") else np.asarray(delta)
    if d.ndim != 2:
        raise UsageError(f"rank needs a 2-D matrix, got shape {list(d.shape)}", "pass a weight matrix")
    d = d.astype(np.float32, copy=False)
    g = _gram_torch(d, device) if device != "cpu" else gram(d)
    return rank_from_gram(g, d.shape[0], d.shape[1], rtol_multipliers, device, name)


# -- reading checkpoints ----------------------------------------------------------------------------------------


def to_float32(bits: np.ndarray, dtype: DType) -> np.ndarray:
    """Values of raw ``bits`` as float32 (exact for bf16/fp16/fp8/fp32)."""
    if dtype.code == "BF16":
        out: np.ndarray = (bits.astype(np.uint32) << 16).view(np.float32)
        return out
    if dtype.code == "F16":
        return bits.view(np.float16).astype(np.float32)
    if dtype.code == "F32":
        return bits.view(np.float32).copy()
    return decode(bits, dtype).astype(np.float32)


def _values(r: ChunkReader, info: TensorInfo, start: int, count: int, wide: bool) -> np.ndarray:
    bits = r.read(info, start, count)
    return decode(bits, info.dtype) if wide else to_float32(bits, info.dtype)


def read_delta(pair: Pair, handles: FileHandles, rows: slice | None = None) -> np.ndarray:
    """The float32 delta ``target - base`` of a 2-D pair (its shared rows, or the row range ``rows``)."""
    cols = pair.target.shape[1]
    nrows = pair.compare_numel // cols if cols else 0
    r0, r1, _ = (rows or slice(0, nrows)).indices(nrows)
    count = (r1 - r0) * cols
    wide = "F64" in (pair.base.dtype.code, pair.target.dtype.code)
    ra, rb = ChunkReader(handles, count * 8), ChunkReader(handles, count * 8)
    a = _values(ra, pair.base, r0 * cols, count, wide)
    b = _values(rb, pair.target, r0 * cols, count, wide)
    d = b - a
    return d.astype(np.float32, copy=False).reshape(r1 - r0, cols)


def read_matrix(info: TensorInfo, rows: int, handles: FileHandles) -> np.ndarray:
    """The first ``rows`` rows of a 2-D tensor as float32."""
    cols = info.shape[1]
    r = ChunkReader(handles, rows * cols * info.dtype.itemsize)
    return to_float32(r.read(info, 0, rows * cols), info.dtype).reshape(rows, cols)


def pair_gram(pair: Pair, handles: FileHandles) -> tuple[np.ndarray, int, int]:
    """(float64 Gram matrix of the smaller side, rows, cols) of a pair's float32 delta; tall matrices are
    read in row blocks, so their delta is never held whole."""
    cols = pair.target.shape[1]
    rows = pair.compare_numel // cols
    if rows < cols:
        return gram(read_delta(pair, handles)), rows, cols
    g = np.zeros((cols, cols), dtype=np.float64)
    step = max(1, min(rows, _BLOCK_ELEMENTS // cols))
    buf = np.empty((step, cols), dtype=np.float64)  # reused: a fresh 64 MiB block per step page-faults
    for r in range(0, rows, step):
        d = read_delta(pair, handles, slice(r, min(rows, r + step)))
        blk = buf[: d.shape[0]]
        np.copyto(blk, d)
        g += blk.T @ blk
    return g, rows, cols
