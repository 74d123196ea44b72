"""Study configuration: datasets, training runs and analyses, read from a TOML or JSON file.

Layout (TOML; JSON has the same structure)::

    [study]
    name = "smollm2-135m"
    base = "smollm2-gguf"          # the offline SmolLM2 base, a model directory, or a hub id
    out = "docs/replication"       # relative to the config file's directory
    tolerances = [1e-8, 1e-7, 1e-6, 1e-5]

    [defaults]                     # applied to every run, each run may override
    steps = 24
    lr = 1e-5

    [data.pairs_tips]              # a named dataset
    kind = "pairs"                 # sft | pairs | addition
    prompts = "tips"
    rule = "shorter"

    [[runs]]
    name = "dpo"
    algo = "dpo"                   # sft | dpo | grpo
    data = "pairs_tips"

    [analysis]
    table1 = ["dpo", "grpo", "sft"]
    overlap = [{ label = "seeds", a = "dpo", b = "dpo-seed1" }]
    conjecture = { full = "dpo", sub = "dpo-sub" }
    series = "dpo"

Unknown keys are refused with the file and the key named, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SubnetscopeError

ALGOS = ("sft", "dpo", "grpo")
DATA_KINDS = ("sft", "pairs", "addition")
#: which data kind each algorithm trains on
ALGO_DATA = {"sft": "sft", "dpo": "pairs", "grpo": "addition"}


class StudyConfigError(SubnetscopeError):
    """A study config file that cannot be read or does not make sense."""


@dataclass(frozen=True)
class DataSpec:
    """A named dataset, built offline (``sft``, ``addition``) or sampled from the base model (``pairs``)."""

    name: str
    kind: str  #: sft | pairs | addition
    n: int = 64  #: examples, pairs or problems
    seed: int = 0
    prompts: str = "tips"  #: pairs: built-in prompt set (see data.PROMPT_SETS)
    rule: str = "shorter"  #: pairs: labelling rule (see data.RULES)
    max_new_tokens: int = 48  #: pairs: completion length when sampling
    temperature: float = 1.0  #: pairs: sampling temperature

    def key_fields(self) -> dict[str, Any]:
        """Fields that determine the dataset's content (its cache key)."""
        d = dataclasses.asdict(self)
        d.pop("name")
        return d


@dataclass(frozen=True)
class RunSpec:
    """One training run from the base."""

    name: str
    algo: str  #: sft | dpo | grpo
    data: str  #: name of a dataset
    seed: int = 0  #: data order (and sampling, for GRPO)
    steps: int = 24
    lr: float = 1e-5
    batch_size: int = 4  #: sequences per step (GRPO: prompts per step, each sampled group_size times)
    max_length: int = 128
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    beta: float = 0.1  #: DPO temperature
    group_size: int = 4  #: GRPO completions per prompt
    max_new_tokens: int = 16  #: GRPO completion length
    temperature: float = 0.7  #: GRPO sampling temperature
    save_every: int = 0  #: also save a bf16 checkpoint every N steps (for `series`); 0 = never
    mask_from: str | None = None  #: train only the subnetwork another run updated (paper §4)
    mask_tol: float = 1e-5  #: tolerance of that subnetwork's mask
    track: bool = False  #: run subnetscope.train.UpdateTracker during training

    def key_fields(self) -> dict[str, Any]:
        """Fields that determine the trained weights (its cache key; ``track``/``save_every`` excluded,
        since they do not change the weights, but included so a run with them has its outputs)."""
        d = dataclasses.asdict(self)
        d.pop("name")
        return d


@dataclass(frozen=True)
class OverlapSpec:
    """One row of Table 4: the overlap of the subnetworks of runs ``a`` and ``b``."""

    label: str
    a: str
    b: str


@dataclass(frozen=True)
class AnalysisSpec:
    """Which tables and figures to produce."""

    table1: tuple[str, ...] = ()
    overlap: tuple[OverlapSpec, ...] = ()
    conjecture: tuple[str, str] | None = None  #: (full, sub)
    rank: tuple[str, ...] = ()  #: runs whose every 2-D update is ranked (Table 2)
    series: str | None = None
    heatmap: tuple[str, ...] = ()
    ulp: tuple[str, ...] = ()
    loss_curves: tuple[str, ...] = ()


@dataclass
class StudyConfig:
    """A whole study."""

    name: str
    base: str
    out: Path
    tolerances: list[float]
    data: dict[str, DataSpec]
    runs: list[RunSpec]
    analysis: AnalysisSpec
    cache: Path | None = None
    source: Path | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def run(self, name: str) -> RunSpec:
        """The run called ``name``."""
        for r in self.runs:
            if r.name == name:
                return r
        raise StudyConfigError(f"no run named {name!r}", f"runs are {[r.name for r in self.runs]}")


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise StudyConfigError(f"{path}: no such config file", "give a .toml or .json study config")
    try:
        if path.suffix == ".json":
            obj = json.loads(path.read_text())
        else:
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover - Python 3.10
                try:
                    import tomli as tomllib
                except ImportError:
                    raise StudyConfigError(
                        f"{path}: reading TOML on Python 3.10 needs the tomli package",
                        "pip install tomli, or write the config as JSON",
                    ) from None
            obj = tomllib.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise StudyConfigError(f"{path}: not a readable config ({e})", "fix the syntax") from None
    if not isinstance(obj, dict):
        raise StudyConfigError(f"{path}: the top level must be a table", "see docs/replication.md")
    return obj


def _build(cls: Any, values: dict[str, Any], where: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise StudyConfigError(f"{where}: unknown key(s) {unknown}", f"known keys: {sorted(names)}")
    try:
        return cls(**values)
    except TypeError as e:
        raise StudyConfigError(f"{where}: {e}", "check the required keys") from None


def parse_config(obj: dict[str, Any], source: Path | None = None) -> StudyConfig:
    """Validate a config document (already parsed) and return the :class:`StudyConfig`."""
    where = str(source) if source else "<config>"
    top_unknown = sorted(set(obj) - {"study", "defaults", "data", "runs", "analysis"})
    if top_unknown:
        raise StudyConfigError(
            f"{where}: unknown section(s) {top_unknown}", "sections: study, defaults, data, runs, analysis"
        )
    study = dict(obj.get("study", {}))
    allowed = {"name", "base", "out", "tolerances", "cache", "notes"}
    bad = sorted(set(study) - allowed)
    if bad:
        raise StudyConfigError(f"{where}: [study] has unknown key(s) {bad}", f"known keys: {sorted(allowed)}")
    root = source.parent if source else Path.cwd()

    def rel(p: str) -> Path:
        q = Path(os.path.expanduser(p))
        return (q if q.is_absolute() else root / q).resolve()

    data = {}
    for name, d in dict(obj.get("data", {})).items():
        spec = _build(DataSpec, {"name": name, **d}, f"{where}: [data.{name}]")
        if spec.kind not in DATA_KINDS:
            raise StudyConfigError(f"{where}: [data.{name}] kind {spec.kind!r}", f"use one of {DATA_KINDS}")
        data[name] = spec
    defaults = dict(obj.get("defaults", {}))
    runs: list[RunSpec] = []
    for i, r in enumerate(obj.get("runs", [])):
        label = f"{where}: runs[{i}] ({r.get('name', '?')})"
        spec = _build(RunSpec, {**defaults, **r}, label)
        if spec.algo not in ALGOS:
            raise StudyConfigError(f"{label}: algo {spec.algo!r}", f"use one of {ALGOS}")
        if spec.data not in data:
            raise StudyConfigError(
                f"{label}: dataset {spec.data!r} is not defined", f"define [data.{spec.data}]"
            )
        if data[spec.data].kind != ALGO_DATA[spec.algo]:
            raise StudyConfigError(
                f"{label}: {spec.algo} needs a {ALGO_DATA[spec.algo]!r} dataset, {spec.data!r} is {data[spec.data].kind!r}",
                "point the run at a dataset of the right kind",
            )
        if any(x.name == spec.name for x in runs):
            raise StudyConfigError(f"{label}: duplicate run name", "give every run its own name")
        if spec.mask_from is not None and spec.mask_from not in [x.name for x in runs]:
            raise StudyConfigError(
                f"{label}: mask_from={spec.mask_from!r} must name a run listed before it",
                "list the full run first",
            )
        if spec.steps < 1 or spec.batch_size < 1:
            raise StudyConfigError(f"{label}: steps and batch_size must be >= 1", "fix the values")
        runs.append(spec)
    if not runs:
        raise StudyConfigError(f"{where}: no [[runs]]", "add at least one run")
    names = [r.name for r in runs]
    a = dict(obj.get("analysis", {}))
    akeys = {f.name for f in dataclasses.fields(AnalysisSpec)}
    bad = sorted(set(a) - akeys)
    if bad:
        raise StudyConfigError(
            f"{where}: [analysis] has unknown key(s) {bad}", f"known keys: {sorted(akeys)}"
        )

    def check(ref: str, what: str) -> str:
        if ref not in names:
            raise StudyConfigError(
                f"{where}: [analysis] {what} names unknown run {ref!r}", f"runs are {names}"
            )
        return ref

    overlaps = tuple(
        OverlapSpec(str(o["label"]), check(o["a"], "overlap"), check(o["b"], "overlap"))
        for o in a.get("overlap", [])
    )
    conj = a.get("conjecture")
    analysis = AnalysisSpec(
        table1=tuple(check(x, "table1") for x in a.get("table1", names)),
        overlap=overlaps,
        conjecture=(check(conj["full"], "conjecture"), check(conj["sub"], "conjecture")) if conj else None,
        series=check(a["series"], "series") if a.get("series") else None,
        rank=tuple(check(x, "rank") for x in a.get("rank", [])),
        heatmap=tuple(check(x, "heatmap") for x in a.get("heatmap", [])),
        ulp=tuple(check(x, "ulp") for x in a.get("ulp", [])),
        loss_curves=tuple(check(x, "loss_curves") for x in a.get("loss_curves", names)),
    )
    base = str(study.get("base", "smollm2-gguf"))
    if (root / os.path.expanduser(base)).exists():
        base = str(rel(base))
    return StudyConfig(
        name=str(study.get("name", source.stem if source else "study")),
        base=base,
        out=rel(str(study.get("out", "study_out"))),
        tolerances=[float(t) for t in study.get("tolerances", [1e-8, 1e-7, 1e-6, 1e-5])],
        data=data,
        runs=runs,
        analysis=analysis,
        cache=rel(str(study["cache"])) if study.get("cache") else None,
        source=source,
        notes=str(study.get("notes", "")),
    )


def load_config(path: str | os.PathLike[str]) -> StudyConfig:
    """Read and validate a study config (``.toml``, or ``.json``)."""
    p = Path(path)
    return parse_config(_read(p), p.resolve())
