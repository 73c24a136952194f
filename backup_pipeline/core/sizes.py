"""Byte sizes as people write and read them: one form accepted everywhere (settings, the jobs file)
and one form shown (tables), so what is shown can be written back."""

from __future__ import annotations

import re

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS |= {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
_SHOWN = (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))
SIZE_FORMS = "a number of bytes or a size such as 512MiB, 16GiB or 20GB"


def parse_byte_size(text: str) -> int:
    """`20GiB`, `512 MB`, `1.5TiB`, `4096` → bytes (KiB… powers of 1024, kB… of 1000); ValueError
    otherwise."""
    match = _SIZE_RE.match(text)
    if not match:
        raise ValueError(f"must be {SIZE_FORMS}")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])


def format_byte_size(size: int) -> str:
    """Bytes for people, in the form `parse_byte_size` reads: `812B`, `7.6MiB`, `16GiB`."""
    for unit, factor in _SHOWN:
        if size >= factor:
            value = size / factor
            shown = f"{value:.1f}".removesuffix(".0") if value < 100 else f"{value:.0f}"
            return f"{shown}{unit}"
    return f"{size}B"
