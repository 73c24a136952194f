"""The generic audit, for MariaDB: every SQL statement the product sends to a scratch MariaDB, run in a
restored database full of stored functions and views named like every function and relation those
statements name, runs nothing of theirs.

MariaDB has no search path: an unqualified function that is not a built-in, or an unqualified
relation, resolves in the session's current database — the dump's. So the statements are recorded
from real drills (a sound dump, and one whose statement the watch stops), a dump laying the traps is
drilled (it must restore, with the same figures), and each statement is replayed in the trapped
database as the admin with that database current — the worst case — and must not fail.
"""

from __future__ import annotations

import re
import subprocess

import pymysql
import pytest

from backup_pipeline.adapters.drill_host import Limits
from backup_pipeline.adapters.scratch_mariadb import ADMIN_USER, DATABASE
from backup_pipeline.core.mariadb_guard import MariadbScriptGuard
from backup_pipeline.drill.restore import DrillEnvironment, StderrTail
from backup_pipeline.storage.scratch import SentStatement, audited
from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.drill.test_hostile_mariadb import ENDLESS, inject
from backup_pipeline_tests.drill.test_mariadb_drills import renamed
from backup_pipeline_tests.support.drill_fixtures import DAY2, MariadbDumps, build_site, gz, staged

KEYWORDS = {"select", "in", "values", "exists", "from", "where", "and", "not", "as", "on", "into"}


def mariadb_statements(sent: list[SentStatement]) -> list[SentStatement]:
    return [s for s in sent if s.engine == "mariadb"]


def functions_named(statements: list[SentStatement]) -> set[str]:
    names = set()
    for sent in statements:
        text = re.sub(r"'(?:[^'\\]|\\.|'')*'", "''", sent.sql)
        for match in re.finditer(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*\(", text):
            if match.group(1).lower() not in KEYWORDS:
                names.add(match.group(1).lower())
    return names


def relations_named(statements: list[SentStatement]) -> set[str]:
    found = set()
    for sent in statements:
        found |= {m.lower() for m in re.findall(r"\b[a-z_]+\.([A-Za-z_]+)\b", sent.sql)}
    return found - {"sql_mode"}


def traps(functions: set[str], relations: set[str]) -> str:
    """Statements, run at restore time by the restore account, that lay every trap."""
    lines = [
        "DELIMITER ;;",
        "CREATE FUNCTION bp_boom(what VARCHAR(200)) RETURNS INT NOT DETERMINISTIC "
        "BEGIN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'a shadow ran'; RETURN 0; END ;;",
    ]
    for name in sorted(functions):
        lines.append(
            f"CREATE FUNCTION `{name}`(a TEXT) RETURNS TEXT NOT DETERMINISTIC "
            f"BEGIN RETURN bp_boom('{name}'); END ;;"
        )
    lines.append("DELIMITER ;")
    for name in sorted(relations):
        lines.append(f"CREATE VIEW `{name}` AS SELECT bp_boom('{name}') AS shadowed;")
    return "\n".join(lines) + "\n"


def test_no_statement_the_product_sends_to_mariadb_runs_a_shadow(
    drill_workspace: Workspace,
    drill_environment: DrillEnvironment,
    mariadb_dumps: MariadbDumps,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sound = mariadb_dumps.get("audited")
    overlong = inject(mariadb_dumps.get("overlong"), ENDLESS)
    build_site(
        drill_workspace,
        {
            "audited": {DAY2: staged("audited", DAY2, gz(sound), ".sql.gz")},
            "overlong": {DAY2: staged("overlong", DAY2, gz(overlong), ".sql.gz")},
        },
    )
    monkeypatch.setenv("BACKUP_PIPELINE_DRILL_STATEMENT_TIMEOUT_SECONDS", "2")
    with audited() as sent:
        (first,) = drill_workspace.json("drill", "--agent", "ACME_DOUALA_PORT", "--database", "audited")
        (stopped,) = drill_workspace.json("drill", "--agent", "ACME_DOUALA_PORT", "--database", "overlong")
    assert first["outcome"] == "RESTORED", first
    assert stopped["outcome"] == "RESTORE_FAILED" and "statement timeout" in stopped["reason"], stopped
    recorded = mariadb_statements(list(sent))
    assert any(s.sql.startswith("KILL QUERY") for s in recorded)
    assert any(s.sql.startswith("CHECK TABLE") for s in recorded)

    # 2. the same dump with every trap laid before its end: it restores, with the same figures
    body = traps(functions_named(recorded), relations_named(recorded))
    trapped = inject(renamed(sound, "audited", "trapped"), body)  # the same tables, and the traps
    build_site(drill_workspace, {"trapped": {DAY2: staged("trapped", DAY2, gz(trapped), ".sql.gz")}})
    monkeypatch.setenv("BACKUP_PIPELINE_DRILL_STATEMENT_TIMEOUT_SECONDS", "60")
    with audited() as sent_again:
        (again,) = drill_workspace.json("drill", "--agent", "ACME_DOUALA_PORT", "--database", "trapped")
    assert again["outcome"] == "RESTORED", again
    assert (again["tables"], again["rows"], again["amcheck"]) == (
        first["tables"],
        first["rows"],
        first["amcheck"],
    )
    recorded += mariadb_statements(list(sent_again))

    # 3. every statement replayed among the traps, the trapped database current, as the admin
    env = drill_environment
    assert env.mariadb is not None
    with env.mariadb.server(Limits(env.memory_bytes, 1 << 30), "m-audit") as server:
        server.create()
        server.start_from(env.mariadb.template(), {})
        code, output = client_run_on(server, trapped)
        assert code == 0, output
        replay(server, recorded)


def client_run_on(server: object, dump: bytes) -> tuple[int, str]:
    """The trapped dump restored as drills restore it (through the guard, by the client)."""
    guard = MariadbScriptGuard(max_bytes=1 << 30)
    data = bytes(guard.feed(dump)) + bytes(guard.finish())
    return _feed(server, data)


def _feed(server: object, data: bytes) -> tuple[int, str]:
    client = server.client([DATABASE], stdin=subprocess.PIPE)  # type: ignore[attr-defined]
    errors = StderrTail(client.stderr)
    assert client.stdin is not None
    client.stdin.write(data)
    client.stdin.close()
    code = client.wait(timeout=300)
    errors.join()
    return code, errors.text


def replay(server: object, recorded: list[SentStatement]) -> None:
    seen: set[str] = set()
    connection, idle = (
        pymysql.connect(
            unix_socket=str(server.socket),  # type: ignore[attr-defined]
            user=ADMIN_USER,
            password=server.password(ADMIN_USER),  # type: ignore[attr-defined]
            database=DATABASE,
            autocommit=True,
        )
        for _ in range(2)
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT DATABASE()")
            assert cursor.fetchone()[0] == DATABASE, "the trapped database is not the current one"
            own = idle.thread_id()  # a connection with nothing running: a KILL QUERY of it is harmless
            for sent in recorded:
                if sent.sql in seen:
                    continue
                seen.add(sent.sql)
                sql = f"KILL QUERY {own}" if sent.sql.startswith("KILL QUERY") else sent.sql
                params = sent.params or None
                try:
                    cursor.execute(sql, params)
                    cursor.fetchall()
                except pymysql.err.Error as exc:
                    raise AssertionError(f"{sql!r} among the traps: {exc}") from None
    finally:
        connection.close()
        idle.close()
