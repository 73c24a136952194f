"""Every table of the CLI in a real pseudo-terminal 80 and 120 columns wide: it fits, no header is
broken inside a word, every timestamp shown is whole (to the second, no fractions); `--wide` shows
every column, unwrapped, whatever the width; NO_COLOR and FORCE_COLOR are honoured."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from backup_pipeline.app.render import header_of
from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.metrics_fleet import DAY, SCANNED_AT, build_fleet
from backup_pipeline_tests.support.terminal import CLI, on_terminal, visible

# Each command that prints rows, and the command printing the same rows as JSON.
COMMANDS = {
    "status": (["status"], ["status", "--json"]),
    "entries": (["entries"], ["entries", "--json"]),
    "reports": (["reports"], ["reports", "--json"]),
    "backups list": (["backups", "list"], ["backups", "list", "--json"]),
    "digest": (["digest", "--date", DAY], ["digest", "--date", DAY, "--format", "json"]),
    "notify alerts": (["notify", "alerts"], ["notify", "alerts", "--json"]),
    "scan": (
        ["scan", "--at", SCANNED_AT, "--partition", DAY],
        ["scan", "--at", SCANNED_AT, "--partition", DAY, "--json"],
    ),
}
ISO = re.compile(r"^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(?:\.\d+)?Z$")
RULE = "─"


@pytest.fixture
def fleet(workspace: Workspace) -> Workspace:
    build_fleet(workspace)
    return workspace


def _fields(document: Any) -> Iterator[tuple[str, Any]]:
    """Every (field, value) of a JSON document, however nested."""
    if isinstance(document, dict):
        for key, value in document.items():
            yield key, value
            yield from _fields(value)
    elif isinstance(document, list):
        for item in document:
            yield from _fields(item)


def _header_blocks(lines: list[str]) -> list[list[str]]:
    """The lines just above each table's rule: its header (one or more lines), maybe a title."""
    blocks = []
    for i, line in enumerate(lines):
        if line.startswith(RULE * 3):
            block = []
            for above in reversed(lines[:i]):
                if not above.strip() or above.startswith(RULE):
                    break
                block.insert(0, above)
            blocks.append(block[-3:])
    return blocks


@pytest.mark.parametrize("columns", [80, 120])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_tables_fit_the_terminal_with_whole_headers_and_timestamps(
    fleet: Workspace, command: str, columns: int
) -> None:
    args, json_args = COMMANDS[command]
    document = json.loads(fleet.cli(*json_args).stdout)
    fields = dict.fromkeys(key for key, _ in _fields(document))
    words = {word for field in fields for word in header_of(field).split()}

    lines = visible(on_terminal(*args, columns=columns))
    text = "\n".join(lines)

    assert all(len(line) <= columns for line in lines), text
    blocks = _header_blocks(lines)
    assert blocks, text
    shown_headers = set()
    for block in blocks:
        for token in " ".join(block).split():
            # A piece of a header word ("las", "t", "suc") is a broken header; a title is no piece.
            assert token in words or not any(token in word for word in words), (token, text)
        shown_headers |= {
            f for f in fields if all(w in " ".join(block).split() for w in header_of(f).split())
        }
    for field, value in _fields(document):
        if isinstance(value, str) and (instant := ISO.match(value)) and field in shown_headers:
            whole = f"{instant.group(1)} {instant.group(2)}Z"
            assert whole in text, f"{field} {whole} is not shown whole:\n{text}"
    assert not re.search(r"\d{2}:\d{2}:\d{2}\.\d", text), text  # no fractions of seconds
    assert "Traceback" not in text


def test_wide_shows_every_column_unwrapped_even_on_a_narrow_terminal(fleet: Workspace) -> None:
    rows = fleet.json("entries")
    narrow = visible(on_terminal("entries", columns=80))
    wide = visible(on_terminal("entries", "--wide", columns=80))
    header = wide[0].split()
    for field in rows[0]:
        assert all(word in header for word in header_of(field).split()), field
    assert len(wide) == 2 + len(rows)  # header, rule, one line per row: nothing wrapped
    assert max(len(line) for line in wide) > 80 >= max(len(line) for line in narrow)
    text = "\n".join(wide)
    for row in rows:  # in full: hashes, run ids, timestamps as stored
        assert row["dagster_run_id"] in text and row["cycle_expected_at"] in text
        if row["server_calculated_staged_hash"]:
            assert row["server_calculated_staged_hash"] in text
    # What the narrow table left out, it says, and how to see it.
    assert "--wide shows every column" in "\n".join(narrow)


def test_colours_follow_the_terminal_no_color_and_force_color(fleet: Workspace) -> None:
    assert "\x1b[" in on_terminal("status", columns=120)
    assert "\x1b[" not in on_terminal("status", columns=120, env={"NO_COLOR": "1"})
    environment = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    piped = subprocess.run([str(CLI), "status"], capture_output=True, text=True, env=environment, check=True)
    assert "\x1b[" not in piped.stdout
    forced = subprocess.run(
        [str(CLI), "status"],
        capture_output=True,
        text=True,
        env=environment | {"FORCE_COLOR": "1"},
        check=True,
    )
    assert "\x1b[" in forced.stdout and "\n" in forced.stdout.strip()
