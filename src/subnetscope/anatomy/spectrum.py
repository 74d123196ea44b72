"""Where an update falls relative to the base weight's principal components ("The Path Not Taken",
arXiv 2511.08567), per matrix, on demand (``--spectrum K``).

- **Enrichment**: the entries of the rank-K reconstruction ``W0_K`` of the base weight with the largest
  magnitudes form the *principal mask* (as many entries as the update changed, unless
  ``principal_density`` says otherwise). ``update_in_principal`` is the share of the principal mask that
  was updated; a random mask of the same density gets ``update_density`` in expectation (and
  ``update_in_random`` on one seeded draw). ``enrichment = update_in_principal / update_density``: 1 means
  no preference, > 1 updates concentrate on principal entries, < 1 they avoid them. ``mass_enrichment``
  does the same with the share of ``Σ|Δ|`` that falls on the mask.
- **Principal angles** between the top-K left (and right) singular subspaces of base and target, in
  degrees, computed as ``arcsin`` of the singular values of ``U1 - U0 (U0ᵀ U1)`` (accurate for the tiny
  angles finetuning produces, where ``arccos`` of cosines near 1 is not).

The top-K singular vectors come from the float64 eigendecomposition of the smaller-side Gram matrix
(exact and deterministic; a randomised SVD's error would be larger than the angles it should measure).
GPU (torch) when ``device`` is a CUDA device.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import UsageError


def top_singular(w: np.ndarray, k: int, device: str = "cpu") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(U_k, s_k, V_k)``: the top-``k`` singular triplets of ``w`` (float64, descending ``s``)."""
    m, n = w.shape
    k = min(k, m, n)
    if device != "cpu":
        import torch

        wt = torch.from_numpy(np.ascontiguousarray(w)).to(device).double()
        g = wt.T @ wt if m >= n else wt @ wt.T
        lam_t, vec_t = torch.linalg.eigh(g)
        lam, vec = lam_t[-k:].flip(0), vec_t[:, -k:].flip(1)
        s_t = lam.clamp_min(0).sqrt()
        safe = torch.where(s_t > 0, s_t, torch.ones_like(s_t))
        other = (wt @ vec if m >= n else wt.T @ vec) / safe
        u_t, v_t = (other, vec) if m >= n else (vec, other)
        return u_t.cpu().numpy(), s_t.cpu().numpy(), v_t.cpu().numpy()
    w64 = w.astype(np.float64)
    gn = w64.T @ w64 if m >= n else w64 @ w64.T
    lam_n, vec_n = np.linalg.eigh(gn)
    lam_n, vec_n = lam_n[::-1][:k], vec_n[:, ::-1][:, :k]
    s = np.sqrt(np.maximum(lam_n, 0.0))
    safe_n = np.where(s > 0, s, 1.0)
    if m >= n:
        return (w64 @ vec_n) / safe_n, s, vec_n
    return vec_n, s, (w64.T @ vec_n) / safe_n


def principal_angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Principal angles (degrees, ascending) between the column spaces of orthonormal ``a`` and ``b``."""
    resid = b - a @ (a.T @ b)
    sines = np.linalg.svd(resid, compute_uv=False)[::-1]
    out: np.ndarray = np.degrees(np.arcsin(np.clip(sines, 0.0, 1.0)))
    return out


def spectrum_metrics(
    w0: np.ndarray,
    w1: np.ndarray,
    k: int,
    *,
    delta: np.ndarray | None = None,
    principal_density: float | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
    """Enrichment of the update on the principal entries of ``w0`` and principal angles (see module doc).

    ``w0``/``w1``: base and target as float32 2-D arrays; ``delta``: their float32 difference (computed when
    not given); ``principal_density``: density of the principal mask (default: the update's).
    """
    from .. import validate

    validate.int_range(k, "k")
    if principal_density is not None and not (
        validate.positive_real(principal_density, "principal_density") <= 1
    ):
        raise UsageError(f"principal_density={principal_density!r} is above 1", "give a share in (0, 1]")
    if w0.shape != w1.shape or w0.ndim != 2:
        raise UsageError(f"spectrum needs two matrices of one shape, got {w0.shape} and {w1.shape}", "")
    if k < 1:
        raise UsageError(f"spectrum k={k} must be at least 1", "use e.g. `k=16`")
    d = (w1 - w0) if delta is None else delta
    m, n = w0.shape
    kk = min(k, m, n)
    u0, s0, v0 = top_singular(w0, kk, device)
    u1, _, v1 = top_singular(w1, kk, device)
    out: dict[str, Any] = {
        "k": kk,
        "left_angles_deg": [float(x) for x in principal_angles(u0, u1)],
        "right_angles_deg": [float(x) for x in principal_angles(v0, v1)],
    }
    changed = (d != 0).reshape(-1)
    numel = changed.size
    nchanged = int(np.count_nonzero(changed))
    density = nchanged / numel if numel else 0.0
    out["update_density"] = density
    if nchanged == 0:
        out.update(principal_density=0.0, update_in_principal=None, update_in_random=None, enrichment=None,
                   mass_on_principal=None, mass_enrichment=None)  # fmt: skip
        return out
    pd = density if principal_density is None else float(principal_density)
    if not 0 < pd <= 1:
        raise UsageError(f"principal density {pd} must be in (0, 1]", "use e.g. 0.1")
    count = max(1, min(numel, round(pd * numel)))
    recon = ((u0 * s0) @ v0.T).reshape(-1)  # rank-k reconstruction of the base
    mag = np.abs(recon)
    top = np.argpartition(mag, numel - count)[numel - count :] if count < numel else np.arange(numel)
    hits = int(np.count_nonzero(changed[top]))
    rng = np.random.default_rng(seed)
    rand = rng.choice(numel, size=count, replace=False) if numel <= 1 << 24 else rng.integers(0, numel, count)
    absd = np.abs(d.reshape(-1)).astype(np.float64)
    mass = float(absd[top].sum() / absd.sum())
    real_pd = count / numel
    out.update(
        principal_density=real_pd,
        update_in_principal=hits / count,
        update_in_random=int(np.count_nonzero(changed[rand])) / count,
        enrichment=(hits / count) / density,
        mass_on_principal=mass,
        mass_enrichment=mass / real_pd,
    )
    return out
