"""Issue 20: agent text made visible. Any text: no control or bidirectional formatting character
survives `visible` (nor markdown escaping), what is printable is kept, and it says what was there."""

from __future__ import annotations

import re
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from backup_pipeline.core.alerts import escape_markdown
from backup_pipeline.core.text import excerpt, visible

BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def acts_on_a_display(char: str) -> bool:
    return unicodedata.category(char) in ("Cc", "Cs") or char in BIDI + "\u2028\u2029"


@given(st.text())
def test_nothing_that_acts_on_a_display_survives(text: str) -> None:
    shown = visible(text)
    assert not any(acts_on_a_display(c) for c in shown), repr(shown)
    assert not any(acts_on_a_display(c) for c in escape_markdown(text))


@given(st.text(st.characters(blacklist_categories=["Cc", "Cs"], blacklist_characters=BIDI + "\u2028\u2029")))
def test_printable_text_is_kept(text: str) -> None:
    assert visible(text) == text


def test_what_was_there_is_said() -> None:
    assert visible("a\x1b]0;title\x07b") == "a\\x1b]0;title\\x07b"
    assert visible("exe.\u202etxt") == "exe.\\u202etxt"
    assert visible("line\nforged") == "line\\x0aforged"
    assert visible("\x9b31m") == "\\x9b31m"
    assert excerpt("\x1b" * 100, 14) == "\\x1b\\x1b\\x1b…"  # never half an escape
    assert re.fullmatch(r"[\\x0-9a-f]+", visible("\x00\x1f\x7f"))
