"""Argument checks shared by every public entry point and by the command line.

Each check takes the value and the name to blame (the keyword argument, e.g. ``"jobs"``, when the library
calls it; the option, e.g. ``"--mask-tol"``, when the command line does) and returns the value normalised
(``float``, ``int``) or raises :class:`~subnetscope.errors.UsageError` saying what is wrong with which
argument. Booleans and strings are not numbers here: ``jobs=True`` or ``tolerances=["1e-5"]`` is refused
rather than guessed at.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

from .errors import UsageError

SEMANTICS: tuple[str, ...] = ("exact", "reference")


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def tolerance(value: Any, name: str = "tolerance") -> float:
    """A tolerance: a finite, non-negative real number (``|Δ| <= tol`` counts as unchanged)."""
    if not _is_real(value):
        raise UsageError(f"{name}={value!r} is not a number", "give a tolerance like 1e-5")
    t = float(value)
    if not (t >= 0 and math.isfinite(t)):
        raise UsageError(
            f"{name}={t!r} is not a finite non-negative number",
            "give a tolerance like 1e-5 (0 for bit identity)",
        )
    return t


def tolerances(values: Any, name: str = "tolerances") -> list[float]:
    """A non-empty list of distinct tolerances (a single number stands for a list of one)."""
    if _is_real(values):
        values = [values]
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise UsageError(f"{name}={values!r} is not a list of numbers", "give e.g. [1e-8, 1e-5]")
    values = list(values)
    tols = [tolerance(v, f"{name}[{i}]" if len(values) > 1 else name) for i, v in enumerate(values)]
    if not tols:
        raise UsageError(f"{name}: no tolerance given", "give at least one, e.g. 1e-5")
    if len(set(tols)) != len(tols):
        raise UsageError(f"{name}: duplicate tolerances in {tols}", "list each tolerance once")
    return tols


def semantics(value: Any, name: str = "semantics") -> str:
    """``"exact"`` or ``"reference"`` (exactly so: no other case or spelling)."""
    return choice(value, name, SEMANTICS)


def int_range(value: Any, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    """An integer in ``[minimum, maximum]``."""
    if not _is_int(value):
        raise UsageError(f"{name}={value!r} is not an integer", f"give an integer >= {minimum}")
    n = int(value)
    if n < minimum:
        raise UsageError(f"{name}={n} must be at least {minimum}", f"give an integer >= {minimum}")
    if maximum is not None and n > maximum:
        raise UsageError(f"{name}={n} must be at most {maximum}", f"give an integer <= {maximum}")
    return n


def jobs(value: Any, name: str = "jobs") -> int | None:
    """Worker count: None (the default) or an integer >= 1."""
    return None if value is None else int_range(value, name, 1)


def chunk_elements(value: Any, name: str = "chunk_elements", multiple_of_8: bool = False) -> int | None:
    """Elements per read: None (the default) or an integer >= 8 (a multiple of 8 when asked)."""
    if value is None:
        return None
    n = int_range(value, name, 8)
    if multiple_of_8 and n % 8:
        raise UsageError(f"{name}={n} is not a multiple of 8", "give a multiple of 8, e.g. 1048576")
    return n


def integer(value: Any, name: str) -> int:
    """Any integer (a seed, a level)."""
    if not _is_int(value):
        raise UsageError(f"{name}={value!r} is not an integer", "give an integer")
    return int(value)


def positive_real(value: Any, name: str) -> float:
    """A finite, positive real number."""
    if not _is_real(value) or not (float(value) > 0 and math.isfinite(float(value))):
        raise UsageError(f"{name}={value!r} is not a finite positive number", "give e.g. 1e-6")
    return float(value)


def positive_reals(values: Sequence[Any], name: str) -> list[float]:
    """A non-empty list of finite, positive numbers."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise UsageError(f"{name}={values!r} is not a list of numbers", "give e.g. [0.1, 1, 10]")
    out = []
    for i, v in enumerate(values):
        if not _is_real(v) or not (float(v) > 0 and math.isfinite(float(v))):
            raise UsageError(f"{name}[{i}]={v!r} is not a finite positive number", "give e.g. [0.1, 1, 10]")
        out.append(float(v))
    if not out:
        raise UsageError(f"{name}: no value given", "give at least one, e.g. [1]")
    return out


def choice(value: Any, name: str, choices: Sequence[str]) -> str:
    """One of ``choices``, exactly (no other case or spelling)."""
    if not isinstance(value, str) or value not in choices:
        raise UsageError(f"unknown {name} {value!r}", f"use one of {', '.join(choices)}")
    return value
