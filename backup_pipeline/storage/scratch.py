"""SQL on a restore drill's scratch cluster (never the product's database): preparing its template,
watching the restore's statements, and looking at what the restore brought back.

Everything restored is hostile, and a restored dump can define functions, operators, types and
relations named like the ones a statement uses — in `public`, in a schema named after the connecting
role (`"$user"`), or first in a search path it sets for its database or role — so that whoever runs
the statement runs its code. Hence:

- every connection sets its own `search_path = pg_catalog, pg_temp` in its start-up packet (which
  outranks whatever a database or role default says), and every function, operator, type and relation
  a statement names is schema-qualified;
- after the restore began, no superuser session runs anything in the drill database: the statement
  watch works from the `postgres` database (pg_stat_activity is cluster-wide) as `drill_watch`, which
  can read activity and cancel non-superuser backends and nothing else; the checks (counts, sizes,
  amcheck) run as `drill_check`, which reads every table (`pg_read_all_data`) past row-level
  security and writes none — no more than the dump's owner can do — in a read-only session;
- the checks run none of the dump's code (counting bypasses its policies, amcheck verifies structure
  only, not index expressions), and a session whose reported settings change anyway (its encoding,
  its read-only default…) stops at once: a dump cannot make the product decode, hold or believe
  what it chooses;
- the product's own object in the drill database, amcheck's schema, is made before the restore
  under a name the dump cannot predict, and belongs to the superuser: the dump can neither take its
  name nor change it, and tables are counted from the catalog, never skipped by a name.

Connections use psycopg2 directly (no ORM, no dialect statements of its own), so the statements
below are every statement the product sends; `audited()` lists them as they are sent.
"""

from __future__ import annotations

import collections
import contextlib
import re
import secrets
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg2
import psycopg2.extensions

from backup_pipeline.adapters.scratch_cluster import (
    ADMIN_USER,
    CHECK_USER,
    DATABASE,
    PORT,
    RESTORE_USER,
    WATCH_USER,
    ScratchCluster,
    TemplateFacts,
)

TABLE_FIGURES_CAP = 2000  # tables listed one by one in a drill's record (the totals count them all)
FIRST_USER_OID = 16384  # FirstNormalObjectId: initdb's own objects have smaller oids
BTREE = 403  # the btree access method's oid
TOAST_NAMESPACE = 99  # pg_toast: its indexes belong to their tables


class ScratchFailure(RuntimeError):
    """A statement on a scratch cluster failed (or the cluster went away); the message is the
    server's first line."""


# ---------------------------------------------------------------- sessions


@dataclass(frozen=True)
class SentStatement:
    """A statement as the product sent it to a scratch server."""

    role: str
    database: str
    sql: str
    params: tuple[Any, ...]
    engine: str = "postgresql"


_audit_lock = threading.Lock()
_audit: list[SentStatement] | None = None


@contextmanager
def audited() -> Iterator[list[SentStatement]]:
    """Every statement sent to a scratch cluster while it is open, from any thread (the shadowing
    audit replays them against a database full of traps)."""
    global _audit
    with _audit_lock:
        _audit = []
    try:
        yield _audit
    finally:
        with _audit_lock:
            _audit = None


def record_sent(sent: SentStatement) -> None:
    """Note a statement about to be sent to a scratch server (PostgreSQL's or MariaDB's)."""
    with _audit_lock:
        if _audit is not None:
            _audit.append(sent)


PRODUCT_PATH = "pg_catalog,pg_temp"
# The validation queries' own: the operator's queries name the dump's tables unqualified, and
# pg_catalog comes first (built-ins win). They run as the restore role: nothing they may call of the
# dump's has rights the dump did not have.
CHECKS_PATH = "pg_catalog,public,pg_temp"


def session_settings(
    *, read_only: bool, statement_timeout_ms: int | None, search_path: str = PRODUCT_PATH
) -> dict[str, str]:
    """What every session sets at start-up, before the server applies a database's or role's
    defaults (which cannot override these): a fixed path, no extra libraries, plain formats."""
    settings = {
        "search_path": search_path,
        "local_preload_libraries": "",
        "DateStyle": "ISO,MDY",
        "IntervalStyle": "postgres",
        "TimeZone": "UTC",
        "row_security": "on",
        "default_transaction_read_only": "on" if read_only else "off",
        "client_min_messages": "error",  # no notice reaches the product
    }
    if statement_timeout_ms is not None:
        settings |= {
            "statement_timeout": str(statement_timeout_ms),
            "lock_timeout": str(statement_timeout_ms),
        }
    return settings


# Settings the server reports to the client whenever they change (GUC_REPORT; the read-only default
# since PostgreSQL 14, the search path since 18): a session's must stay as it started.
REPORTED = (
    "client_encoding",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "standard_conforming_strings",
    "is_superuser",
    "session_authorization",
    "default_transaction_read_only",
    "search_path",
)


class ScratchSession:
    """One connection to a scratch cluster, autocommit, as one role, in one database."""

    def __init__(self, connection: Any, role: str, database: str) -> None:
        self._connection, self.role, self.database = connection, role, database
        self._reported = self._settings()

    def _settings(self) -> dict[str, str | None]:
        return {name: self._connection.get_parameter_status(name) for name in REPORTED}

    def _execute(self, sql: str, params: Sequence[Any]) -> Any:
        record_sent(SentStatement(self.role, self.database, sql, tuple(params)))
        cursor = self._connection.cursor()
        try:
            cursor.execute(sql, tuple(params))
        except psycopg2.Error as exc:
            cursor.close()
            raise ScratchFailure(error_line(exc)) from None
        self._unchanged()
        return cursor

    def _unchanged(self) -> None:
        """Nothing the product sends changes these: if one changed, code of the restored database ran
        in this session, and nothing it answers is believed."""
        now = self._settings()
        for name, value in now.items():
            if value != self._reported[name]:
                raise ScratchFailure(
                    f"the session's {name} changed from {self._reported[name]!r} to {value!r} "
                    "(code of the restored database ran in it): its answers are not believed"
                )

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = self._execute(sql, params)
        try:
            return list(cursor.fetchall())
        except psycopg2.Error as exc:
            raise ScratchFailure(error_line(exc)) from None
        except (UnicodeDecodeError, ValueError) as exc:  # text the server sent is not what it said
            raise ScratchFailure(f"unreadable answer: {type(exc).__name__}: {exc}"[:300]) from None
        finally:
            cursor.close()

    def value(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self.rows(sql, params)
        return rows[0][0] if rows else None

    def first_rows(self, sql: str, params: dict[str, Any], limit: int) -> list[tuple[Any, ...]]:
        """At most `limit` rows of a query, read through a cursor of the server's in a transaction of
        its own (rolled back: nothing it did stays)."""
        record_sent(SentStatement(self.role, self.database, sql, tuple(params.values())))
        # A query naming the dump's functions or views runs their code, which may lift
        # client_min_messages for itself: its notices are not kept once the query ended.
        self._connection.notices = collections.deque(maxlen=0)
        self._connection.autocommit = False
        try:
            with self._connection.cursor(name=f"bp_check_{secrets.token_hex(4)}") as cursor:
                cursor.execute(sql, params)
                rows = list(cursor.fetchmany(limit))
            self._unchanged()
            return rows
        except psycopg2.Error as exc:
            raise ScratchFailure(error_line(exc)) from None
        except (UnicodeDecodeError, ValueError) as exc:  # text the server sent is not what it said
            raise ScratchFailure(f"unreadable answer: {type(exc).__name__}: {exc}"[:300]) from None
        finally:
            with contextlib.suppress(psycopg2.Error):
                self._connection.rollback()
                self._connection.autocommit = True

    def run(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._execute(sql, params).close()

    def close(self) -> None:
        self._connection.close()


def connect(
    cluster: ScratchCluster,
    role: str,
    database: str,
    *,
    read_only: bool = False,
    statement_timeout_ms: int | None = None,
    search_path: str = PRODUCT_PATH,
) -> ScratchSession:
    """A session on the cluster's socket: the superuser and the watch role by password, the restore
    role by trust (its pg_hba line)."""
    settings = session_settings(
        read_only=read_only, statement_timeout_ms=statement_timeout_ms, search_path=search_path
    )
    password = cluster.password(role)
    arguments: dict[str, Any] = {
        "host": str(cluster.socket_dir),
        "port": PORT,
        "user": role,
        "dbname": database,
        "options": " ".join(f"-c {name}={value}" for name, value in settings.items()),
        "application_name": f"backup_pipeline_{role}",
        "client_encoding": "UTF8",
        "connect_timeout": 10,
    }
    if password is not None:
        arguments["password"] = password
    if psycopg2.extensions.libpq_version() >= 160000:
        # whatever answers on the socket must prove the password, never ask for it in clear
        arguments["require_auth"] = "scram-sha-256" if password is not None else "none"
    try:
        connection = psycopg2.connect(**arguments)
    except psycopg2.Error as exc:
        raise ScratchFailure(error_line(exc)) from None
    connection.autocommit = True
    return ScratchSession(connection, role, database)


@contextmanager
def session(
    cluster: ScratchCluster,
    role: str,
    database: str,
    *,
    read_only: bool = False,
    statement_timeout_ms: int | None = None,
    search_path: str = PRODUCT_PATH,
) -> Iterator[ScratchSession]:
    opened = connect(
        cluster,
        role,
        database,
        read_only=read_only,
        statement_timeout_ms=statement_timeout_ms,
        search_path=search_path,
    )
    try:
        yield opened
    finally:
        opened.close()


def error_line(error: BaseException) -> str:
    """The server's (or libpq's) first line, without the driver's prefixes."""
    text = str(getattr(error, "pgerror", None) or error).strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), "unknown error")
    return re.sub(r"^(?:ERROR|FATAL|PANIC):\s+", "", first)


# ---------------------------------------------------------------- the template


def prepare_template(cluster: ScratchCluster, watch_password: str) -> TemplateFacts:
    """On a fresh cluster: the restore role, the watch role, the checks' role, the drill database the
    restore role owns, and amcheck in a schema of the product's with a name no dump can predict."""
    with session(cluster, ADMIN_USER, "postgres") as admin:
        admin.run(
            f"CREATE ROLE {RESTORE_USER} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
        )
        admin.run(
            f"CREATE ROLE {WATCH_USER} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS "
            "PASSWORD %s IN ROLE pg_read_all_stats, pg_signal_backend",
            (watch_password,),
        )
        admin.run(
            f"CREATE DATABASE {DATABASE} OWNER {RESTORE_USER} TEMPLATE template0 "
            "ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
        )
        admin.run("REVOKE ALL ON DATABASE postgres, template1 FROM PUBLIC")
        admin.run(f"GRANT CONNECT ON DATABASE postgres TO {WATCH_USER}")
        checker = RESTORE_USER
        if admin.value(  # PostgreSQL 14 and later: a role that reads every table, past any policy
            "SELECT pg_catalog.count(*) FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) "
            "'pg_read_all_data'"
        ):
            admin.run(
                f"CREATE ROLE {CHECK_USER} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION BYPASSRLS "
                "IN ROLE pg_read_all_data"
            )
            checker = CHECK_USER
        has_amcheck = admin.value(
            "SELECT pg_catalog.count(*) FROM pg_catalog.pg_available_extensions "
            "WHERE name OPERATOR(pg_catalog.=) 'amcheck'"
        )
    if not has_amcheck:
        return TemplateFacts(None, checker)
    schema = f"bp_amcheck_{secrets.token_hex(8)}"
    with session(cluster, ADMIN_USER, DATABASE) as admin:
        admin.run(f"CREATE SCHEMA {schema}")
        admin.run(f"CREATE EXTENSION amcheck SCHEMA {schema}")
        admin.run(f"GRANT USAGE ON SCHEMA {schema} TO {checker}")
        admin.run(
            f"GRANT EXECUTE ON FUNCTION {schema}.bt_index_check(pg_catalog.regclass, pg_catalog.bool) "
            f"TO {checker}"
        )
    return TemplateFacts(schema, checker)


# ---------------------------------------------------------------- during the restore

_DATA_LOAD = re.compile(r"^\s*copy\b[^;]*\bfrom\s+stdin\b", re.IGNORECASE | re.DOTALL)
_ACTIVITY = (
    "SELECT pid, usename, state, query_start, pg_catalog.clock_timestamp(), "
    'pg_catalog."left"(query, 300) FROM pg_catalog.pg_stat_activity'
)
_CANCEL = "SELECT pg_catalog.pg_cancel_backend(%s)"


@dataclass(frozen=True)
class Activity:
    pid: int
    role: str | None
    state: str | None
    started: datetime | None
    now: datetime
    query: str

    def overlong(self, limit_seconds: float) -> bool:
        """The restore role's statement running longer than the limit; the COPY of the data is exempt
        (bounded by the disk and time limits)."""
        return (
            self.role == RESTORE_USER
            and self.state == "active"
            and self.started is not None
            and (self.now - self.started).total_seconds() > limit_seconds
            and not _DATA_LOAD.match(self.query)
        )


class StatementWatch:
    """Cancels the restore's statements that run longer than the statement timeout. A dump sets
    `statement_timeout = 0` itself (every pg_dump does), so the limit is enforced from outside, from
    the postgres database as the watch role: nothing the dump defines is on its way."""

    def __init__(self, cluster: ScratchCluster, limit_seconds: float) -> None:
        self.cluster, self.limit = cluster, limit_seconds
        self._session: ScratchSession | None = None

    def cancel_overlong(self) -> list[str]:
        """What it cancelled this time, in words."""
        try:
            if self._session is None:
                self._session = connect(self.cluster, WATCH_USER, "postgres", read_only=True)
            activities = [Activity(*row[:5], row[5] or "") for row in self._session.rows(_ACTIVITY)]
            cancelled = []
            for activity in activities:
                if activity.overlong(self.limit):
                    self._session.run(_CANCEL, (activity.pid,))
                    seconds = (activity.now - activity.started).total_seconds() if activity.started else 0
                    cancelled.append(
                        f"a statement ran {seconds:.0f} s: {' '.join(activity.query.split())[:200]}"
                    )
            return cancelled
        except ScratchFailure:  # the server is going away (the restore ended, or a limit stopped it)
            self.close()
            return []

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


def server_version(cluster: ScratchCluster) -> str:
    with session(cluster, WATCH_USER, "postgres", read_only=True) as watch:
        return str(watch.value("SHOW server_version")).split()[0]


# ---------------------------------------------------------------- after the restore


@dataclass(frozen=True)
class TableFigures:
    name: str  # schema.table, quoted as needed
    rows: int | None  # None for a partitioned table (its partitions hold the rows)
    bytes: int


@dataclass
class Inspection:
    tables: list[TableFigures] = field(default_factory=list)
    database_bytes: int = 0
    amcheck: str = ""  # what index verification did, in words
    amcheck_failures: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(t.rows or 0 for t in self.tables)


# Every table the restore made: regular and partitioned, not temporary, not an extension's member,
# created after initdb (system catalogs have smaller oids). No name is compared: none can be taken.
_TABLES = f"""
SELECT pg_catalog.quote_ident(n.nspname), pg_catalog.quote_ident(c.relname), c.relkind,
       pg_catalog.pg_total_relation_size(c.oid)
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
WHERE c.oid OPERATOR(pg_catalog.>=) CAST({FIRST_USER_OID} AS pg_catalog.oid)
  AND c.relkind OPERATOR(pg_catalog.=) ANY (CAST('{{r,p}}' AS pg_catalog."char"[]))
  AND c.relpersistence OPERATOR(pg_catalog.<>) CAST('t' AS pg_catalog."char")
  AND NOT EXISTS (
      SELECT FROM pg_catalog.pg_depend d
      WHERE d.classid OPERATOR(pg_catalog.=) CAST('pg_catalog.pg_class' AS pg_catalog.regclass)
        AND d.objid OPERATOR(pg_catalog.=) c.oid
        AND d.deptype OPERATOR(pg_catalog.=) CAST('e' AS pg_catalog."char"))
"""
_BTREE_INDEXES = f"""
SELECT c.oid, pg_catalog.quote_ident(n.nspname), pg_catalog.quote_ident(c.relname)
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.indexrelid
JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
WHERE c.oid OPERATOR(pg_catalog.>=) CAST({FIRST_USER_OID} AS pg_catalog.oid)
  AND c.relam OPERATOR(pg_catalog.=) CAST({BTREE} AS pg_catalog.oid)
  AND c.relnamespace OPERATOR(pg_catalog.<>) CAST({TOAST_NAMESPACE} AS pg_catalog.oid)
  AND i.indisvalid AND i.indisready
  AND c.relpersistence OPERATOR(pg_catalog.<>) CAST('t' AS pg_catalog."char")
"""
_DATABASE_SIZE = "SELECT pg_catalog.pg_database_size(pg_catalog.current_database())"


def inspect_restore(cluster: ScratchCluster, statement_timeout_seconds: float) -> Inspection:
    """Tables with their rows and sizes, the database's size, and amcheck where it is available: as the
    checks' role, read-only, running nothing of the dump's."""
    found = Inspection()
    timeout = int(statement_timeout_seconds * 1000)
    template = cluster.template
    assert template is not None
    checker, amcheck_schema = template.checker, template.amcheck_schema
    with session(cluster, checker, DATABASE, read_only=True, statement_timeout_ms=timeout) as checks:
        tables = sorted(checks.rows(_TABLES), key=lambda row: (row[0], row[1]))
        for schema, table, kind, size in tables:  # identifiers quoted by the server
            name = f"{schema}.{table}"
            rows = checks.value(f"SELECT pg_catalog.count(*) FROM ONLY {name}") if kind == "r" else None
            found.tables.append(TableFigures(name, rows, int(size)))
        found.database_bytes = int(checks.value(_DATABASE_SIZE))
        _amcheck(checks, amcheck_schema, found)
    return found


def _amcheck(checks: ScratchSession, schema: str | None, found: Inspection) -> None:
    """Every btree index verified structurally (pages, order, links), without `heapallindexed`, which
    would evaluate index expressions: functions of the dump's."""
    if schema is None:
        found.amcheck = "not available (no amcheck extension with these PostgreSQL binaries)"
        return
    indexes = checks.rows(_BTREE_INDEXES)
    verify = f"SELECT {schema}.bt_index_check(CAST(CAST(%s AS pg_catalog.oid) AS pg_catalog.regclass), false)"
    for oid, index_schema, index in sorted(indexes, key=lambda row: (row[1], row[2])):
        try:
            checks.run(verify, (oid,))
        except ScratchFailure as exc:
            found.amcheck_failures.append(f"{index_schema}.{index}: {exc}")
    verified = len(indexes) - len(found.amcheck_failures)
    found.amcheck = f"{verified} of {len(indexes)} btree index(es) verified"


# ---------------------------------------------------------------- validation queries


def run_check(
    cluster: ScratchCluster, sql: str, cycle: datetime, statement_timeout_seconds: float
) -> list[tuple[Any, ...]]:
    """A validation query (`:cycle` already turned into `%(cycle)s`), as the checks' role (reading
    every table past the dump's row-level security policies, whose code would run otherwise; writing
    none) in the drill database, read-only, within the statement timeout: its first two rows at most,
    through a cursor of the server's (a query of a million rows costs the product two)."""
    timeout = int(statement_timeout_seconds * 1000)
    template = cluster.template
    checker = template.checker if template is not None else RESTORE_USER
    with session(
        cluster, checker, DATABASE, read_only=True, statement_timeout_ms=timeout, search_path=CHECKS_PATH
    ) as checks:
        return checks.first_rows(sql, {"cycle": cycle}, 2)
