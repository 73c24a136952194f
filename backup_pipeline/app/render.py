"""Rendering for people: rows as tables (rich), and the daily digest as text.

On a terminal a table fits its width: columns are kept in order of importance while they fit, and
those kept show whole words and whole timestamps (seconds, no fractions); only long texts (messages,
reasons) wrap, between words. Elsewhere (a pipe, a file) a table is plain text at its natural width,
one line per row, so `grep` sees whole rows. `wide` shows every column, hashes and run ids in full,
never wrapped, whatever the width. Colours follow the terminal, `NO_COLOR` and `FORCE_COLOR`.
`--json` never comes here.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from backup_pipeline.core.sizes import format_byte_size
from backup_pipeline.core.text import visible
from backup_pipeline.digest.build import FleetDigest
from backup_pipeline.digest.render import (
    AGENT_COLUMNS,
    agent_rows,
    anomaly_rows,
    drill_counts,
    drill_rows,
    problem_rows,
)

# SHA-256 digests (and content fingerprints) shown by their first 12 characters, Dagster run ids by 8
# (as the Dagster UI does).
HASH_COLUMNS = frozenset(
    {
        "previous_successful_hash_global",
        "previous_successful_hash_used",
        "previous_successful_fingerprint_used",
        "previous_successful_content_fingerprint",
        "content_sha256",
        "server_calculated_staged_hash",
        "server_content_fingerprint",
        "agent_backup_hash_pre_compress",
        "agent_compress_hash_post_compress",
    }
)
RUN_ID_COLUMNS = frozenset({"run_id", "dagster_run_id"})
SIZE_COLUMNS = frozenset(
    {
        "bytes",
        "size",
        "size_median",
        "server_staged_size",
        "agent_backup_size_pre_compress",
        "agent_compress_size_post_compress",
        "staged_size",
    }
)
STATUS_COLUMNS = frozenset({"status", "current_status", "result", "event", "expected_status", "outcome"})
# Texts that may be long: they wrap, between words, and take the width the other columns leave.
WRAPPED_COLUMNS = frozenset(
    {"message", "reason", "error", "notes", "deliveries", "note", "archived_path", "schedule", "detail"}
)
STYLES = {
    "OK": "green",
    "SUCCESS": "green",
    "RESTORED": "green",
    "ok": "green",
    "sent": "green",
    "HASH_MISMATCH": "yellow",
    "UNKNOWN": "yellow",
    "NOT_DRILLABLE": "yellow",
    "MISSING": "bold red",
    "FAILED": "bold red",
    "TRANSFER_INTEGRITY_FAILED": "bold red",
    "RESTORE_FAILED": "bold red",
    "failed": "bold red",
    "RECOVERED": "green",
    "SIZE_ANOMALY": "yellow",
}
# Headers for people (`--json` keeps the field names).
HEADERS = {
    "agent_id": "agent",
    "database_name": "database",
    "current_status": "status",
    "last_checked_timestamp": "checked",
    "last_successful_backup_timestamp": "last success",
    "previous_successful_hash_global": "last hash",
    "cycle_expected_at": "cycle",
    "restore_drill": "drill",
    "superseded_at": "superseded",
    "file_name": "file",
    "operation_end_time": "operation ended",
    "archived_path": "archived as",
    "ingested_at": "recorded",
    "content_sha256": "sha256",
    "run_id": "run",
    "dagster_run_id": "run",
    "reports_accepted": "reports",
    "reports_rejected": "rejected",
    "new_or_changed": "changed",
    "still_open": "open",
    "duration_seconds": "seconds",
    "early_minutes": "early min",
    "grace_minutes": "grace min",
    "content_change": "content",
    "is_active": "active",
    "attempted_at": "attempted",
    "raised_at": "raised",
    "target_id": "target id",
    "configured_in": "from",
    "jobs": "expected",
    "oldest_last_success": "oldest success",
    "oldest_last_success_database": "of database",
}
# Shown once above the table, when every row has the same value and the table is too wide.
GROUPED = "agent_id"
CAPTIONABLE = frozenset({"agent_id", "database_name", "name", "schedule", "partition", "day", "target"})
_INSTANT = re.compile(r"(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(?:\.\d+)?(Z|[+-]\d{2}:\d{2})")
_BREAK_AFTER = re.compile(r"(?<=[_./,:;=-])")  # where a word too long for its column may break
_LONG_HEX = re.compile(r"\b[0-9a-f]{32,}\b")
SEPARATOR = 2  # spaces between two columns (rich's SIMPLE_HEAD box, collapsed padding)
MIN_WRAPPED = 16  # a wrapped text column narrower than this is left out rather than shown in shreds


def on_terminal() -> bool:
    return sys.stdout.isatty()


def colours_wanted(terminal: bool) -> bool:
    """https://no-color.org and FORCE_COLOR, over whether the output is a terminal."""
    if os.environ.get("NO_COLOR"):
        return False
    return terminal or bool(os.environ.get("FORCE_COLOR"))


def header_of(column: str) -> str:
    if column.isupper():  # statuses keep their name
        return column
    return HEADERS.get(column, column.replace("_", " "))


@dataclass(eq=False)
class _Column:
    name: str
    header: str
    cells: list[Text]
    wrapped: bool
    width: int = 0  # on a terminal, the width it is given

    @property
    def natural(self) -> int:
        return max([len(self.header), *(len(cell) for cell in self.cells)])

    @property
    def needed(self) -> int:
        """The least width it is shown at: its header's longest word, and all of its cells — or,
        for a wrapped text, as much of it as MIN_WRAPPED."""
        word = max(len(w) for w in self.header.split() or [""])
        cells = max([0, *(len(cell) for cell in self.cells)])
        if self.wrapped:
            cells = min(cells, MIN_WRAPPED)
        return max(word, cells)


def table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str] | None = None,
    *,
    wide: bool = False,
    keep: Sequence[str] | None = None,
) -> str:
    """`rows` as a table of `columns` (all the rows' fields too when `wide`); on a terminal, the
    columns that fit in the order of `keep` (default: `columns`' order)."""
    if not rows:
        return "(no rows)"
    shown = list(columns or rows[0])
    if wide:
        shown += [c for c in rows[0] if c not in shown]
    terminal = on_terminal()
    fit = terminal and not wide
    fitted = [_column(c, rows, wide, fit) for c in shown]
    if not fit:
        return _print(_grid(fitted, fit=False), colours_wanted(terminal), None)
    return _fitted(fitted, list(keep or shown), shutil.get_terminal_size().columns)


def _fitted(columns: list[_Column], keep: list[str], width: int) -> str:
    """The table on a terminal `width` wide. When too wide, a column with one value for every row
    goes above it, the agent (when it varies) becomes a title line above each of its groups of
    rows, and the least important columns are left out, said in a note."""
    kept, left_out = _fit(columns, keep, width)
    caption: list[str] = []
    groups: list[str] | None = None
    if left_out and len(columns[0].cells) > 1:
        constant = [c for c in columns if c.name in CAPTIONABLE and len({x.plain for x in c.cells}) == 1]
        caption = [f"{c.header}: {c.cells[0].plain}" for c in constant]
        rest = [c for c in columns if c not in constant]
        grouped = next((c for c in rest if c.name == GROUPED), None)
        if grouped is not None:
            groups = [cell.plain for cell in grouped.cells]
            rest.remove(grouped)
        kept, left_out = _fit(rest, keep, width)
    colours = colours_wanted(True)
    parts = ["  ".join(caption)] if caption else []
    if groups is None:
        parts.append(_print(_grid(kept, fit=True), colours, width))
    else:
        parts.append(_print(_grid(kept, fit=True, rows=[]), colours, width))
        for title, indexes in _runs(groups):
            parts.append(_print(Text(title, style="bold"), colours, width))
            parts.append(_print(_grid(kept, fit=True, rows=indexes, header=False), colours, width))
    if left_out:
        names = ", ".join(header_of(c) for c in left_out)
        note = f"(left out to fit {width} columns: {names}; --wide shows every column)"
        parts.append(textwrap.fill(note, width, break_long_words=False))
    return "\n".join(parts)


def _runs(values: list[str]) -> list[tuple[str, list[int]]]:
    """Consecutive rows with the same value: (the value, their indexes)."""
    runs: list[tuple[str, list[int]]] = []
    for index, value in enumerate(values):
        if runs and runs[-1][0] == value:
            runs[-1][1].append(index)
        else:
            runs.append((value, [index]))
    return runs


def _column(name: str, rows: Sequence[dict[str, Any]], wide: bool, fit: bool) -> _Column:
    return _Column(
        name=name,
        header=header_of(name),
        cells=[_cell(name, row.get(name), wide) for row in rows],
        wrapped=fit and name in WRAPPED_COLUMNS,
    )


def _fit(columns: list[_Column], keep: list[str], width: int) -> tuple[list[_Column], list[str]]:
    """The columns that fit `width`, most important first (a column too wide is skipped, not the
    rest), shown in their own order, with their widths; and the names of those left out."""
    by_name = {c.name: c for c in columns}
    order = [n for n in keep if n in by_name] + [c.name for c in columns if c.name not in keep]
    chosen: list[_Column] = []
    used = -SEPARATOR
    for name in order:
        needed = by_name[name].needed + SEPARATOR
        if used + needed <= width or not chosen:
            chosen.append(by_name[name])
            used += needed
    kept = [c for c in columns if c in chosen]
    spare = width - used
    for column in kept:
        column.width = column.needed
    # The room left: first to the texts that wrap, then to headers that would take two lines.
    for column in sorted(kept, key=lambda c: not c.wrapped):
        grow = min(max(spare, 0), column.natural - column.width)
        column.width += grow
        spare -= grow
    return kept, [c.name for c in columns if c not in chosen]


def _grid(columns: list[_Column], *, fit: bool, rows: list[int] | None = None, header: bool = True) -> Table:
    """The table of `columns` (their `rows`, default all); on a terminal, at the widths given."""
    grid = Table(
        box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, show_edge=False, show_header=header
    )
    for column in columns:
        if not fit:
            grid.add_column(column.header, no_wrap=True)
            continue
        title = textwrap.fill(column.header, column.width, break_long_words=False)
        grid.add_column(title, width=column.width, no_wrap=True)
    for index in range(len(columns[0].cells)) if rows is None else rows:
        grid.add_row(*(_wrapped(c, c.cells[index]) if fit and c.wrapped else c.cells[index] for c in columns))
    return grid


def _wrapped(column: _Column, cell: Text) -> Text:
    return Text("\n".join(wrap_text(cell.plain, column.width)), style=cell.style)


def wrap_text(text: str, width: int) -> list[str]:
    """`text` in lines of at most `width`, broken between words; a word longer than that (a file
    name, a path) after one of its punctuation marks where it can, else at the width."""
    text, lines = " ".join(text.split()), []
    while len(text) > width:
        space = text.rfind(" ", 0, width + 1)
        if space > 0:
            lines.append(text[:space])
            text = text[space + 1 :]
            continue
        cut = max((m.start() for m in _BREAK_AFTER.finditer(text, 1, width)), default=0) or width
        lines.append(text[:cut])
        text = text[cut:].lstrip()
    return [*lines, text]


def _cell(column: str, value: Any, wide: bool) -> Text:
    if value is None:
        return Text("")
    text = _plain(value)
    if column in SIZE_COLUMNS and isinstance(value, int) and not isinstance(value, bool) and not wide:
        text = format_byte_size(value)
    elif not wide and column in HASH_COLUMNS and len(text) > 13:
        text = text[:12] + "…"
    elif not wide and column in RUN_ID_COLUMNS and len(text) > 9:
        text = text[:8]
    elif not wide:
        text = _INSTANT.sub(_instant, text)
        text = _LONG_HEX.sub(lambda m: m.group()[:12] + "…", text)  # digests quoted in messages
    style = STYLES.get(text, "") if column in STATUS_COLUMNS else ""
    return Text(text, style=style)


def _instant(match: re.Match[str]) -> str:
    """An ISO-8601 instant as people read it: day, time to the second, zone."""
    return f"{match.group(1)} {match.group(2)}{match.group(3)}"


def _plain(value: Any) -> str:
    """A value as text, one line: agents' texts may hold newlines and terminal escape codes."""
    if isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, (list, tuple)):
        text = ", ".join(_plain(v) for v in value)
    elif isinstance(value, dict):
        text = ", ".join(f"{k}: {_plain(v)}" for k, v in value.items())
    else:
        text = str(value)
    text = " ".join(text.split("\n")).replace("\t", " ").replace("\r", " ")
    return visible(text)  # escape sequences, other controls and bidirectional overrides: escaped


def _print(renderable: Any, colours: bool, width: int | None) -> str:
    """Rendered at `width`, or at its natural width (never wrapped) when None."""
    out = io.StringIO()
    console = Console(
        file=out,
        width=width or 1_000_000,
        force_terminal=colours,
        no_color=not colours,
        highlight=False,
        emoji=False,
    )
    console.print(renderable)
    return "\n".join(line.rstrip() for line in out.getvalue().rstrip("\n").splitlines())


def digest_text(digest: FleetDigest, *, wide: bool = False) -> str:
    headline = digest.headline
    if on_terminal() and not wide:  # whole words, as the tables below
        headline = textwrap.fill(headline, shutil.get_terminal_size().columns, break_long_words=False)
    parts = [headline, "", table(agent_rows(digest), AGENT_COLUMNS, wide=wide)]
    if digest.problems:
        parts += ["", "Problems", table(problem_rows(digest), wide=wide)]
    if digest.anomalies:
        parts += ["", "Size anomalies", table(anomaly_rows(digest), wide=wide)]
    if digest.drills.drills:
        parts += ["", f"Restore drills: {drill_counts(digest)}"]
    if digest.drill_problems:
        parts += [table(drill_rows(digest), wide=wide)]
    return "\n".join(parts)
