"""Agent text made visible: what a remote site wrote, fit for a terminal, a log line or markdown.

An agent's file names, error messages and logs may hold terminal escape sequences (a window title,
a cleared screen, hidden text), line breaks that forge log lines, or bidirectional overrides that
show `exe.txt` as `txt.exe`. Wherever such text reaches a person it goes through `visible`: every
control character and every bidirectional formatting character is written as its Python escape
(`\\x1b`, `\\x0a`, `\\u202e`), so the text shows exactly what it holds and cannot act on the display.
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls; the bidirectional marks, embeddings, overrides and isolates; the
# line and paragraph separators (a line break to many terminals and log viewers); lone UTF-16
# surrogates (how Python keeps the undecodable bytes of a file name), which no terminal can show.
_INVISIBLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(text: str) -> str:
    """`text` with every control and bidirectional formatting character escaped (`\\x1b`, `\\u202e`)."""
    return _INVISIBLE.sub(_escape, text)


def excerpt(text: str, limit: int = 80) -> str:
    """`text` made visible and cut to at most `limit` characters (an ellipsis says it was cut)."""
    shown = visible(text)
    if len(shown) <= limit:
        return shown
    kept, length = [], 0
    for char in text:  # cut between escapes, never inside one
        part = visible(char)
        if length + len(part) > limit - 1:
            break
        kept.append(part)
        length += len(part)
    return "".join(kept) + "…"
