"""The small-scale replication study: a base model, training recipes, and subnetscope's own measurements.

Library::

    from subnetscope.study import load_config, run_study, prepare_base
    base_dir = prepare_base()                       # SmolLM2-135M-Instruct, prepared once into the cache
    doc = run_study(load_config("configs/study.toml"))   # study.json + summary.md + PNGs
    print(doc["table1"]["rows"][0]["sparsity_at_1e-5"])

(in a script, under ``if __name__ == "__main__":``: training runs in a spawned process, see
:mod:`.numerics`.)

Modules: :mod:`.config` (TOML/JSON configs), :mod:`.base` (base preparation and cache), :mod:`.data` (built-in
data), :mod:`.lm` (tokenization, batching, sampling, bf16 saving), :mod:`.recipes` (SFT, DPO, GRPO, subnetwork
training), :mod:`.runs` (datasets and runs cached by recipe), :mod:`.pipeline` (the steps and the JSON
document), :mod:`.tables` (Markdown), :mod:`.figures` (the study's own plots), :mod:`.tiny` (a tiny random
Llama with an offline tokenizer), :mod:`.numerics` (the worker with reproducible kernels),
:mod:`.bench_numerics` (what they cost). CLI: ``subnetscope study CONFIG``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import cache_dir, prepare_base
    from .config import StudyConfig, load_config, parse_config
    from .pipeline import run_study

__all__ = ["StudyConfig", "cache_dir", "load_config", "parse_config", "prepare_base", "run_study"]

_LAZY = {
    "cache_dir": "base",
    "prepare_base": "base",
    "StudyConfig": "config",
    "load_config": "config",
    "parse_config": "config",
    "run_study": "pipeline",
}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'subnetscope.study' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{mod}"), name)
