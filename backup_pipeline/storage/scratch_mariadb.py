"""SQL on a restore drill's scratch MariaDB (never the product's database): preparing its template,
watching the restore's statements, and looking at what the restore brought back.

Everything restored is hostile. MariaDB has no search path: a name the product writes unqualified is
a built-in function (which always wins over a stored function of the same name) or resolves in the
session's current database — so:

- every name the product sends is qualified: `information_schema.TABLES`, `information_schema.
  PROCESSLIST`, `` `drill`.`table` `` (quoted from the catalog), and only built-in functions are called;
- after the restore began, no privileged session runs anything in the drill database: the statement
  watch connects to no database at all, as `drill_watch` (PROCESS and CONNECTION ADMIN: it sees and
  stops statements, nothing else); the checks (counts, `CHECK TABLE … EXTENDED`, the validation
  queries) run as `drill_restore`, which owns what the dump made and has no right outside the drill
  database, in read-only transactions with a statement time limit;
- every session fixes its own sql_mode and time zone.

Connections use PyMySQL directly, so the statements below are every statement the product sends;
`storage.scratch.audited()` lists them as they are sent (with engine `mariadb`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import Any

import pymysql
import pymysql.cursors

from backup_pipeline.adapters.scratch_mariadb import (
    ADMIN_USER,
    DATABASE,
    RESTORE_USER,
    WATCH_USER,
    ScratchMariadb,
)
from backup_pipeline.storage.scratch import (
    Inspection,
    ScratchFailure,
    SentStatement,
    TableFigures,
    record_sent,
)

ENGINE = "mariadb"
SESSION_SQL_MODE = "STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"


def error_text(error: BaseException) -> str:
    """The server's message and code (bounded by the server), or the driver's."""
    args = getattr(error, "args", ())
    if len(args) >= 2 and isinstance(args[0], int):
        return f"{' '.join(str(args[1]).split())} (error {args[0]})"
    return " ".join(str(error).split()) or type(error).__name__


class MariadbSession:
    """One connection to a scratch MariaDB, autocommit, as one account, in one database (or none)."""

    def __init__(self, connection: Any, account: str, database: str) -> None:
        self._connection, self.account, self.database = connection, account, database

    def _execute(
        self, sql: str, params: Sequence[Any] | dict[str, Any] | None, cursor_class: Any = None
    ) -> Any:
        shown = tuple(params.values()) if isinstance(params, dict) else tuple(params or ())
        record_sent(SentStatement(self.account, self.database, sql, shown, engine=ENGINE))
        cursor = self._connection.cursor(cursor_class) if cursor_class else self._connection.cursor()
        try:
            cursor.execute(sql, params if params else None)
        except pymysql.err.Error as exc:
            cursor.close()
            raise ScratchFailure(error_text(exc)) from None
        return cursor

    def rows(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        cursor = self._execute(sql, params)
        try:
            return list(cursor.fetchall())
        except (UnicodeDecodeError, ValueError) as exc:  # text the server sent is not what it said
            raise ScratchFailure(f"unreadable answer: {type(exc).__name__}: {exc}"[:300]) from None
        finally:
            cursor.close()

    def first_rows(self, sql: str, params: dict[str, Any], limit: int) -> list[tuple[Any, ...]]:
        """At most `limit` rows of a query (the rest is read from the server and dropped)."""
        cursor = self._execute(sql, params, pymysql.cursors.SSCursor)
        try:
            return list(cursor.fetchmany(limit))
        except pymysql.err.Error as exc:
            raise ScratchFailure(error_text(exc)) from None
        except (UnicodeDecodeError, ValueError) as exc:  # text the server sent is not what it said
            raise ScratchFailure(f"unreadable answer: {type(exc).__name__}: {exc}"[:300]) from None
        finally:
            with suppress(pymysql.err.Error):
                cursor.close()

    def value(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        rows = self.rows(sql, params)
        return rows[0][0] if rows else None

    def run(self, sql: str, params: Sequence[Any] | None = None) -> None:
        self._execute(sql, params).close()

    def close(self) -> None:
        with suppress(pymysql.err.Error):
            self._connection.close()


def connect(
    server: ScratchMariadb,
    account: str,
    database: str = "",
    *,
    password: str | None = None,
    read_only: bool = False,
    statement_timeout: float | None = None,
) -> MariadbSession:
    """A session on the server's socket, its settings its own: sql_mode, time zone, read-only, and a
    time limit for every statement."""
    try:
        connection = pymysql.connect(
            unix_socket=str(server.socket),
            user=account,
            password=password if password is not None else server.password(account) or "",
            database=database or None,
            charset="utf8mb4",
            autocommit=True,
            connect_timeout=10,
            local_infile=False,
        )
    except pymysql.err.Error as exc:
        raise ScratchFailure(error_text(exc)) from None
    opened = MariadbSession(connection, account, database)
    settings = ["sql_mode = %s", "time_zone = '+00:00'"]
    params: list[Any] = [SESSION_SQL_MODE]
    if statement_timeout is not None:
        settings.append("max_statement_time = %s")
        params.append(float(statement_timeout))
    try:
        opened.run("SET SESSION " + ", ".join(settings), params)
        if read_only:
            opened.run("SET SESSION TRANSACTION READ ONLY")
    except ScratchFailure:
        opened.close()
        raise
    return opened


@contextmanager
def session(
    server: ScratchMariadb,
    account: str,
    database: str = "",
    *,
    password: str | None = None,
    read_only: bool = False,
    statement_timeout: float | None = None,
) -> Iterator[MariadbSession]:
    opened = connect(
        server,
        account,
        database,
        password=password,
        read_only=read_only,
        statement_timeout=statement_timeout,
    )
    try:
        yield opened
    finally:
        opened.close()


def quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


# ---------------------------------------------------------------- the template


def prepare_mariadb_template(server: ScratchMariadb, passwords: dict[str, str]) -> None:
    """On a fresh server (mariadb-install-db's root, without a password): the three accounts, the
    drill database, and no other account left — root included."""
    with session(server, "root", password="") as root:
        accounts = root.rows("SELECT User, Host FROM mysql.global_priv")
        root.run(f"CREATE USER {ADMIN_USER}@localhost IDENTIFIED BY %s", (passwords[ADMIN_USER],))
        root.run(f"GRANT ALL PRIVILEGES ON *.* TO {ADMIN_USER}@localhost WITH GRANT OPTION")
        root.run(f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
        root.run(f"CREATE USER {RESTORE_USER}@localhost IDENTIFIED BY %s", (passwords[RESTORE_USER],))
        root.run(f"GRANT ALL PRIVILEGES ON {DATABASE}.* TO {RESTORE_USER}@localhost")
        root.run(f"CREATE USER {WATCH_USER}@localhost IDENTIFIED BY %s", (passwords[WATCH_USER],))
        root.run(f"GRANT PROCESS, CONNECTION ADMIN ON *.* TO {WATCH_USER}@localhost")
        for user, host in accounts:
            if user != "mariadb.sys":
                root.run("DROP USER %s@%s", (user, host))


# ---------------------------------------------------------------- during the restore

_ACTIVITY = (
    "SELECT ID, USER, COMMAND, TIME_MS, LEFT(INFO, 300) FROM information_schema.PROCESSLIST "
    "WHERE USER = %s AND COMMAND = 'Query' AND TIME_MS > %s"
)


class MariadbStatementWatch:
    """Stops the restore's statements that run longer than the statement timeout (`KILL QUERY`): a
    dump may lift `max_statement_time` for its own session, so the limit is enforced from outside,
    from no database, by an account that can do nothing else."""

    def __init__(self, server: ScratchMariadb, limit_seconds: float) -> None:
        self.server, self.limit = server, limit_seconds
        self._session: MariadbSession | None = None

    def cancel_overlong(self) -> list[str]:
        try:
            if self._session is None:
                self._session = connect(self.server, WATCH_USER, read_only=True)
            cancelled = []
            for thread, _, _, millis, info in self._session.rows(
                _ACTIVITY, (RESTORE_USER, int(self.limit * 1000))
            ):
                self._session.run(f"KILL QUERY {int(thread)}")
                text = " ".join(str(info or "").split())[:200]
                cancelled.append(f"a statement ran {float(millis) / 1000:.0f} s: {text}")
            return cancelled
        except ScratchFailure:  # the server is going away (the restore ended, or a limit stopped it)
            self.close()
            return []

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


def mariadb_version(server: ScratchMariadb) -> str:
    with session(server, WATCH_USER, read_only=True) as watch:
        return str(watch.value("SELECT VERSION()"))


# ---------------------------------------------------------------- after the restore

# Every table the restore made in the drill database, from the catalog: no name is compared.
_TABLES = (
    "SELECT TABLE_NAME, COALESCE(DATA_LENGTH, 0) + COALESCE(INDEX_LENGTH, 0) "
    "FROM information_schema.TABLES "
    "WHERE TABLE_SCHEMA = %s AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED')"
)
_CHECK_PASSES = {"ok", "table is already up to date"}


def inspect_mariadb(server: ScratchMariadb, statement_timeout: float) -> Inspection:
    """Tables with their rows and sizes, and `CHECK TABLE … EXTENDED` of each: as the restore
    account (the dump's own rights), read-only. The database's size is its files' (the adapter's)."""
    found = Inspection()
    with session(
        server, RESTORE_USER, DATABASE, read_only=True, statement_timeout=statement_timeout
    ) as checks:
        tables = sorted(checks.rows(_TABLES, (DATABASE,)), key=lambda row: str(row[0]))
        checked = unsupported = 0
        for table, size in tables:
            name = f"{quoted(DATABASE)}.{quoted(str(table))}"
            rows = checks.value(f"SELECT COUNT(*) FROM {name}")
            found.tables.append(TableFigures(quoted(str(table)), int(rows), int(size or 0)))
            verdict = _check_table(checks, name)
            if verdict is None:
                unsupported += 1
            elif verdict:
                found.amcheck_failures.append(f"{quoted(str(table))}: {verdict}")
            else:
                checked += 1
    found.database_bytes = server.database_bytes()
    total = len(tables)
    words = f"{checked} of {total} table(s) verified (CHECK TABLE … EXTENDED)"
    if unsupported:
        words += f"; {unsupported} of an engine that cannot be checked"
    found.amcheck = words
    return found


def _check_table(checks: MariadbSession, name: str) -> str | None:
    """'' when the table checks out, what is wrong otherwise, None when its engine cannot check."""
    rows = checks.rows(f"CHECK TABLE {name} EXTENDED")
    problems = [str(text) for _, _, kind, text in rows if str(kind).lower() == "error"]
    if any("doesn't support check" in str(text) for _, _, _, text in rows):
        return None
    status = next((str(text) for _, _, kind, text in reversed(rows) if str(kind).lower() == "status"), "")
    if problems or status.lower() not in _CHECK_PASSES:
        return "; ".join([*problems, status] if status else problems)[:300] or "no status"
    return ""


# ---------------------------------------------------------------- validation queries


def run_mariadb_check(
    server: ScratchMariadb, sql: str, cycle: datetime, statement_timeout: float
) -> list[tuple[Any, ...]]:
    """A validation query (`:cycle` already turned into `%(cycle)s`), as the restore account in the
    drill database, read-only, within the statement timeout: its first two rows at most."""
    with session(
        server, RESTORE_USER, DATABASE, read_only=True, statement_timeout=statement_timeout
    ) as checks:
        naive = cycle.replace(tzinfo=None) if cycle.utcoffset() is None else _utc_naive(cycle)
        return checks.first_rows(sql, {"cycle": naive}, 2)


def _utc_naive(instant: datetime) -> datetime:
    offset = instant.utcoffset()
    assert offset is not None
    return (instant - offset).replace(tzinfo=None)


TIMED_OUT = re.compile(r"max_statement_time|Query execution was interrupted", re.IGNORECASE)
