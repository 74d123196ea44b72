"""Build hook for the optional C kernels (everything else is declared in pyproject.toml).

``subnetscope._native`` is compiled when a C compiler is available; when it is not, the build goes on
without it and subnetscope runs its numba kernels instead (``optional=True``).
"""

import sys

from setuptools import Extension, setup

if sys.platform == "win32":
    FLAGS = ["/O2", "/fp:precise"]
else:
    # -fno-trapping-math lets GCC vectorise loops that compare floats (results are unchanged: IEEE
    # arithmetic, no fast-math; only floating-point exception flags are not kept)
    FLAGS = ["-O3", "-fno-trapping-math"]

setup(
    ext_modules=[
        Extension(
            "subnetscope._native",
            sources=[
                "src/subnetscope/_native.c",
                "src/subnetscope/_native_delta.c",
                "src/subnetscope/_native_avx512.c",
            ],
            depends=["src/subnetscope/_native.h"],
            extra_compile_args=FLAGS,
            optional=True,
        )
    ]
)
