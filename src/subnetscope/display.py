"""Text for people: names from a checkpoint never reach a terminal raw.

A tensor name, a path or a hub id comes from the input, and may hold a newline (which would let a
checkpoint print a second, forged ``subnetscope: error:`` line), a carriage return, or an ANSI escape
sequence (which can recolour, move the cursor or clear the screen). :func:`printable` escapes every such
character as a visible backslash sequence (``\\n``, ``\\x1b``, ``\\u202e``); it is applied to every value
interpolated into human-readable output (tables, summaries, findings, log and error lines).
:func:`printable_lines` does the same to a whole rendered text but keeps its own line breaks, as the last
guard where text leaves for a terminal. JSON output is never escaped: it stays exact.
"""

from __future__ import annotations

import re
from typing import Any

# C0 and C1 controls and DEL; Unicode line/paragraph separators; bidirectional overrides and isolates;
# zero-width and other invisible format characters, and the byte order mark
_OTHERS = "\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb"
_UNSAFE_RE = re.compile(f"[\x00-\x1f{_OTHERS}]")
_UNSAFE_BUT_NEWLINE_RE = re.compile(f"[\x00-\x09\x0b-\x1f{_OTHERS}]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(m: re.Match[str]) -> str:
    c = m.group(0)
    named = _NAMED.get(c)
    if named is not None:
        return named
    o = ord(c)
    return f"\\x{o:02x}" if o <= 0xFF else f"\\u{o:04x}"


def printable(value: Any) -> str:
    """``str(value)`` with every control, separator and invisible format character escaped: one line, no
    terminal escape sequences. Ordinary text (letters of any script, punctuation, spaces) is unchanged."""
    s = value if isinstance(value, str) else str(value)
    if _UNSAFE_RE.search(s) is None:
        return s
    return _UNSAFE_RE.sub(_escape, s)


def printable_lines(text: str) -> str:
    """Like :func:`printable` for a rendered multi-line text: its ``\\n`` line breaks stay, everything else
    unsafe is escaped."""
    if _UNSAFE_BUT_NEWLINE_RE.search(text) is None:
        return text
    return _UNSAFE_BUT_NEWLINE_RE.sub(_escape, text)
