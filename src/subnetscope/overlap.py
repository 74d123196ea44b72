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

from collections.abc import Sequence

from .kernels.popcount import popcount
from .measures.overlap import DEFAULT_CHUNK_ELEMENTS, changed_packed, overlap, overlap_deltas
from .results.overlap import (
    REPORT_KIND,
    DeltaSums,
    OverlapCounts,
    OverlapReport,
    TensorOverlap,
    hypergeometric,
)

__all__ = [
    "DEFAULT_CHUNK_ELEMENTS",
    "REPORT_KIND",
    "DeltaSums",
    "OverlapCounts",
    "OverlapReport",
    "TensorOverlap",
    "changed_packed",
    "hypergeometric",
    "overlap",
    "overlap_deltas",
    "popcount",
    "render",
]


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


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
    from .display import printable
    from .report.table import finding_lines, fmt_tol, human_count, table

    ov = report.overall
    j = ov.to_json()
    out = [f"subnetscope overlap ({report.mode})"]
    for k, inp in enumerate(report.inputs, 1):
        ch = ov.changed1 if k == 1 else ov.changed2
        out.append(f"  run {k}: {printable(inp['ref'])}  (tol {fmt_tol(inp['tolerance'])}, {printable(inp['semantics'])}; "
                   f"{human_count(ch)} of {human_count(ov.numel)} updated, {_p(_ratio(ch, ov.numel))})")  # fmt: skip
    if report.base is not None:
        out.append(f"  base:  {printable(report.base['ref'])}")
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
    out += finding_lines(report.findings)
    return "\n".join(out)
