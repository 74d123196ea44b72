"""The environment switches of the kernels, read once, here, when the package is first imported.

- ``SUBNETSCOPE_NO_NATIVE=1``: do not load the C extension (:mod:`.native`); numba or numpy run instead.
- ``SUBNETSCOPE_NO_NUMBA=1``: never import numba (:mod:`.jit`); the C kernels or numpy run instead.
- ``SUBNETSCOPE_NO_AVX512=1``: load the C extension with its hand-vectorised AVX-512 kernels turned off
  (:func:`.native.set_avx512` switches them at run time).

Any value but empty or ``0`` turns a switch on. Nothing else in subnetscope reads these variables: a switch
set after the first import has no effect in that process (tests set them in a child process).
"""

from __future__ import annotations

import os


def _on(name: str) -> bool:
    return os.environ.get(name, "").strip() not in ("", "0")


NO_NATIVE: bool = _on("SUBNETSCOPE_NO_NATIVE")
NO_NUMBA: bool = _on("SUBNETSCOPE_NO_NUMBA")
NO_AVX512: bool = _on("SUBNETSCOPE_NO_AVX512")
