"""FP8 weights with block scales (DeepSeek-V3 style): sparsity of the dequantized values, changed scales.

A block-scaled checkpoint stores each large matrix ``X.weight`` as FP8 codes (``F8_E4M3`` or ``F8_E5M2``,
shape ``[rows, cols]``) beside ``X.weight_scale_inv`` (``F32``, shape ``[ceil(rows/b0), ceil(cols/b1)]``);
the weight's value is ``code × scale_inv[i // b0, j // b1]`` (DeepSeek's naming: despite the name, the scale
is multiplied). ``X.weight_scale`` (compressed-tensors / FBGEMM naming, also multiplied) is accepted too, and
per-tensor (one element) and per-row (``[rows]`` or ``[rows, 1]``) scales are blocks of the whole matrix or
of one row. The block size comes from ``config.json``'s ``quantization_config.weight_block_size`` when it
fits the shapes, else it is inferred: the value (128 when possible, else a power of two, else the smallest)
that agrees with every scaled weight's shapes.

The ordinary pass already compares the *stored codes* (bit identity and value of each code). This module
adds, in the same pass, a :class:`DequantCounter` consumer that compares the *dequantized values*: a code
may change while its value does not (its block's scale moved the other way) and a scale change moves a
whole block. :func:`attach` then gives the report a section ``"fp8"`` with both views side by side, the
dequantized model (every tensor but the scales, FP8 weights by value: what a bf16 conversion would be
compared on) and the scale tensors counted on their own. Semantics:

- exact: ``|code_t × s_t − code_b × s_b|`` in float64 (both products are exact in float64);
- reference: the values DeepSeek's ``fp8_cast_bf16.py`` writes (product in float32, rounded to bf16), then
  the authors' bf16 rule (``torch.isclose(delta_bf16, 0, atol=tol)``).

Weights on one side only, of another shape or dtype, or without a matching scale on both sides are listed
under ``fp8.skipped`` with the reason; FP8 against bf16 (one side dequantized) is not supported.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .dtypes import DTYPES, decode, reference_threshold
from .io.checkpoint import Checkpoint
from .io.reader import read_tensor_bits
from .kernels.fp8 import count_dequant
from .plan import Pair, Plan
from .stats import Counts

FP8_CODES = ("F8_E4M3", "F8_E5M2")
#: scale tensor name = weight name + one of these
SCALE_SUFFIXES = ("_scale_inv", "_scale")
REPORT_KEY = "fp8"  #: the report section
TENSOR_KEY = "fp8_dequant"  #: each FP8 weight's entry in the report's tensor list
PREFERRED_BLOCK = 128


@dataclass(frozen=True)
class ScaledWeight:
    """One FP8 weight present on both sides, with its scale tensors and block size."""

    weight: Pair
    scale: Pair
    block: tuple[int, int]  #: (rows, cols) of one scale block

    @property
    def grid(self) -> tuple[int, int]:
        """Shape of the scale grid."""
        rows, cols = self.weight.target.shape
        return -(-rows // self.block[0]), -(-cols // self.block[1])


@dataclass
class Fp8Plan:
    """The block-scaled weights of a plan and how their blocks were found."""

    weights: list[ScaledWeight]
    block_source: str  #: ``config`` (quantization_config.weight_block_size), ``inferred`` or ``none``
    config_block: tuple[int, int] | None
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def scale_names(self) -> set[str]:
        """Names of the scale tensors of the matched weights."""
        return {w.scale.name for w in self.weights}


def config_block_size(ck: Checkpoint) -> tuple[int, int] | None:
    """``quantization_config.weight_block_size`` of a checkpoint's config, when it is a pair of ints."""
    q = ck.config().get("quantization_config")
    bs = q.get("weight_block_size") if isinstance(q, dict) else None
    if isinstance(bs, list) and len(bs) == 2 and all(isinstance(x, int) and x > 0 for x in bs):
        return int(bs[0]), int(bs[1])
    return None


def _grid_shape(shape: tuple[int, ...], rows: int) -> tuple[int, int] | None:
    """A scale tensor's shape as a 2-D grid, or None when it cannot be one."""
    if len(shape) == 2:
        return shape[0], shape[1]
    if len(shape) == 0 or shape == (1,):
        return 1, 1
    if len(shape) == 1 and shape[0] == rows:
        return rows, 1
    return None


def _valid(n: int, grid: int) -> tuple[int, float]:
    """Range [lo, hi] of block sizes b with ceil(n / b) == grid (empty when lo > hi)."""
    if grid <= 0 or n <= 0:
        return 1, 0
    lo = -(-n // grid)
    hi: float = math.inf if grid == 1 else (n - 1) // (grid - 1)
    return lo, hi


def _pick(lo: int, hi: float) -> int:
    if lo <= PREFERRED_BLOCK <= hi:
        return PREFERRED_BLOCK
    p = 1 << max(0, lo - 1).bit_length()  # smallest power of two >= lo
    return p if p <= hi else lo


def find_scaled(plan: Plan) -> Fp8Plan:
    """Match every FP8 weight pair of ``plan`` with its scale pair and find the block size."""
    pairs = {p.name: p for p in plan.pairs}
    cfg = config_block_size(plan.target) or config_block_size(plan.base)
    cands: list[tuple[Pair, Pair, tuple[int, int]]] = []
    skipped: list[dict[str, str]] = []
    names = set(plan.base.tensors) | set(plan.target.tensors)
    for name in sorted(names):
        info = plan.target.tensors.get(name) or plan.base.tensors.get(name)
        assert info is not None
        if info.dtype.code not in FP8_CODES:
            continue
        scale_name = next((name + s for s in SCALE_SUFFIXES if (name + s) in names), None)
        if scale_name is None:
            continue  # FP8 without block scales: the stored-code view is all there is
        w, s = pairs.get(name), pairs.get(scale_name)
        why = None
        if w is None:
            why = "weight not comparable on both sides (see findings)"
        elif not w.same_dtype or w.base.shape != w.target.shape or len(w.target.shape) != 2:
            why = "weight changed dtype or shape, or is not 2-D"
        elif (
            s is None
            or s.base.shape != s.target.shape
            or not (s.base.dtype.is_float and s.target.dtype.is_float)
        ):
            why = f"scale {scale_name} missing on one side, resized or not a float tensor"
        else:
            grid = _grid_shape(s.target.shape, w.target.shape[0])
            if grid is None:
                why = f"scale {scale_name} has shape {list(s.target.shape)}, not a block grid"
            else:
                cands.append((w, s, grid))
        if why:
            skipped.append({"tensor": name, "reason": why})
    # one block size that fits every weight, if there is one (config first)
    rlo, rhi, clo, chi = 1, math.inf, 1, math.inf
    for w, _s, (gr, gc) in cands:
        rows, cols = w.target.shape
        lo, hi = _valid(rows, gr)
        rlo, rhi = max(rlo, lo), min(rhi, hi)
        lo, hi = _valid(cols, gc)
        clo, chi = max(clo, lo), min(chi, hi)
    common = (_pick(rlo, rhi), _pick(clo, chi)) if cands and rlo <= rhi and clo <= chi else None
    source = "none"
    out: list[ScaledWeight] = []
    for w, s, (gr, gc) in cands:
        rows, cols = w.target.shape
        if cfg is not None and -(-rows // cfg[0]) == gr and -(-cols // cfg[1]) == gc:
            block, src = cfg, "config"
        elif common is not None:
            block, src = common, "inferred"
        else:
            lr, hr = _valid(rows, gr)
            lc, hc = _valid(cols, gc)
            if lr > hr or lc > hc:
                skipped.append(
                    {"tensor": w.name, "reason": f"scale grid {[gr, gc]} does not fit shape {[rows, cols]}"}
                )
                continue
            block, src = (_pick(lr, hr), _pick(lc, hc)), "inferred"
        if src == "inferred":  # a block larger than the matrix indexes the same: report the matrix
            block = (min(block[0], rows), min(block[1], cols))
        source = src if source in ("none", src) else "mixed"
        out.append(ScaledWeight(w, s, block))
    return Fp8Plan(out, source, cfg, skipped)


# ---------------------------------------------------------------------------------------------------------
# the consumer


class DequantCounter:
    """:class:`~subnetscope.measures.compare.ChunkConsumer` counting the dequantized values of FP8 weights.

    Picklable (process and Ray workers get a copy): the per-tensor scale cache is rebuilt on each side.
    """

    key = TENSOR_KEY

    def __init__(self, weights: Iterable[ScaledWeight], tolerances: list[float], semantics: str) -> None:
        self.weights = {w.weight.name: w for w in weights}
        self.tolerances = [float(t) for t in tolerances]
        self.semantics = semantics
        bf16 = DTYPES["BF16"]
        ref = semantics == "reference"
        self._thr = np.array(
            [reference_threshold(t, bf16) if ref else t for t in self.tolerances], dtype=np.float64
        )
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["_cache"] = {}
        d.pop("_lock")
        return d

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.__dict__.update(d)
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        """What this consumer computes (part of a resumable run's key)."""
        return {"semantics": self.semantics, "tolerances": self.tolerances,
                "weights": {n: [w.scale.name, *w.block] for n, w in sorted(self.weights.items())}}  # fmt: skip

    def _scales(self, sw: ScaledWeight) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            got = self._cache.get(sw.weight.name)
        if got is None:
            s = sw.scale
            got = (
                decode(read_tensor_bits(s.base), s.base.dtype).astype(np.float64),
                decode(read_tensor_bits(s.target), s.target.dtype).astype(np.float64),
            )
            with self._lock:
                self._cache[sw.weight.name] = got
        return got

    def chunk(self, pair: Pair, start: int, base_bits: np.ndarray, target_bits: np.ndarray) -> Any:
        """Counters of one chunk (None for tensors that are not block-scaled FP8)."""
        sw = self.weights.get(pair.name)
        if sw is None:
            return None
        sa, sb = self._scales(sw)
        out = np.zeros(len(self._thr) + 3, dtype=np.int64)
        cols = pair.target.shape[1]
        count_dequant(base_bits, target_bits, pair.target.dtype.code, sa, sb, start, cols, sw.block,
                      self._thr, self.semantics == "reference", out)  # fmt: skip
        changed = int(np.count_nonzero(sa.view(np.uint64) != sb.view(np.uint64))) if start == 0 else -1
        return out, changed

    def merge(self, pair: Pair, state: Any, partial: Any) -> Any:
        """Add a chunk's counters."""
        if partial is None:
            return state
        if state is None:
            return partial[0].copy(), partial[1]
        return state[0] + partial[0], max(state[1], partial[1])

    def finish(self, pair: Pair, state: Any) -> dict[str, Any] | None:
        """The tensor's dequantized counts (None for other tensors; :func:`attach` drops those)."""
        sw = self.weights.get(pair.name)
        if sw is None:
            return None
        with self._lock:
            self._cache.pop(pair.name, None)
        k = len(self._thr)
        arr = state[0] if state is not None else np.zeros(k + 3, dtype=np.int64)
        gr, gc = sw.grid
        return {
            "scale": sw.scale.name,
            "block": list(sw.block),
            "numel": pair.numel,
            "identical": int(arr[k]),
            "unchanged": [int(x) for x in arr[:k]],
            "nonfinite_base": int(arr[k + 1]),
            "nonfinite_target": int(arr[k + 2]),
            "scale_blocks": gr * gc,
            "scale_blocks_changed": max(0, state[1]) if state is not None else 0,
        }


def consumer_for(
    plan: Plan, tolerances: list[float], semantics: str
) -> tuple[DequantCounter | None, Fp8Plan]:
    """The dequantizing consumer for ``plan`` (None when it has no block-scaled FP8 weight) and the match."""
    fplan = find_scaled(plan)
    if not fplan.weights:
        return None, fplan
    return DequantCounter(fplan.weights, tolerances, semantics), fplan


# ---------------------------------------------------------------------------------------------------------
# the report section


def counts_of(d: dict[str, Any]) -> Counts:
    """The :class:`~subnetscope.stats.Counts` of one ``fp8`` section entry (its JSON form)."""
    return Counts(int(d["numel"]), int(d["identical"]), [int(x) for x in d["unchanged"]],
                  int(d.get("nonfinite_base", 0)), int(d.get("nonfinite_target", 0)))  # fmt: skip


def attach(report: Any, fplan: Fp8Plan) -> None:
    """Add the ``fp8`` section to ``report`` (a :class:`~subnetscope.results.schema.Report`).

    Drops the consumer's empty entries from non-FP8 tensors, then sums: the stored codes of the scaled
    weights, their dequantized values, the dequantized model (FP8 weights by value plus every other
    tensor except the scales) and the scale tensors on their own.
    """
    ntol = len(report.tolerances)
    codes, deq, model, scales = (Counts.zeros(ntol) for _ in range(4))
    scale_names = fplan.scale_names
    weights = 0
    changed_scales = 0
    blocks = 0
    blocks_changed = 0
    for t in report.tensors:
        entry = t.extra.get(TENSOR_KEY, "absent")
        if entry is None:
            del t.extra[TENSOR_KEY]
            entry = "absent"
        if isinstance(entry, dict):
            weights += 1
            codes.add(t.counts)
            c = counts_of(entry)
            deq.add(c)
            model.add(c)
            blocks += int(entry["scale_blocks"])
            blocks_changed += int(entry["scale_blocks_changed"])
        elif t.name in scale_names:
            scales.add(t.counts)
            changed_scales += t.counts.identical < t.counts.numel
        else:
            model.add(t.counts)
    blocks_set = sorted({tuple(w.block) for w in fplan.weights})
    report.extra[REPORT_KEY] = {
        "weights": weights,
        "block_size": list(blocks_set[0]) if len(blocks_set) == 1 else [list(b) for b in blocks_set],
        "block_source": fplan.block_source,
        "config_block_size": list(fplan.config_block) if fplan.config_block else None,
        "dequantized_semantics": (
            "bf16(float32(code) * float32(scale)), then the bf16 reference rule"
            if report.semantics == "reference"
            else "exact: |code_t * s_t - code_b * s_b| in float64"
        ),
        "stored_codes": codes.to_json(),
        "dequantized": deq.to_json(),
        "dequantized_model": model.to_json(),
        "scales": {
            "tensors": len(scale_names),
            "changed_tensors": int(changed_scales),
            "blocks": blocks,
            "changed_blocks": blocks_changed,
            "numel": scales.numel,
            "identical": scales.identical,
        },
        "skipped": list(fplan.skipped),
    }
