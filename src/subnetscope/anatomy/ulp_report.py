"""Questions answered afterwards from a report's ULP / |Δ| histograms (``compare(ulp=True)``): unchanged
counts and sparsity at any tolerance, and the summary tables show. Re-exported by :mod:`subnetscope.anatomy.ulp`."""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import SubnetscopeError
from ..kernels.ulp import ULP_BIN_LABELS
from ..naming import KINDS

REPORT_KEY = "ulp"


class MissingAnatomyError(SubnetscopeError):
    """A report lacks the data a question needs (e.g. no ULP histograms: compare ran without ``--ulp``)."""


def _as_json(report: Any) -> Mapping[str, Any]:
    if isinstance(report, Mapping):
        return report
    out: Mapping[str, Any] = report.to_json()
    return out


def histogram_block(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """The report's ULP / |Δ| histogram section; :class:`MissingAnatomyError` if it has none."""
    blk = obj.get(REPORT_KEY)
    if not isinstance(blk, Mapping) or "delta_edges" not in blk:
        raise MissingAnatomyError(
            "the report has no ULP / |Δ| histograms", "rerun compare with `ulp=True` (or use compare_ulp())"
        )
    return blk


def unchanged_bounds(delta_hist: Sequence[int], edges: Sequence[float], tol: float) -> tuple[int, int]:
    """(low, high) bounds on the elements with ``|Δ| <= tol`` from one ``delta_hist``; equal when ``tol``
    is 0 or an edge. Non-finite differences never count as unchanged."""
    e = list(edges)
    if len(delta_hist) != len(e) + 3:
        raise MissingAnatomyError(
            f"a |Δ| histogram has {len(delta_hist)} bins for {len(e)} edges", "regenerate the report"
        )
    # delta_hist[1 + j] holds (e[j-1], e[j]] (e[-1] = 0); delta_hist[1 + len(e)] holds (e_last, inf)
    j = bisect.bisect_right(e, tol) if tol > 0 else 0
    lo = int(delta_hist[0]) + sum(int(x) for x in delta_hist[1 : 1 + j])
    exact = tol <= 0 or (j > 0 and e[j - 1] == tol)
    return lo, lo if exact else lo + int(delta_hist[1 + j])


def unchanged_at(report: Any, tol: float, tensors: Sequence[str] | None = None) -> tuple[int, int]:
    """(low, high) number of elements with ``|Δ| <= tol`` (exact semantics), summed over the report's tensors
    (or the named ones), from the ``--ulp`` histograms alone; low == high when ``tol`` is 0 or one of the
    histogram's edges (every power of two from 2^-40 to 2^8 and every tolerance the pass ran with).

    Integer tensors count their bit-identical elements at every tolerance (as compare does); elements only
    the target has (a resized vocabulary) are changed.
    """
    obj = _as_json(report)
    edges = histogram_block(obj)["delta_edges"]
    want = set(tensors) if tensors is not None else None
    lo = hi = 0
    for t in obj["tensors"]:
        if want is not None and t["name"] not in want:
            continue
        entry = t.get(REPORT_KEY)
        if entry is None:
            if str(t["dtype"]).startswith(("I", "U", "BOOL")):
                lo += int(t["identical"])
                hi += int(t["identical"])
                continue
            raise MissingAnatomyError(
                f"tensor {t['name']!r} has no |Δ| histogram", "rerun compare with `ulp=True` on every tensor"
            )
        a, b = unchanged_bounds(entry["delta_hist"], edges, tol)
        lo += a
        hi += b
    return lo, hi


def sparsity_at(report: Any, tol: float) -> tuple[float, float]:
    """(low, high) update sparsity of the whole report at ``tol`` (see :func:`unchanged_at`)."""
    obj = _as_json(report)
    numel = int(obj["overall"]["numel"])
    lo, hi = unchanged_at(obj, tol)
    return (lo / numel, hi / numel) if numel else (1.0, 1.0)


def summarize(report: Any) -> dict[str, Any]:
    """Sums of the per-tensor ULP data, overall and per matrix type.

    Returns ``{"bins", "delta_edges", "tolerances", "step_size", "overall": {...}, "by_kind": {kind: {...}}}``
    where each group has ``numel`` (elements of tensors with a ULP histogram), ``hist``, ``delta_hist``,
    ``below_ulp`` (per tolerance), ``unchanged`` (the compare counts of the same tensors, per tolerance),
    ``below_ulp_share`` (below_ulp / unchanged) and, with a step size, ``step_lost`` and ``step_lost_share``.
    """
    obj = _as_json(report)
    blk = histogram_block(obj)
    nt = len(blk["tolerances"])
    # compare's tolerance order may differ from the consumer's when a mask tolerance was appended
    rep_tols = [float(t) for t in obj["tolerances"]]
    pos = [rep_tols.index(float(t)) if float(t) in rep_tols else None for t in blk["tolerances"]]
    nd = len(blk["delta_edges"]) + 3

    def empty() -> dict[str, Any]:
        return {"tensors": 0, "numel": 0, "hist": [0] * len(ULP_BIN_LABELS), "delta_hist": [0] * nd,
                "below_ulp": [0] * nt, "unchanged": [0] * nt, "step_lost": 0}  # fmt: skip

    groups: dict[str, dict[str, Any]] = {"overall": empty()}
    for t in obj["tensors"]:
        e = t.get(REPORT_KEY)
        if not e or e.get("hist") is None:
            continue
        for g in (groups["overall"], groups.setdefault(t["kind"], empty())):
            g["tensors"] += 1
            g["numel"] += int(t.get("compared", t["numel"]))
            g["hist"] = [x + y for x, y in zip(g["hist"], e["hist"])]
            g["delta_hist"] = [x + y for x, y in zip(g["delta_hist"], e["delta_hist"])]
            g["below_ulp"] = [x + y for x, y in zip(g["below_ulp"], e["below_ulp"] or [0] * nt)]
            g["unchanged"] = [
                x + (int(t["unchanged"][p]) if p is not None else 0) for x, p in zip(g["unchanged"], pos)
            ]
            g["step_lost"] += int(e.get("step_lost", 0))
    for g in groups.values():
        g["below_ulp_share"] = [b / u if u else 0.0 for b, u in zip(g["below_ulp"], g["unchanged"])]
        if blk.get("step_size") is not None:
            g["step_lost_share"] = g["step_lost"] / g["numel"] if g["numel"] else 0.0
        else:
            del g["step_lost"]
    overall = groups.pop("overall")

    return {
        "bins": list(blk["ulp_bins"]),
        "delta_edges": list(blk["delta_edges"]),
        "tolerances": list(blk["tolerances"]),
        "step_size": blk.get("step_size"),
        "overall": overall,
        "by_kind": {k: groups[k] for k in KINDS if k in groups},
    }
