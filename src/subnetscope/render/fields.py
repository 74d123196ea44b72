"""The types of a JSON report's fields, checked before a report is plotted or rendered.

``plot`` and ``report`` read JSON files that may have been edited or written by other tools; a field of the
wrong type (a string where a number belongs, an object where a list does) must give one line naming the
field (``grid[3].sparsity[0]``), not a ``ValueError`` from deep inside matplotlib. :func:`check_report`
checks the fields the plots and the HTML page use, for compare, rank and series reports (and a tracker's
``tracker.json``); fields it does not know are left alone, so newer minor versions still pass.

A spec is a small type language: :data:`NUM`, :data:`INT`, :data:`STR`, :data:`BOOL`, :data:`ANY`,
``Opt(spec)`` (or null), ``[spec]`` (a list of), ``Map(spec)`` (an object with any keys), and a dict
``{"key": spec, "key?": spec}`` (an object with these keys; ``?`` marks an optional one).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import SubnetscopeError


class ReportFormatError(SubnetscopeError):
    """A JSON report with a missing field or a field of the wrong type."""


@dataclass(frozen=True)
class _Scalar:
    what: str  #: how the message names the type


@dataclass(frozen=True)
class Opt:
    """``spec`` or null."""

    spec: Any


@dataclass(frozen=True)
class Map:
    """An object whose every value is ``spec``."""

    spec: Any


NUM = _Scalar("a number")
INT = _Scalar("an integer")
STR = _Scalar("a string")
BOOL = _Scalar("true or false")
ANY = _Scalar("anything")


def _is(value: Any, t: _Scalar) -> bool:
    if t is ANY:
        return True
    if t is BOOL:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if t is INT:
        return isinstance(value, int)
    if t is NUM:
        return isinstance(value, (int, float))
    return isinstance(value, str)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return "a string" if len(value) > 40 else f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _want(spec: Any) -> str:
    if isinstance(spec, _Scalar):
        return spec.what
    if isinstance(spec, Opt):
        return f"{_want(spec.spec)} or null"
    if isinstance(spec, list):
        return "a list"
    return "an object"


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def check(value: Any, spec: Any, path: str, where: str) -> None:
    """Raise :class:`ReportFormatError` naming the first field of ``value`` that does not match ``spec``."""

    def fail(p: str, v: Any, s: Any) -> ReportFormatError:
        return ReportFormatError(
            f"{where}: field '{p or '<top>'}' is {_kind(v)}, expected {_want(s)}",
            "the file was edited or damaged: regenerate it with the command that wrote it",
        )

    if isinstance(spec, Opt):
        if value is None:
            return
        if isinstance(spec.spec, _Scalar) and not _is(value, spec.spec):
            raise fail(path, value, spec)
        check(value, spec.spec, path, where)
        return
    if isinstance(spec, _Scalar):
        if not _is(value, spec):
            raise fail(path, value, spec)
        return
    if isinstance(spec, list):
        if not isinstance(value, list):
            raise fail(path, value, spec)
        for i, item in enumerate(value):
            check(item, spec[0], _join(path, i), where)
        return
    if isinstance(spec, Map):
        if not isinstance(value, dict):
            raise fail(path, value, spec)
        for k, item in value.items():
            check(item, spec.spec, _join(path, str(k)), where)
        return
    if not isinstance(value, dict):
        raise fail(path, value, spec)
    for key, sub in spec.items():
        name = key.rstrip("?")
        if name not in value:
            if key.endswith("?"):
                continue
            raise ReportFormatError(
                f"{where}: field '{_join(path, name)}' is missing",
                "the file was edited or damaged: regenerate it with the command that wrote it",
            )
        check(value[name], sub, _join(path, name), where)


COUNTS = {"numel": INT, "identical": INT, "unchanged": [INT], "sparsity": [NUM],
          "nonfinite_base?": INT, "nonfinite_target?": INT}  # fmt: skip
FINDINGS = [{"kind": STR, "tensor": STR, "detail": STR}]
SIDE = {"ref?": Opt(STR), "path?": Opt(STR)}
RANK_SUMMARY = {"matrices": INT, "mean_rank_pct?": NUM, "min_rank_pct?": NUM, "max_rank_pct?": NUM,
                "full_rank?": INT, "mean_stable_rank?": NUM, "mean_effective_rank?": NUM,
                "mean_effective_rank_pct?": NUM, "mean_rank_pct_at?": [NUM], "mean_enrichment?": NUM}  # fmt: skip
RANK_BODY = {
    "rtol_multipliers?": [NUM],
    "overall": RANK_SUMMARY,
    "by_kind?": Map(RANK_SUMMARY),
    "findings?": FINDINGS,
    "tensors?": [{"name": STR, "kind?": STR, "layer?": Opt(INT), "shape?": [INT], "rank": INT, "max_rank": INT,
                  "rank_pct?": NUM, "stable_rank?": NUM, "effective_rank?": NUM, "sigma_min?": NUM,
                  "tol?": NUM, "ranks_at?": [INT], "spectrum?": Opt(Map(ANY))}],
}  # fmt: skip
COMPARE = {
    "tolerances": [NUM],
    "primary_tolerance?": Opt(NUM),
    "semantics?": STR,
    "base?": SIDE,
    "target?": SIDE,
    "overall": COUNTS,
    "by_kind?": Map(COUNTS),
    "by_layer?": Map(COUNTS),
    "grid?": [{"layer": INT, "kind": STR, **COUNTS}],
    "findings?": FINDINGS,
    "tensors?": [{"name": STR, "kind?": STR, "layer?": Opt(INT), "numel?": INT}],
    "rank?": RANK_BODY,
}
RANK = {"base?": SIDE, "target?": SIDE, **RANK_BODY}
_SPLIT = {"never_updated?": INT, "cancelled?": INT, "final_subnetwork?": INT, "shares?": Map(Opt(NUM))}
SERIES = {
    "numel?": INT,
    "tolerance?": NUM,
    "steps?": [{"index": INT, "step?": Opt(INT), "name?": STR, "sparsity_vs_init?": Opt(NUM),
               "sparsity_vs_prev?": Opt(NUM), "outside_final_share?": Opt(NUM), "ever_updated_share?": Opt(NUM)}],
    "split?": _SPLIT,
    "by_kind?": Map(Map(ANY)),
    "findings?": FINDINGS,
}  # fmt: skip

SPECS: dict[str, Any] = {
    "subnetscope.compare": COMPARE,
    "subnetscope.rank": RANK,
    "subnetscope.series": SERIES,
    "subnetscope.tracker": SERIES,
}


def check_report(obj: Mapping[str, Any], where: str = "the report") -> None:
    """Check the fields of a compare, rank or series report (``where`` names it in the message); other
    kinds pass unchanged (their readers refuse them by kind). Also checks that per-tolerance lists have
    one value per tolerance."""
    spec = SPECS.get(str(obj.get("report")))
    if spec is None:
        return
    check(obj, spec, "", where)
    if obj.get("report") == "subnetscope.compare":
        n = len(obj["tolerances"])
        if n == 0:
            raise ReportFormatError(f"{where}: field 'tolerances' is empty", "regenerate the report")
        groups: list[tuple[str, Any]] = [("overall", obj["overall"])]
        groups += [(f"by_kind.{k}", v) for k, v in (obj.get("by_kind") or {}).items()]
        groups += [(f"by_layer.{k}", v) for k, v in (obj.get("by_layer") or {}).items()]
        groups += [(f"grid[{i}]", v) for i, v in enumerate(obj.get("grid") or [])]
        for path, counts in groups:
            for key in ("sparsity", "unchanged"):
                if len(counts[key]) != n:
                    raise ReportFormatError(
                        f"{where}: field '{path}.{key}' has {len(counts[key])} values for {n} tolerances",
                        "the file was edited or damaged: regenerate it with the command that wrote it",
                    )
