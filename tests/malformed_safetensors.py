"""Single-file safetensors cases, well-formed and malformed, built byte by byte.

Each case is ``(label, bytes)``; the differential test feeds every one to ``safetensors.safe_open`` and to
subnetscope's reader and asserts they agree on accept / refuse. Headers are written as raw text (not with
``json.dumps``) wherever the point is something ``json.dumps`` cannot produce: duplicate keys, ``NaN``, lone
surrogates, deep nesting, padding.
"""

from __future__ import annotations

import json
import struct

F32_1 = '"dtype": "F32", "shape": [1], "data_offsets": [0, 4]'


def file_bytes(header: str | bytes, data: bytes = b"", length: int | None = None) -> bytes:
    """8-byte little-endian header length, the header, the data (``length`` overrides the length field)."""
    raw = header.encode("utf-8") if isinstance(header, str) else header
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def one(entry: str, data: bytes = b"\0" * 4, extra: str = "") -> bytes:
    """A file holding one tensor ``w`` whose entry is ``{entry}``."""
    return file_bytes("{" + extra + '"w": {' + entry + "}}", data)


def nested(depth: int) -> str:
    """A JSON value of ``depth`` nested arrays."""
    return "[" * depth + "]" * depth


def two(a: tuple[int, int], b: tuple[int, int], size: int, shape_a: int = 1, shape_b: int = 1) -> bytes:
    """Tensors ``a`` and ``b`` (F32, 1-d) at the given offsets, ``size`` data bytes."""
    h = {
        "a": {"dtype": "F32", "shape": [shape_a], "data_offsets": list(a)},
        "b": {"dtype": "F32", "shape": [shape_b], "data_offsets": list(b)},
    }
    return file_bytes(json.dumps(h), b"\0" * size)


def _padded(pad: bytes) -> bytes:
    raw = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode() + pad
    return file_bytes(raw, b"\0" * 4)


#: files the safetensors library accepts (and so must subnetscope)
GOOD: list[tuple[str, bytes]] = [
    ("one f32 tensor", one(F32_1)),
    ("with __metadata__", one(F32_1, extra='"__metadata__": {"format": "pt"}, ')),
    ("empty __metadata__", one(F32_1, extra='"__metadata__": {}, ')),
    ("no tensors at all", file_bytes("{}")),
    ("only __metadata__", file_bytes('{"__metadata__": {"a": "b"}}')),
    ("empty tensor", one('"dtype": "F32", "shape": [0, 3], "data_offsets": [0, 0]', b"")),
    ("0-dim tensor", one('"dtype": "F32", "shape": [], "data_offsets": [0, 4]')),
    ("header padded with spaces", _padded(b"        ")),
    ("header padded with newlines and tabs", _padded(b"\n\t\r ")),
    ("leading whitespace", file_bytes(" \n" + '{"w": {' + F32_1 + "}}", b"\0" * 4)),
    ("offsets not in key order", two((4, 8), (0, 4), 8)),
    (
        "empty tensor between two",
        file_bytes(
            json.dumps(
                {
                    "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                    "e": {"dtype": "BF16", "shape": [0], "data_offsets": [4, 4]},
                    "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
                }
            ),
            b"\0" * 8,
        ),
    ),
    (
        "empty tensor at the end",
        file_bytes(
            json.dumps(
                {
                    "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                    "e": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]},
                }
            ),
            b"\0" * 4,
        ),
    ),
    (
        "two empty tensors",
        file_bytes(
            json.dumps(
                {
                    "e": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]},
                    "f": {"dtype": "I8", "shape": [2, 0], "data_offsets": [0, 0]},
                }
            )
        ),
    ),
    ("unknown field in an entry", one(F32_1 + ', "note": {"x": [1, 2.5, null, true]}')),
    ("unicode tensor name", file_bytes('{"w\\u00e9\u00e8": {' + F32_1 + "}}", b"\0" * 4)),
    ("nesting 100 deep in an unknown field", one(F32_1 + ', "x": ' + nested(100))),
    ("nesting 127 deep (125 in an unknown field)", one(F32_1 + ', "x": ' + nested(125))),
    ("surrogate pair in a name", file_bytes('{"w\\ud83d\\ude00": {' + F32_1 + "}}", b"\0" * 4)),
    (
        "integers beyond 64 bits in an unknown field",
        one(F32_1 + ', "x": [18446744073709551616, -' + "9" * 30 + "]"),
    ),
    ("tiny float in an unknown field", one(F32_1 + ', "x": 1e-400')),
    ("__metadata__ is null", one(F32_1, extra='"__metadata__": null, ')),
    (
        "__metadata__ after the tensors",
        file_bytes('{"w": {' + F32_1 + '}, "__metadata__": {"a": "b"}}', b"\0" * 4),
    ),
    ("repeated unknown field", one(F32_1 + ', "x": 1, "x": {"a": 1, "a": 2}')),
    ("empty tensor name", file_bytes('{"": {' + F32_1 + "}}", b"\0" * 4)),
    (
        "64-bit element count beside a zero",
        one('"dtype": "U8", "shape": [9223372036854775808, 1, 0], "data_offsets": [0, 0]', b""),
    ),
    ("duplicate key inside __metadata__", one(F32_1, extra='"__metadata__": {"a": "1", "a": "2"}, ')),
]


def _all_dtypes() -> bytes:
    sizes = [("BF16", 2), ("F16", 2), ("F32", 4), ("F64", 8), ("F8_E4M3", 1), ("F8_E5M2", 1), ("I8", 1),
             ("U8", 1), ("I16", 2), ("U16", 2), ("I32", 4), ("U32", 4), ("I64", 8), ("U64", 8), ("BOOL", 1)]  # fmt: skip
    h, off = {}, 0
    for code, size in sizes:
        h[code.lower()] = {"dtype": code, "shape": [2], "data_offsets": [off, off + 2 * size]}
        off += 2 * size
    return file_bytes(json.dumps(h), b"\0" * off)


GOOD.append(("every supported dtype", _all_dtypes()))


def _written_by_safetensors() -> list[tuple[str, bytes]]:
    """Files the safetensors library itself writes: scalars, empty tensors, no metadata, bf16, fp8."""
    import numpy as np
    import torch
    from safetensors.numpy import save as save_np
    from safetensors.torch import save as save_pt

    return [
        ("written: numpy scalar and empty", save_np({"s": np.array(3.0, dtype=np.float32),
                                                     "e": np.zeros((0, 4), dtype=np.int64)})),
        ("written: numpy with metadata", save_np({"w": np.arange(6, dtype=np.uint8).reshape(2, 3)},
                                                 metadata={"format": "np", "note": "\u00e9\n"})),
        ("written: torch bf16 fp8 bool", save_pt({"b": torch.ones(3, dtype=torch.bfloat16),
                                                  "f": torch.zeros(5, dtype=torch.float8_e4m3fn),
                                                  "m": torch.tensor([True, False])})),
        ("written: torch only empty tensors", save_pt({"a": torch.zeros(0), "b": torch.zeros(2, 0)})),
        ("written: torch nothing", save_pt({})),
    ]  # fmt: skip


GOOD.extend(_written_by_safetensors())

#: files the safetensors library refuses (and so must subnetscope)
BAD: list[tuple[str, bytes]] = [
    ("empty file", b""),
    ("shorter than the length field", b"\x01\x02\x03"),
    ("length field only, zero", struct.pack("<Q", 0)),
    ("header length zero with data", file_bytes(b"", b"{}", length=0)),
    ("header length past the end", file_bytes('{"w": {' + F32_1 + "}}", b"\0" * 4, length=10_000)),
    ("header length over 100 MB", file_bytes("{}", length=100_000_001)),
    ("header length 2**64-1", file_bytes("{}", length=2**64 - 1)),
    ("header not UTF-8", file_bytes(b'{"w\xff": {' + F32_1.encode() + b"}}", b"\0" * 4)),
    ("header not JSON", file_bytes('{"w": {"dtype": "F32", ', b"\0" * 4)),
    ("header is a JSON array", file_bytes("[]")),
    ("header is a JSON string", file_bytes('"w"')),
    ("header is null", file_bytes("null")),
    ("header is a number", file_bytes("0")),
    ("header padded with NUL bytes", _padded(b"\0\0\0\0")),
    ("text after the JSON object", _padded(b" {}")),
    ("byte order mark before the JSON", file_bytes("\ufeff" + '{"w": {' + F32_1 + "}}", b"\0" * 4)),
    ("raw newline inside a name", file_bytes('{"w\n": {' + F32_1 + "}}", b"\0" * 4)),
    ("entry is a list", file_bytes('{"w": [1, 2]}')),
    ("entry is a string", file_bytes('{"w": "F32"}')),
    ("entry is null", file_bytes('{"w": null}')),
    ("entry lacks dtype", one('"shape": [1], "data_offsets": [0, 4]')),
    ("entry lacks shape", one('"dtype": "F32", "data_offsets": [0, 4]')),
    ("entry lacks data_offsets", one('"dtype": "F32", "shape": [1]')),
    ("dtype unknown to safetensors", one('"dtype": "F128", "shape": [1], "data_offsets": [0, 4]')),
    ("dtype in lower case", one('"dtype": "f32", "shape": [1], "data_offsets": [0, 4]')),
    ("dtype is a number", one('"dtype": 4, "shape": [1], "data_offsets": [0, 4]')),
    ("bool in a shape", one('"dtype": "F32", "shape": [true, 1], "data_offsets": [0, 4]')),
    ("false in a shape", one('"dtype": "F32", "shape": [false], "data_offsets": [0, 0]', b"")),
    ("negative dimension", one('"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]')),
    ("float dimension", one('"dtype": "F32", "shape": [1.0], "data_offsets": [0, 4]')),
    ("exponent dimension", one('"dtype": "F32", "shape": [1e0], "data_offsets": [0, 4]')),
    ("string dimension", one('"dtype": "F32", "shape": ["1"], "data_offsets": [0, 4]')),
    ("null dimension", one('"dtype": "F32", "shape": [null], "data_offsets": [0, 4]')),
    ("shape is a number", one('"dtype": "F32", "shape": 1, "data_offsets": [0, 4]')),
    ("nested shape", one('"dtype": "F32", "shape": [[1]], "data_offsets": [0, 4]')),
    (
        "dimension of 2**64 beside a zero",
        one('"dtype": "F32", "shape": [0, 18446744073709551616], "data_offsets": [0, 0]', b""),
    ),
    (
        "shape product overflows before a zero",
        one('"dtype": "F32", "shape": [4294967296, 4294967296, 0], "data_offsets": [0, 0]', b""),
    ),
    (
        "bit count overflows",
        one('"dtype": "F64", "shape": [2305843009213693952], "data_offsets": [0, 8]', b"\0" * 8),
    ),
    ("dimension -0", one('"dtype": "F32", "shape": [-0], "data_offsets": [0, 0]', b"")),
    ("data offset of 2**64", one('"dtype": "F32", "shape": [1], "data_offsets": [18446744073709551616, 4]')),
    (
        "element count overflows before a zero",
        one('"dtype": "U8", "shape": [9223372036854775808, 2, 0], "data_offsets": [0, 0]', b""),
    ),
    ("one data offset", one('"dtype": "F32", "shape": [1], "data_offsets": [4]')),
    ("three data offsets", one('"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 4]')),
    ("negative data offset", one('"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]')),
    ("float data offsets", one('"dtype": "F32", "shape": [1], "data_offsets": [0.0, 4.0]')),
    ("bool data offsets", one('"dtype": "BOOL", "shape": [1], "data_offsets": [false, true]', b"\0")),
    ("data offsets reversed", one('"dtype": "F32", "shape": [1], "data_offsets": [4, 0]')),
    ("data offsets as an object", one('"dtype": "F32", "shape": [1], "data_offsets": {"0": 0, "1": 4}')),
    (
        "first tensor does not start at 0",
        one('"dtype": "F32", "shape": [1], "data_offsets": [4, 8]', b"\0" * 8),
    ),
    ("gap between data offsets", two((0, 4), (8, 12), 12)),
    (
        "empty tensor inside another",
        file_bytes(
            json.dumps(
                {
                    "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                    "e": {"dtype": "F32", "shape": [0], "data_offsets": [2, 2]},
                }
            ),
            b"\0" * 4,
        ),
    ),
    (
        "empty tensor past the end",
        file_bytes(
            json.dumps(
                {
                    "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                    "e": {"dtype": "F32", "shape": [0], "data_offsets": [8, 8]},
                }
            ),
            b"\0" * 4,
        ),
    ),
    ("overlapping tensors", two((0, 8), (4, 12), 12, 2, 2)),
    ("tensor inside another", two((0, 8), (4, 8), 8, 2, 1)),
    ("trailing bytes after the last tensor", one(F32_1, b"\0" * 5)),
    ("data shorter than the offsets", one(F32_1, b"\0" * 3)),
    ("bytes do not match shape", one('"dtype": "F32", "shape": [2], "data_offsets": [0, 4]')),
    (
        "duplicate tensor name, other bytes",
        file_bytes(
            '{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
            '"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}',
            b"\0" * 8,
        ),
    ),
    (
        "duplicate field in an entry",
        one('"dtype": "F32", "dtype": "F32", "shape": [1], "data_offsets": [0, 4]'),
    ),
    ("duplicate __metadata__", one(F32_1, extra='"__metadata__": {}, "__metadata__": {}, ')),
    ("__metadata__ value is a number", one(F32_1, extra='"__metadata__": {"step": 1}, ')),
    ("__metadata__ value is null", one(F32_1, extra='"__metadata__": {"a": null}, ')),
    ("__metadata__ value is a list", one(F32_1, extra='"__metadata__": {"a": ["x"]}, ')),
    ("__metadata__ value is an object", one(F32_1, extra='"__metadata__": {"a": {"b": "c"}}, ')),
    ("__metadata__ is a list", one(F32_1, extra='"__metadata__": ["a"], ')),
    ("__metadata__ is a string", one(F32_1, extra='"__metadata__": "pt", ')),
    ("NaN in an unknown field", one(F32_1 + ', "x": NaN')),
    ("Infinity in an unknown field", one(F32_1 + ', "x": -Infinity')),
    ("number out of range in an unknown field", one(F32_1 + ', "x": 1e400')),
    ("lone surrogate in a tensor name", file_bytes('{"w\\ud800": {' + F32_1 + "}}", b"\0" * 4)),
    ("invalid escape in a name", file_bytes('{"w\\x": {' + F32_1 + "}}", b"\0" * 4)),
    ("lone surrogate in an unknown field", one(F32_1 + ', "x": "\\udc00"')),
    ("nesting 128 deep (126 in an unknown field)", one(F32_1 + ', "x": ' + nested(126))),
    ("objects nested 128 deep", one(F32_1 + ', "x": ' + '{"a": ' * 126 + "1" + "}" * 126)),
    ("no tensors but data bytes", file_bytes("{}", b"\0")),
    ("header of one space", file_bytes(" ")),
    ("nesting 200 deep", one(F32_1 + ', "x": ' + nested(200))),
    ("nesting 100,000 deep", one(F32_1 + ', "x": ' + nested(100_000))),
    ("header nested 100,000 deep", file_bytes(nested(100_000))),
    ("packed dtype with an odd count", one('"dtype": "F4", "shape": [3], "data_offsets": [0, 2]', b"\0\0")),
]

#: files safetensors accepts and subnetscope refuses on purpose, each with the reason
STRICTER: list[tuple[str, bytes]] = [
    # a repeated tensor name is ambiguous (safetensors silently keeps the last entry): a comparison by name
    # cannot say which of the two it measured
    (
        "duplicate tensor name, same bytes",
        file_bytes('{"w": {' + F32_1 + '}, "w": {' + F32_1 + "}}", b"\0" * 4),
    ),
    (
        "duplicate tensor name, other dtype",
        file_bytes(
            '{"w": {' + F32_1 + '}, "w": {"dtype": "I32", "shape": [1], "data_offsets": [0, 4]}}', b"\0" * 4
        ),
    ),
]

#: well-formed files in dtypes subnetscope cannot read: refused with UnsupportedDtypeError
UNSUPPORTED: list[tuple[str, bytes]] = [
    ("F4", one('"dtype": "F4", "shape": [2], "data_offsets": [0, 1]', b"\0")),
    ("F8_E8M0", one('"dtype": "F8_E8M0", "shape": [1], "data_offsets": [0, 1]', b"\0")),
    ("C64", one('"dtype": "C64", "shape": [1], "data_offsets": [0, 8]', b"\0" * 8)),
]
