"""The comparison report: a typed dataclass with a versioned JSON form.

Stable keys (scripts may rely on them): ``schema_version``, ``semantics``, ``tolerances``, ``overall``
(``numel``, ``identical``, ``unchanged``, ``sparsity``), ``tensors`` (``name``, ``shape``, ``dtype``,
``numel``, ``identical``, ``unchanged``, ``layer``, ``kind``). Everything else may grow; a reader checks
``schema_version`` and refuses a newer major version.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import SubnetscopeError
from ..naming import KINDS
from ..stats import Counts, TensorStats

SCHEMA_VERSION = "1.0"
REPORT_KIND = "subnetscope.compare"


_ENCODE = json.JSONEncoder(separators=(", ", ": ")).encode


def json_text(obj: Any) -> str:
    """A report as JSON text: one top-level key per line, and each element of a top-level list or object
    on a line of its own (one tensor, one layer, one step per line).

    Equal to ``json.dumps`` as data. Three times faster than ``indent=1`` on large reports (0.02 against
    0.065 s for a 1B series with 1362 tensors): the elements go through the C encoder, which
    ``indent`` turns off.
    """
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        return json.dumps(obj, indent=1)
    lines = []
    for k, v in obj.items():
        key = _ENCODE(k)
        if isinstance(v, list) and v:
            body = ",\n".join("  " + _ENCODE(x) for x in v)
            lines.append(f" {key}: [\n{body}\n ]")
        elif isinstance(v, dict) and v and all(isinstance(a, str) for a in v):
            body = ",\n".join(f"  {_ENCODE(a)}: {_ENCODE(b)}" for a, b in v.items())
            lines.append(f" {key}: {{\n{body}\n }}")
        else:
            lines.append(f" {key}: {_ENCODE(v)}")
    return "{\n" + ",\n".join(lines) + "\n}" if lines else "{}"


@dataclass
class Finding:
    """Something about the pair worth telling: a tensor on one side only, a shape or dtype change, NaN/Inf."""

    kind: str  #: only_in_base | only_in_target | shape_changed | rows_added | rows_removed | dtype_changed | nonfinite
    tensor: str
    detail: str

    def to_json(self) -> dict[str, str]:
        """JSON form."""
        return {"kind": self.kind, "tensor": self.tensor, "detail": self.detail}


@dataclass
class Report:
    """Result of :func:`subnetscope.compare`."""

    base: dict[str, Any]  #: ``ref`` (what was given), ``path`` (resolved), ``files``, ``numel``
    target: dict[str, Any]
    semantics: str  #: ``exact`` or ``reference``
    tolerances: list[float]
    tensors: list[TensorStats]
    findings: list[Finding] = field(default_factory=list)
    tool_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    # -- aggregates ---------------------------------------------------------------------------------------
    @property
    def primary_index(self) -> int:
        """Index of the headline tolerance: 1e-5 (the paper's) when present, else the largest."""
        for i, t in enumerate(self.tolerances):
            if abs(t - 1e-5) < 1e-12:
                return i
        return max(range(len(self.tolerances)), key=lambda i: self.tolerances[i])

    @property
    def overall(self) -> Counts:
        """Parameter-weighted counts over every compared tensor."""
        c = Counts.zeros(len(self.tolerances))
        for t in self.tensors:
            c.add(t.counts)
        return c

    def by_kind(self) -> dict[str, Counts]:
        """Counts per matrix type, in :data:`~subnetscope.naming.KINDS` order (types present only)."""
        out: dict[str, Counts] = {}
        for t in self.tensors:
            out.setdefault(t.kind, Counts.zeros(len(self.tolerances))).add(t.counts)
        return {k: out[k] for k in KINDS if k in out}

    def by_layer(self) -> dict[int, Counts]:
        """Counts per layer index (tensors outside layers are not included)."""
        out: dict[int, Counts] = {}
        for t in self.tensors:
            if t.layer is not None:
                out.setdefault(t.layer, Counts.zeros(len(self.tolerances))).add(t.counts)
        return dict(sorted(out.items()))

    def grid(self) -> dict[tuple[int, str], Counts]:
        """Counts per (layer, matrix type): the paper's Figure 3."""
        out: dict[tuple[int, str], Counts] = {}
        for t in self.tensors:
            if t.layer is not None:
                out.setdefault((t.layer, t.kind), Counts.zeros(len(self.tolerances))).add(t.counts)
        return out

    # -- JSON ---------------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The versioned JSON document."""
        grid = self.grid()
        return {
            "schema_version": SCHEMA_VERSION,
            "report": REPORT_KIND,
            "tool": {"name": "subnetscope", "version": self.tool_version},
            "semantics": self.semantics,
            "tolerances": list(self.tolerances),
            "primary_tolerance": self.tolerances[self.primary_index],
            "base": self.base,
            "target": self.target,
            "overall": self.overall.to_json(),
            "by_kind": {k: c.to_json() for k, c in self.by_kind().items()},
            "by_layer": {str(k): c.to_json() for k, c in self.by_layer().items()},
            "grid": [
                {"layer": layer, "kind": kind, **c.to_json()}
                for (layer, kind), c in sorted(grid.items(), key=lambda kv: (kv[0][0], KINDS.index(kv[0][1])))
            ],
            "findings": [f.to_json() for f in self.findings],
            "tensors": [t.to_json() for t in self.tensors],
            **self.extra,
        }

    def dumps(self) -> str:
        """JSON text (see :func:`json_text`)."""
        return json_text(self.to_json())

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Report:
        """Rebuild a report from its JSON form (checks the schema version)."""
        check_schema(obj, REPORT_KIND)
        known = {
            "schema_version", "report", "tool", "semantics", "tolerances", "primary_tolerance", "base", "target",
            "overall", "by_kind", "by_layer", "grid", "findings", "tensors",
        }  # fmt: skip
        return cls(
            base=obj["base"],
            target=obj["target"],
            semantics=obj["semantics"],
            tolerances=[float(t) for t in obj["tolerances"]],
            tensors=[TensorStats.from_json(t) for t in obj["tensors"]],
            findings=[Finding(**f) for f in obj.get("findings", [])],
            tool_version=obj.get("tool", {}).get("version", ""),
            extra={k: v for k, v in obj.items() if k not in known},
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Report:
        """Read a report written with ``-o``."""
        return cls.from_json(load_json(path))


def load_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON file, turning errors into one clear line."""
    try:
        with open(path) as f:
            obj = json.load(f)
    except FileNotFoundError:
        raise SubnetscopeError(f"{path}: no such file", "give a report written with -o") from None
    except (OSError, ValueError) as e:
        raise SubnetscopeError(f"{path}: not a readable JSON file ({e})", "regenerate it") from None
    if not isinstance(obj, dict):
        raise SubnetscopeError(f"{path}: not a subnetscope report", "regenerate it")
    return obj


def check_schema(obj: dict[str, Any], kind: str) -> None:
    """Refuse documents of another kind or of a newer major schema version."""
    if obj.get("report") != kind:
        raise SubnetscopeError(
            f"not a {kind} report (found {obj.get('report')!r})",
            "pass a file written by the matching command",
        )
    ver = str(obj.get("schema_version", "0"))
    if ver.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise SubnetscopeError(
            f"report schema {ver} is not supported by this version (reads {SCHEMA_VERSION})",
            "upgrade subnetscope or regenerate the report",
        )
