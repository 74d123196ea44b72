"""The kernel backends and the one choice among them that every hot loop goes through.

Three backends compute the same results, fastest first: ``native`` (the C extension, :mod:`.native`),
``numba`` (:mod:`.jit`) and ``numpy`` (always there, and the reference the others are tested against).
Not every kernel family has every backend (:data:`IMPLEMENTED`): the ULP histograms and the magnitude bins
have no C version, so with the extension built they run numba. :func:`pick_backend` is the only place that
decides; ``SUBNETSCOPE_NO_NATIVE=1`` / ``SUBNETSCOPE_NO_NUMBA=1`` (:mod:`.env`) take a backend out of
:data:`BACKENDS`, and a caller may name one (tests run every kernel on each).
"""

from __future__ import annotations

from ..dtypes import DType
from . import jit, native

#: the kernel backends usable here, fastest first: the C kernels, numba, numpy (always)
BACKENDS: tuple[str, ...] = tuple(
    b for b, ok in (("native", native.AVAILABLE), ("numba", jit.AVAILABLE), ("numpy", True)) if ok
)

_ALL = ("native", "numba", "numpy")
#: the backends each kernel family implements
IMPLEMENTED: dict[str, tuple[str, ...]] = {
    "compare": _ALL,
    "series": _ALL,
    "fp8": _ALL,
    "delta": _ALL,
    "ulp": ("numba", "numpy"),
    "magnitude": ("numba", "numpy"),
}


def backends_for(kernel: str) -> tuple[str, ...]:
    """The backends of :data:`BACKENDS` that ``kernel`` (a key of :data:`IMPLEMENTED`) has, fastest first."""
    return tuple(b for b in BACKENDS if b in IMPLEMENTED[kernel])


def pick_backend(backend: str | None, dtype: DType | None = None, kernel: str = "compare") -> str:
    """``backend`` if given (it must be in :data:`BACKENDS` and implemented by ``kernel``), else the fastest
    one that ``kernel`` has and that handles ``dtype`` (the C kernels handle every float dtype)."""
    if backend is not None:
        if backend not in BACKENDS:
            raise ValueError(f"kernel backend {backend!r} is not available here (have {', '.join(BACKENDS)})")
        if backend not in IMPLEMENTED[kernel]:
            have = ", ".join(backends_for(kernel))
            raise ValueError(f"the {kernel} kernel has no {backend!r} backend (have {have})")
        return backend
    for b in backends_for(kernel):
        if b != "native" or dtype is None or native.supports(dtype):
            return b
    return "numpy"  # pragma: no cover - numpy is always in BACKENDS
