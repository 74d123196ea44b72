"""subnetscope: measure, and use, the sparse subnetworks that RL finetuning updates in LLM checkpoints.

The library API is the product; the ``subnetscope`` command is a thin layer over it::

    import subnetscope
    report = subnetscope.compare("base_dir", "org/rl-model@main", tolerances=[1e-5])
    print(report.overall.sparsity)

Heavy modules (numpy kernels, torch) are imported lazily so that ``import subnetscope`` and
``subnetscope --help`` stay instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .comparison import compare
    from .maskfile import MaskFile
    from .refs import load_checkpoint
    from .results.schema import Report

__all__ = ["MaskFile", "Report", "__version__", "compare", "load_checkpoint"]

_LAZY = {
    "compare": ("subnetscope.comparison", "compare"),
    "Report": ("subnetscope.results.schema", "Report"),
    "MaskFile": ("subnetscope.maskfile", "MaskFile"),
    "load_checkpoint": ("subnetscope.refs", "load_checkpoint"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'subnetscope' has no attribute {name!r}")
