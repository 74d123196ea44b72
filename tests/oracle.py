"""Brute-force reference implementations used to check the fast paths (load everything, compute naively)."""

from __future__ import annotations

import numpy as np
import torch

from subnetscope.dtypes import DTYPES, decode

TORCH_DT = {
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "F32": torch.float32,
    "F64": torch.float64,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}


def exact_counts(a_bits: np.ndarray, b_bits: np.ndarray, code: str, tols: list[float]) -> dict:
    """Counts by exact float64 arithmetic, element by element in numpy."""
    dt = DTYPES[code]
    av, bv = decode(a_bits, dt), decode(b_bits, dt)
    identical = a_bits == b_bits
    with np.errstate(invalid="ignore"):
        d = np.abs(bv - av)
    unchanged = [int(np.count_nonzero(identical | (d <= t))) for t in tols]
    return {
        "identical": int(identical.sum()),
        "unchanged": unchanged,
        "nonfinite_base": int((~np.isfinite(av)).sum()),
        "nonfinite_target": int((~np.isfinite(bv)).sum()),
        "changed_mask": [~(identical | (d <= t)) for t in tols],
    }


def reference_counts(a_bits: np.ndarray, b_bits: np.ndarray, code: str, tols: list[float]) -> list[int]:
    """The authors' arithmetic, literally: delta in the stored dtype, torch.isclose(delta, 0, atol=tol)."""
    tdt = TORCH_DT[code]
    bits_t = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[DTYPES[code].itemsize]
    sa = torch.from_numpy(
        a_bits.astype(a_bits.dtype.newbyteorder("=")).view(f"i{a_bits.itemsize}")
        if a_bits.itemsize > 1
        else a_bits
    )
    sb = torch.from_numpy(
        b_bits.astype(b_bits.dtype.newbyteorder("=")).view(f"i{b_bits.itemsize}")
        if b_bits.itemsize > 1
        else b_bits
    )
    ta, tb = sa.to(bits_t).view(tdt), sb.to(bits_t).view(tdt)
    if code.startswith("F8"):
        delta = (tb.float() - ta.float()).to(tdt)
    else:
        delta = tb - ta
    identical = torch.from_numpy(a_bits == b_bits)
    out = []
    for t in tols:
        if code.startswith("F8"):
            close = torch.isclose(
                delta.float(),
                torch.zeros_like(delta.float()),
                atol=float(torch.tensor(t).to(tdt).float()),
                rtol=0,
            )
        else:
            close = torch.isclose(delta, torch.zeros_like(delta), atol=t)
        out.append(int((close | identical).sum()))
    return out
