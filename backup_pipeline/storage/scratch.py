"""SQL on a restore drill's scratch cluster (never the product's database): preparing its template,
watching the restore's statements, and looking at what the restore brought back.

Connections go to the cluster's private Unix socket as its superuser (`drill_admin`, by password),
from the product's process only. Everything restored is hostile: names are quoted by the server
(`format('%I.%I')`), the search path is pg_catalog alone, and the checks only count, size and verify
indexes structurally (amcheck without `heapallindexed`, so no restored function is ever called).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from backup_pipeline.adapters.scratch_cluster import ADMIN_USER, DATABASE, PORT, RESTORE_USER, ScratchCluster
from backup_pipeline.storage.database import db_error_line

AMCHECK_SCHEMA = "backup_pipeline_drill_amcheck"
TABLE_FIGURES_CAP = 2000  # tables listed one by one in a drill's record (the totals count them all)


def scratch_engine(cluster: ScratchCluster, database: str = DATABASE) -> Engine:
    url = URL.create(
        "postgresql+psycopg2",
        username=ADMIN_USER,
        password=cluster.admin_password,
        database=database,
        query={"host": str(cluster.socket_dir), "port": str(PORT)},
    )
    return sa.create_engine(
        url,
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": 10, "application_name": "backup_pipeline_drill_admin"},
    )


@contextmanager
def admin_connection(cluster: ScratchCluster, database: str = DATABASE) -> Iterator[Connection]:
    engine = scratch_engine(cluster, database)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SET search_path = pg_catalog, pg_temp"))
            yield conn
    finally:
        engine.dispose()


def prepare_template(cluster: ScratchCluster) -> None:
    """The restore role (no superuser, no role or database creation) and the database it owns."""
    with admin_connection(cluster, "postgres") as conn:
        conn.execute(
            sa.text(
                f"CREATE ROLE {RESTORE_USER} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                "NOBYPASSRLS"
            )
        )
        conn.execute(
            sa.text(
                f"CREATE DATABASE {DATABASE} OWNER {RESTORE_USER} TEMPLATE template0 "
                "ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
            )
        )
        conn.execute(sa.text("REVOKE ALL ON DATABASE postgres, template1 FROM PUBLIC"))


# ---------------------------------------------------------------- during the restore

_DATA_LOAD = re.compile(r"^\s*copy\b[^;]*\bfrom\s+stdin\b", re.IGNORECASE | re.DOTALL)


class StatementWatch:
    """Cancels the restore's statements that run longer than the statement timeout. A dump sets
    `statement_timeout = 0` itself (every pg_dump does), so the limit is enforced from outside;
    `COPY … FROM stdin` (the data, bounded by the disk and time limits) is exempt."""

    def __init__(self, cluster: ScratchCluster, limit_seconds: float) -> None:
        self.limit = limit_seconds
        self._engine = scratch_engine(cluster)
        self._conn: Connection | None = None

    def cancel_overlong(self) -> list[str]:
        """What it cancelled this time, in words."""
        try:
            if self._conn is None:
                self._conn = self._engine.connect()
            rows = self._conn.execute(
                sa.text(
                    "SELECT pid, extract(epoch FROM clock_timestamp() - query_start), left(query, 300) "
                    "FROM pg_catalog.pg_stat_activity WHERE usename = :role AND state = 'active' "
                    "AND query_start < clock_timestamp() - make_interval(secs => :limit)"
                ),
                {"role": RESTORE_USER, "limit": self.limit},
            ).all()
            cancelled = []
            for pid, seconds, query in rows:
                if _DATA_LOAD.match(query or ""):
                    continue
                self._conn.execute(sa.text("SELECT pg_catalog.pg_cancel_backend(:pid)"), {"pid": pid})
                cancelled.append(f"a statement ran {seconds:.0f} s: {' '.join((query or '').split())[:200]}")
            return cancelled
        except DBAPIError:  # the server is going away (the restore ended, or a limit stopped it)
            self.close()
            return []

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._engine.dispose()


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


_TABLES = sa.text(
    """
    SELECT c.oid, format('%I.%I', n.nspname, c.relname), c.relkind, pg_catalog.pg_total_relation_size(c.oid)
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND c.relpersistence <> 't'
      AND n.nspname NOT IN ('pg_catalog', 'information_schema', :amcheck)
      AND n.nspname !~ '^pg_(toast|temp)'
      AND NOT EXISTS (
          SELECT 1 FROM pg_catalog.pg_depend d
          WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
    ORDER BY 2
    """
)
# Restored names never enter this process's SQL: the server counts a table given its oid.
_COUNT_FUNCTION = sa.text(
    """
    CREATE FUNCTION pg_temp.drill_rows(target regclass) RETURNS bigint LANGUAGE plpgsql AS $fn$
    DECLARE n bigint;
    BEGIN
        EXECUTE format('SELECT count(*) FROM ONLY %s', target) INTO n;
        RETURN n;
    END $fn$
    """
)
_BTREE_INDEXES = sa.text(
    """
    SELECT c.oid, format('%I.%I', n.nspname, c.relname)
    FROM pg_catalog.pg_index i
    JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
    JOIN pg_catalog.pg_am am ON am.oid = c.relam
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE am.amname = 'btree' AND i.indisvalid AND i.indisready AND c.relpersistence <> 't'
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)'
    ORDER BY 2
    """
)


def inspect_restore(cluster: ScratchCluster, statement_timeout_seconds: float) -> Inspection:
    """Tables with their rows and sizes, the database's size, and amcheck where it is available."""
    found = Inspection()
    with admin_connection(cluster) as conn:
        conn.execute(sa.text(f"SET statement_timeout = {int(statement_timeout_seconds * 1000)}"))
        conn.execute(_COUNT_FUNCTION)
        count = sa.text("SELECT pg_temp.drill_rows(CAST(:oid AS regclass))")
        for oid, name, kind, size in conn.execute(_TABLES, {"amcheck": AMCHECK_SCHEMA}).all():
            rows = conn.execute(count, {"oid": oid}).scalar_one() if kind == "r" else None
            found.tables.append(TableFigures(name, rows, int(size)))
        found.database_bytes = int(
            conn.execute(sa.text("SELECT pg_catalog.pg_database_size(current_database())")).scalar_one()
        )
        _amcheck(conn, found)
    return found


def _amcheck(conn: Connection, found: Inspection) -> None:
    available = conn.execute(
        sa.text("SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = 'amcheck'")
    ).first()
    if available is None:
        found.amcheck = "not available (no amcheck extension with these PostgreSQL binaries)"
        return
    try:
        conn.execute(sa.text(f"CREATE SCHEMA {AMCHECK_SCHEMA}"))
        conn.execute(sa.text(f"CREATE EXTENSION amcheck SCHEMA {AMCHECK_SCHEMA}"))
    except DBAPIError as exc:
        found.amcheck = f"not run: {db_error_line(exc)}"
        return
    indexes = conn.execute(_BTREE_INDEXES).all()
    for oid, name in indexes:
        try:
            conn.execute(
                sa.text(f"SELECT {AMCHECK_SCHEMA}.bt_index_check(CAST(:oid AS regclass))"), {"oid": oid}
            )
        except DBAPIError as exc:
            found.amcheck_failures.append(f"{name}: {db_error_line(exc)}")
    verified = len(indexes) - len(found.amcheck_failures)
    found.amcheck = f"{verified} of {len(indexes)} btree index(es) verified"


def server_version(cluster: ScratchCluster) -> str:
    with admin_connection(cluster) as conn:
        return str(conn.execute(sa.text("SHOW server_version")).scalar_one()).split()[0]
