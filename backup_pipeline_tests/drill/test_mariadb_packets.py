"""What an attacker found past the MariaDB guard, drilled through the CLI: statements sent beside a
routine in one packet (the client sends everything up to `;;` at once and the server runs each), a
client character set in which a character swallows a backslash, a client that quits where the guard
sees a string — and the drill's last word on all of them: the client must run a statement the drill
sends after the dump, or the restore did not reach the dump's end."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.drill_fixtures import (
    DAY2,
    SITE,
    MariadbDumps,
    Site,
    build_site,
    drill_processes,
    gz,
    staged,
)

FOOTER = b"\n-- Dump completed"
BEFORE = b"CREATE TABLE t (a int);\nINSERT INTO t VALUES (1);\n"  # the drill's sanity passes without
FAILS_AFTER = b"INSERT INTO no_such_table VALUES (1);\n"  # ... what follows the quit
QUIT = b"SELECT 'a\\' \\q ';\n"  # with NO_BACKSLASH_ESCAPES, the client's quit after a string
MODE_BESIDE_A_ROUTINE = (
    b"DELIMITER ;;\n"
    b'CREATE PROCEDURE p_smuggle() SELECT 1; SET sql_mode="NO_BACKSLASH_ESCAPES" ;;\n'
    b"DELIMITER ;\n"
)
SJIS = (  # 0x95 0x5C is one sjis character to the server: its string ends where the guard sees `\'`
    b"SET NAMES sjis;\n"
    b"SELECT 'x\x95\\'; SET sql_mode=\"NO_BACKSLASH_ESCAPES\"; SET NAMES utf8mb4; SELECT 1 -- ';\n"
)
# What the guard cannot see: a function defined earlier, called in a packet, changes the variable a
# later `SET sql_mode = @saved_sql_mode` reads. The client then quits where the guard reads a string.
HIDDEN_BY_A_FUNCTION = (
    b"DELIMITER ;;\n"
    b"CREATE FUNCTION f_mode() RETURNS int\n"
    b"BEGIN SET @saved_sql_mode = 'NO_BACKSLASH_ESCAPES'; RETURN 1; END ;;\n"
    b"DELIMITER ;\n"
    b"SET @saved_sql_mode = @@sql_mode;\n"
    b"DELIMITER ;;\n"
    b"CREATE PROCEDURE p_call() SELECT 1; DO f_mode() ;;\n"
    b"DELIMITER ;\n"
    b"SET sql_mode = @saved_sql_mode;\n"
)


@pytest.fixture(scope="module")
def sentinels() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="bp-packets-", dir="/tmp"))
    os.chmod(folder, 0o777)  # the drill user could write here: only the defences keep it empty
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def inject(frame: bytes, body: bytes) -> bytes:
    """Before the first table, where the guard still knows the sql_mode."""
    at = frame.index(b"--\n-- Table structure")
    return frame[:at] + body + frame[at:]


@pytest.fixture(scope="module")
def site(module_workspace: Workspace, mariadb_dumps: MariadbDumps, sentinels: Path) -> Site:
    bodies = {
        "mode_quit": BEFORE + MODE_BESIDE_A_ROUTINE + QUIT + FAILS_AFTER,
        "sjis_quit": BEFORE + SJIS + QUIT + FAILS_AFTER,
        "mode_bang": MODE_BESIDE_A_ROUTINE
        + b"SELECT 'a\\' \\! touch "
        + str(sentinels).encode()
        + b"/bang ';\n",
        "function_quit": BEFORE + HIDDEN_BY_A_FUNCTION + QUIT + FAILS_AFTER,
        "watch_text": (
            b"SET SESSION max_statement_time = 0;\n"
            b"SELECT SLEEP(8), 'e\x1b]0;PWNED\x07\x1b[2J\xe2\x80\xaeevil';\n"
        ),
    }
    dumps = {
        name: {DAY2: staged(name, DAY2, gz(inject(mariadb_dumps.get(name), body)), ".sql.gz")}
        for name, body in bodies.items()
    }
    frame = mariadb_dumps.get("cut_quit")  # cut inside a string, no footer, behind the hidden quit
    cut = inject(frame, b"CREATE TABLE t (a longtext);\n" + HIDDEN_BY_A_FUNCTION + QUIT)
    cut = cut[: cut.rindex(FOOTER)] + b"INSERT INTO t VALUES ('" + b"x" * (4 << 20)
    dumps["cut_quit"] = {DAY2: staged("cut_quit", DAY2, gz(cut), ".sql.gz")}
    return build_site(module_workspace, dumps)


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("mode_quit", "statements about sql_mode"),
        ("sjis_quit", "client character set 'sjis'"),
        ("mode_bang", "statements about sql_mode"),
    ],
)
def test_the_guard_refuses_what_a_packet_or_a_character_set_would_hide(
    site: Site, name: str, words: str, sentinels: Path, drill_dir: Path
) -> None:
    row = site.drill_json(name, DAY2)
    assert row["outcome"] == "RESTORE_FAILED" and words in row["reason"], row
    assert list(sentinels.iterdir()) == []
    assert drill_processes(drill_dir) == []


@pytest.mark.parametrize("name", ["function_quit", "cut_quit"])
def test_a_client_that_stops_before_the_dumps_end_fails_the_drill(site: Site, name: str) -> None:
    """Whatever the guard misread, a restore whose client never ran the drill's closing statement
    is no restore: here the dump's own INSERT into a missing table, or its cut, never ran."""
    row = site.drill_json(name, DAY2)
    assert row["outcome"] == "RESTORE_FAILED", row
    reason = row["reason"] or ""
    assert "ended before the dump did" in reason or "truncated" in reason, reason


def test_the_watch_repeats_no_terminal_escape(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """The statement the watch stopped is the dump's text: escaped in the run's log and the table."""
    monkeypatch.setenv("BACKUP_PIPELINE_DRILL_STATEMENT_TIMEOUT_SECONDS", "2")
    result = site.drill("--agent", SITE, "--database", "watch_text", "-v", expect_ok=False)
    assert "RESTORE_FAILED" in result.output and "dagster - INFO - restore_drills" in result.output
    assert "\x1b" not in result.output and "\u202e" not in result.output, result.output[-2000:]
