"""JSON decoding with a bounded nesting depth, and optionally serde_json's stricter rules.

:func:`json.loads` recurses once per nesting level, so a document 100,000 levels deep ends in
:class:`RecursionError`. :func:`loads` measures the depth first, in linear time and without recursion, and
refuses anything deeper than :data:`MAX_DEPTH` (127: the deepest document ``serde_json``, and therefore the
safetensors library, accepts). Every refusal is a :class:`StrictJSONError`, a :class:`ValueError`, so callers
that already turn ``ValueError`` into their own typed error need no other change.

With ``like_serde=True`` (safetensors headers), the text is also refused where ``serde_json`` refuses it and
Python accepts it: ``NaN`` / ``Infinity``, numbers outside the float64 range, and strings holding a lone
UTF-16 surrogate; integers outside the 64-bit range and ``-0`` become floats, as serde_json reads them.
Objects that repeat a key are returned as :class:`StrictObject` (last value wins, as in both parsers) with
the repeated keys listed, so each caller decides where a repeated key matters.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

#: the deepest nesting accepted (the top-level object or array is level 1); serde_json refuses level 128
MAX_DEPTH = 127

# a JSON string, from its opening quote to its closing one (or to the end of an unterminated one); the
# possessive repeat never backtracks, so the scan is linear whatever the text
_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"?', re.S)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_SURROGATE = re.compile("[\ud800-\udfff]")
# the only way a surrogate gets into decoded JSON text: a \\uD800-\\uDFFF escape (UTF-8 cannot encode one)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
# where Python's and serde_json's numbers can differ: -0, 19+ digits (beyond 64 bits, or beyond float64
# once there are 309), a 3-digit exponent, NaN / Infinity; text without any of these needs no number hooks.
# Searched as plain substrings of the text with every digit mapped to 0 (a regex is several times slower)
_DIGITS_TO_0 = bytes.maketrans(b"123456789E", b"000000000e")
_NUMBER_RISKS = (b"0" * 19, b"e000", b"e+000", b"e-000", b"NaN", b"Infinity")
_MINUS_ZERO = re.compile(rb"-0(?![0-9.eE])")
_CHUNK = 1 << 20


class StrictJSONError(ValueError):
    """A JSON text refused by :func:`loads` (too deep, or outside serde_json's rules)."""


class StrictObject(dict[str, Any]):
    """A decoded JSON object in which some keys appeared more than once (the last value was kept)."""

    duplicates: tuple[str, ...] = ()


def duplicate_keys(obj: object) -> tuple[str, ...]:
    """The keys that ``obj`` (a decoded JSON object) repeated, in order of first repetition."""
    return obj.duplicates if isinstance(obj, StrictObject) else ()


def nesting_depth(raw: bytes) -> int:
    """How deeply arrays and objects nest in the JSON text ``raw`` (0 for a scalar), without parsing it.

    Brackets inside strings do not count. For text that is not valid JSON the result bounds the depth any
    parser reaches before it finds the error.
    """
    skeleton = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    deepest = level = 0
    for at in range(0, len(skeleton), _CHUNK):
        part = np.frombuffer(skeleton, dtype=np.uint8, count=min(_CHUNK, len(skeleton) - at), offset=at)
        steps = np.where((part == ord("[")) | (part == ord("{")), 1, -1).astype(np.int64)
        levels = np.cumsum(steps) + level
        deepest = max(deepest, int(levels.max()))
        level = int(levels[-1])
    return deepest


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) == len(pairs):
        return out
    seen: set[str] = set()
    dups: list[str] = []
    for k, _v in pairs:
        if k in seen and k not in dups:
            dups.append(k)
        seen.add(k)
    obj = StrictObject(out)
    obj.duplicates = tuple(dups)
    return obj


def _serde_int(text: str) -> int | float:
    v = int(text)
    if v == 0 and text.startswith("-"):
        return -0.0  # serde_json reads -0 as a float
    if -(2**63) <= v < 2**64:
        return v
    try:
        return float(v)  # beyond 64 bits serde_json reads a float
    except OverflowError:
        raise StrictJSONError(f"number out of range: {text[:40]}") from None


def _serde_float(text: str) -> float:
    v = float(text)
    if v in (float("inf"), float("-inf")):
        raise StrictJSONError(f"number out of range: {text[:40]}")
    return v


def _no_constant(name: str) -> Any:
    raise StrictJSONError(f"{name} is not a JSON value")


def _check_strings(obj: Any) -> None:
    stack = [obj]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if not v.isascii() and _SURROGATE.search(v):
                raise StrictJSONError(f"string {v[:40]!r} holds a lone UTF-16 surrogate")
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


def _number_risk(data: bytes) -> bool:
    if _MINUS_ZERO.search(data):
        return True
    mapped = data.translate(_DIGITS_TO_0)
    return any(r in mapped for r in _NUMBER_RISKS)


def loads(raw: bytes | str, max_depth: int = MAX_DEPTH, like_serde: bool = False) -> Any:
    """Decode the JSON text ``raw`` (UTF-8 if bytes), refusing nesting deeper than ``max_depth``.

    Raises :class:`StrictJSONError` for a refused text, and :class:`UnicodeDecodeError` or
    :class:`json.JSONDecodeError` (both :class:`ValueError`) for text that is not UTF-8 or not JSON.
    """
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    depth = nesting_depth(data)
    if depth > max_depth:
        raise StrictJSONError(f"nested {depth} levels deep, more than the {max_depth} levels allowed")
    text = raw if isinstance(raw, str) else raw.decode("utf-8")
    if not like_serde:
        return json.loads(text, object_pairs_hook=_pairs)
    if _number_risk(data):
        obj = json.loads(
            text,
            object_pairs_hook=_pairs,
            parse_int=_serde_int,
            parse_float=_serde_float,
            parse_constant=_no_constant,
        )
    else:
        obj = json.loads(text, object_pairs_hook=_pairs)
    if _SURROGATE_ESCAPE.search(data):
        _check_strings(obj)
    return obj
