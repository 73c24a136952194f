"""Rendering for people at a terminal: rows as tables (rich), and the daily digest as text.

On a terminal, tables fit its width (long texts wrap within their column) and statuses are
coloured; elsewhere (a pipe, a file) they are plain text at their natural width, never wrapped, so
`grep` sees whole rows. Hashes and run ids are shortened unless `wide`; `--json` never comes here.
"""

from __future__ import annotations

import io
import re
import shutil
import sys
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

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
STATUS_COLUMNS = frozenset({"status", "current_status", "result", "event", "expected_status"})
STYLES = {
    "OK": "green",
    "SUCCESS": "green",
    "ok": "green",
    "sent": "green",
    "HASH_MISMATCH": "yellow",
    "UNKNOWN": "yellow",
    "MISSING": "bold red",
    "FAILED": "bold red",
    "TRANSFER_INTEGRITY_FAILED": "bold red",
    "failed": "bold red",
    "RECOVERED": "green",
    "SIZE_ANOMALY": "yellow",
}
# Never wrapped on a terminal: the narrower columns (messages, times) wrap instead.
KEPT_WHOLE = (
    frozenset({"agent_id", "database_name", "name", "partition", "day", "target"})
    | STATUS_COLUMNS
    | HASH_COLUMNS
    | RUN_ID_COLUMNS
)
_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z")


def on_terminal() -> bool:
    return sys.stdout.isatty()


def table(rows: list[dict[str, Any]], columns: list[str] | None = None, *, wide: bool = False) -> str:
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0])
    terminal = on_terminal()
    grid = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, show_edge=False)
    shown = columns
    cells = [[_cell(column, row.get(column), wide) for column in shown] for row in rows]
    for i, column in enumerate(shown):
        header = column if column.isupper() else column.replace("_", " ")  # statuses keep their name
        whole = column in KEPT_WHOLE
        widest = max(len(row[i]) for row in cells) if whole and not wide else None
        grid.add_column(header, overflow="fold", no_wrap=whole or not terminal, min_width=widest)
    for row in cells:
        grid.add_row(*row)
    return _print(grid, terminal)


def _cell(column: str, value: Any, wide: bool) -> Text:
    if value is None:
        return Text("")
    text = visible(str(value))  # agent texts: no escape sequence, line break or bidi override acts
    if not wide and column in HASH_COLUMNS and len(text) > 13:
        text = text[:12] + "…"
    elif not wide and column in RUN_ID_COLUMNS and len(text) > 9:
        text = text[:8]
    elif _INSTANT.fullmatch(text):
        text = text.replace("T", " ")  # a space lets a narrow column wrap between day and time
    style = STYLES.get(text, "") if column in STATUS_COLUMNS else ""
    return Text(text, style=style)


def _print(renderable: Any, terminal: bool) -> str:
    out = io.StringIO()
    width = shutil.get_terminal_size().columns if terminal else 100_000
    console = Console(
        file=out, width=width, force_terminal=terminal, no_color=not terminal, highlight=False, emoji=False
    )
    console.print(renderable)
    return "\n".join(line.rstrip() for line in out.getvalue().rstrip("\n").splitlines())


def digest_text(digest: FleetDigest, *, wide: bool = False) -> str:
    parts = [digest.headline, "", table(agent_rows(digest), AGENT_COLUMNS, wide=wide)]
    if digest.problems:
        parts += ["", "Problems", table(problem_rows(digest), wide=wide)]
    if digest.anomalies:
        parts += ["", "Size anomalies", table(anomaly_rows(digest), wide=wide)]
    if digest.drills.drills:
        parts += ["", f"Restore drills: {drill_counts(digest)}"]
    if digest.drill_problems:
        parts += [table(drill_rows(digest), wide=wide)]
    return "\n".join(parts)
