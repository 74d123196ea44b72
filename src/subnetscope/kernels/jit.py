"""The one way numba enters subnetscope: kernels written as plain Python, compiled on first use.

Importing numba costs about 0.3 s and loading a cached kernel as much again, which a process that runs
the C kernels (or only reads headers) never pays; so no module imports numba at import time. A kernel
module writes its loops as ordinary functions, declares them once with :class:`LazyJit` and calls
``_jit()`` where it needs them::

    _loop_j: Any = None  # a helper the kernel calls through a module global

    _jit = LazyJit(globals(), kernels={"count": _count_nb}, inline={"_loop_j": _loop_nb})
    ...
    _jit().count(a, b)

On the first call numba is imported, every helper is bound (jitted) to its module global, so that numba
resolves it when it compiles the kernels that call it, and the kernels are jitted with ``nogil`` (threads
run them in parallel) and ``cache`` (compiled once per machine). Later calls return the same namespace.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable, Mapping, MutableMapping
from types import SimpleNamespace
from typing import Any

from . import env

#: whether numba may be used: installed, and not turned off with ``SUBNETSCOPE_NO_NUMBA=1``
AVAILABLE: bool = not env.NO_NUMBA and importlib.util.find_spec("numba") is not None

Fn = Callable[..., Any]


class LazyJit:
    """The numba versions of one module's loops, compiled when first asked for.

    ``namespace``: the module's ``globals()``; ``inline``: global name -> function, jitted to be inlined
    into its callers; ``helpers``: global name -> function, jitted as ordinary (not inlined) callees;
    ``kernels``: attribute name -> function, the entry points returned by the call.
    """

    def __init__(
        self,
        namespace: MutableMapping[str, Any],
        kernels: Mapping[str, Fn],
        inline: Mapping[str, Fn] | None = None,
        helpers: Mapping[str, Fn] | None = None,
    ) -> None:
        self._namespace = namespace
        self._kernels = dict(kernels)
        self._inline = dict(inline or {})
        self._helpers = dict(helpers or {})
        self._compiled: SimpleNamespace | None = None
        self._lock = threading.Lock()

    def __call__(self) -> Any:
        """The jitted kernels (a namespace of dispatchers); raises RuntimeError when numba is off."""
        got = self._compiled
        if got is not None:
            return got
        with self._lock:
            if self._compiled is None:
                self._compiled = self._build()
            return self._compiled

    def _build(self) -> SimpleNamespace:
        if not AVAILABLE:
            raise RuntimeError("numba is not available here (not installed, or SUBNETSCOPE_NO_NUMBA=1)")
        import numba

        inline = numba.njit(inline="always", boundscheck=False)
        plain = numba.njit(boundscheck=False)
        kernel = numba.njit(nogil=True, cache=True, boundscheck=False)
        for name, fn in self._inline.items():
            self._namespace[name] = inline(fn)
        for name, fn in self._helpers.items():
            self._namespace[name] = plain(fn)
        return SimpleNamespace(**{name: kernel(fn) for name, fn in self._kernels.items()})
