"""Build hook for the optional C kernels (everything else is declared in pyproject.toml).

``subnetscope.kernels._native`` is compiled from ``src/subnetscope/kernels/csrc/`` when a C compiler is
available; when it is not, the build goes on without it and subnetscope runs its numba kernels instead
(``optional=True``).
"""

import sys
from pathlib import Path

from setuptools import Extension, setup

CSRC = Path("src/subnetscope/kernels/csrc")

if sys.platform == "win32":
    FLAGS = ["/O2", "/fp:precise"]
else:
    # -fno-trapping-math lets GCC vectorise loops that compare floats (results are unchanged: IEEE
    # arithmetic, no fast-math; only floating-point exception flags are not kept)
    FLAGS = ["-O3", "-fno-trapping-math"]

setup(
    ext_modules=[
        Extension(
            "subnetscope.kernels._native",
            sources=[str(p) for p in sorted(CSRC.glob("*.c"))],
            depends=[str(p) for p in sorted(CSRC.glob("*.h"))],
            extra_compile_args=FLAGS,
            optional=True,
        )
    ]
)
