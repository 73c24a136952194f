"""Small real PostgreSQL and MariaDB databases and their dumps, made with pg_dump and mariadb-dump:
what the simulator stages when it writes real dumps, what tests drill, and what the drill benchmarks
restore.

A sample server is a scratch cluster (the drills' own machinery: throw-away, Unix socket only, the
drill user) on which databases of a fixed schema (customers, invoices, an index, a view) are filled
server-side with `generate_series`, so a gigabyte costs seconds, then dumped with the same binaries'
pg_dump. Content is deterministic for a (name, rows, version): plain dumps are written with a
`--restrict-key` derived from it, so the same database dumps to the same bytes.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType

from backup_pipeline.adapters.drill_host import DrillUnavailable, Limits
from backup_pipeline.adapters.scratch_cluster import ScratchCluster
from backup_pipeline.drill.restore import DrillEnvironment, StderrTail


@dataclass(frozen=True)
class SampleDatabase:
    name: str
    rows: int = 1000  # invoices (customers: one for twenty invoices)
    version: int = 0  # another version is other content
    empty: bool = False  # no table at all


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _schema_sql(db: SampleDatabase) -> str:
    """Two tables named after the database (each database has its own schema, as in real life), an
    index, a view, a comment, and rows made by the server."""
    if db.empty:
        return "SELECT 1;\n"
    p = re.sub(r"[^a-z0-9_]", "_", db.name.lower())[:40]
    customers = max(1, db.rows // 20)
    v = db.version
    return f"""
CREATE TABLE {p}_customers (
    id integer PRIMARY KEY, name text NOT NULL, city text NOT NULL, since date NOT NULL
);
CREATE TABLE {p}_invoices (
    id bigint PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES {p}_customers,
    issued date NOT NULL,
    amount numeric(12, 2) NOT NULL,
    note text
);
CREATE INDEX {p}_invoices_by_customer ON {p}_invoices (customer_id, issued);
CREATE VIEW {p}_totals AS SELECT customer_id, sum(amount) AS total FROM {p}_invoices GROUP BY customer_id;
COMMENT ON TABLE {p}_invoices IS 'one row per invoice issued';
INSERT INTO {p}_customers
    SELECT g, 'customer ' || g, (ARRAY['Douala', 'Yaounde', 'Bafoussam', 'Garoua'])[1 + g % 4],
           date '2020-01-01' + (g % 1500)
    FROM generate_series(1, {customers}) g;
INSERT INTO {p}_invoices
    SELECT g, 1 + (g::bigint * 7919) % {customers}, date '2024-01-01' + (g % 700),
           round(((g::bigint * 104729 + {v}) % 1000000) / 100.0, 2), md5(g::text || ':{v}')
    FROM generate_series(1, {db.rows}) g;
"""


class SampleServer:
    """A scratch cluster to build sample databases on and dump them (a context manager)."""

    def __init__(self, environment: DrillEnvironment) -> None:
        limits = Limits(memory_bytes=environment.memory_bytes, file_bytes=1 << 40)
        self.cluster = ScratchCluster(
            environment.root, environment.tools, environment.user, limits, "sample", environment.sandbox
        )
        self.template = environment.template
        self._made: set[str] = set()

    def __enter__(self) -> SampleServer:
        self.cluster.create()
        self.cluster.start_from(
            self.template, {"fsync": "off", "synchronous_commit": "off", "autovacuum": "off"}
        )
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cluster.close()

    def _psql(self, database: str, sql: str) -> None:
        psql = self.cluster.client(
            "psql",
            ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", database, "-f", "-"],
            stdin=subprocess.PIPE,
            admin=True,
        )
        errors = StderrTail(psql.stderr)
        assert psql.stdin is not None
        psql.stdin.write(sql.encode())
        psql.stdin.close()
        if psql.wait() != 0:
            errors.join()
            raise RuntimeError(f"cannot build the sample database {database}: {errors.text.strip()}")

    def make(self, db: SampleDatabase) -> str:
        """Create the database (once per content); its name on this server."""
        actual = f"{db.name}__{hashlib.sha256(repr(db).encode()).hexdigest()[:8]}"
        if actual not in self._made:
            self._psql("postgres", f"CREATE DATABASE {_ident(actual)};")
            self._psql(actual, _schema_sql(db))
            self._made.add(actual)
        return actual

    @contextmanager
    def _named(self, db: SampleDatabase) -> Iterator[None]:
        """The database under its own name for the time of a dump (custom archives record it)."""
        actual = self.make(db)
        self._psql("postgres", f"ALTER DATABASE {_ident(actual)} RENAME TO {_ident(db.name)};")
        try:
            yield
        finally:
            self._psql("postgres", f"ALTER DATABASE {_ident(db.name)} RENAME TO {_ident(actual)};")

    def _pg_dump(self, db: SampleDatabase, fmt: str, stdout: int) -> subprocess.Popen[bytes]:
        key = hashlib.sha256(repr(db).encode()).hexdigest()[:32]
        formats = {"custom": ["-Fc"], "tar": ["-Ft"], "plain": ["-Fp", f"--restrict-key={key}"]}
        args = ["-d", db.name, *formats[fmt]]
        return self.cluster.client("pg_dump", args, stdout=stdout, admin=True)

    def _finish(self, process: subprocess.Popen[bytes], errors: StderrTail, db: SampleDatabase) -> None:
        if process.wait() != 0:
            errors.join()
            raise RuntimeError(f"pg_dump of the sample database {db.name} failed: {errors.text.strip()}")

    def dump(self, db: SampleDatabase, fmt: str = "plain") -> bytes:
        """pg_dump of the database: `plain` SQL, or a `custom` or `tar` archive."""
        with self._named(db):
            process = self._pg_dump(db, fmt, subprocess.PIPE)
            errors = StderrTail(process.stderr)
            assert process.stdout is not None
            out = process.stdout.read()
            self._finish(process, errors, db)
        return out

    def dump_to(self, db: SampleDatabase, fmt: str, target: int) -> None:
        """pg_dump straight into an open file (large dumps never pass through this process)."""
        with self._named(db):
            process = self._pg_dump(db, fmt, target)
            self._finish(process, StderrTail(process.stderr), db)


# ---------------------------------------------------------------- MariaDB


def _mariadb_schema_sql(db: SampleDatabase) -> str:
    """The same tables as PostgreSQL's samples (customers, invoices, an index, a view, a comment),
    a trigger (so the dump carries a DEFINER the drill must blank), rows made by the server."""
    if db.empty:
        return "SELECT 1;\n"
    p = re.sub(r"[^a-z0-9_]", "_", db.name.lower())[:40]
    customers = max(1, db.rows // 20)
    return f"""
CREATE TABLE {p}_customers (
    id int PRIMARY KEY, name varchar(100) NOT NULL, city varchar(40) NOT NULL, since date NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE {p}_invoices (
    id bigint PRIMARY KEY,
    customer_id int NOT NULL,
    issued date NOT NULL,
    amount decimal(12, 2) NOT NULL,
    note text,
    KEY {p}_invoices_by_customer (customer_id, issued),
    CONSTRAINT {p}_invoices_customer FOREIGN KEY (customer_id) REFERENCES {p}_customers (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT 'one row per invoice issued';
CREATE VIEW {p}_totals AS SELECT customer_id, SUM(amount) AS total FROM {p}_invoices GROUP BY customer_id;
INSERT INTO {p}_customers
    SELECT seq, CONCAT('customer ', seq), ELT(1 + seq % 4, 'Douala', 'Yaounde', 'Bafoussam', 'Garoua'),
           DATE '2020-01-01' + INTERVAL (seq % 1500) DAY
    FROM seq_1_to_{customers};
{_mariadb_invoices(p, db, customers)}
CREATE TRIGGER {p}_note BEFORE INSERT ON {p}_invoices FOR EACH ROW SET NEW.note = COALESCE(NEW.note, '');
"""


MARIADB_BATCH = 1_000_000  # invoices inserted by one statement (one transaction: its undo stays small)


def _mariadb_invoices(p: str, db: SampleDatabase, customers: int) -> str:
    v = db.version
    return "".join(
        f"""INSERT INTO {p}_invoices
    SELECT seq, 1 + (seq * 7919) % {customers}, DATE '2024-01-01' + INTERVAL (seq % 700) DAY,
           ROUND(((seq * 104729 + {v}) % 1000000) / 100.0, 2), MD5(CONCAT(seq, ':{v}'))
    FROM seq_{first}_to_{min(first + MARIADB_BATCH - 1, db.rows)};
"""
        for first in range(1, db.rows + 1, MARIADB_BATCH)
    )


class MariadbSampleServer:
    """A scratch MariaDB to build sample databases on and dump them with mariadb-dump (a context
    manager). A database is made under its own name for each dump (mariadb-dump writes it in the
    dump's header): dumps of several contents of one name are made one after the other."""

    def __init__(self, environment: DrillEnvironment) -> None:
        setup = environment.mariadb
        if setup is None or setup.tools is None:
            raise DrillUnavailable(setup.missing if setup is not None else "no MariaDB binaries")
        self.setup = setup
        limits = Limits(memory_bytes=environment.memory_bytes, file_bytes=1 << 40)
        self.server = setup.server(limits, "sample-mariadb")

    def __enter__(self) -> MariadbSampleServer:
        try:
            self.server.create()
            settings = {"innodb-flush-log-at-trx-commit": "0", "innodb-buffer-pool-size": "512M"}
            self.server.start_from(self.setup.template(), settings)
        except BaseException:
            self.server.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.close()

    def _sql(self, database: str, sql: str) -> None:
        client = self.server.client([database] if database else [], stdin=subprocess.PIPE, admin=True)
        errors = StderrTail(client.stderr)
        assert client.stdin is not None
        client.stdin.write(sql.encode())
        client.stdin.close()
        if client.wait() != 0:
            errors.join()
            raise RuntimeError(f"cannot build the sample database {database}: {errors.text.strip()}")

    def _make(self, db: SampleDatabase) -> None:
        name = _mariadb_ident(db.name)
        self._sql("", f"DROP DATABASE IF EXISTS {name};\nCREATE DATABASE {name} CHARACTER SET utf8mb4;\n")
        self._sql(db.name, _mariadb_schema_sql(db))

    def _dump(self, db: SampleDatabase, stdout: int) -> subprocess.Popen[bytes]:
        args = ["--single-transaction", "--routines", "--skip-dump-date", db.name]
        return self.server.dump_tool(args, stdout=stdout)

    def dump(self, db: SampleDatabase) -> bytes:
        """mariadb-dump of the database."""
        self._make(db)
        process = self._dump(db, subprocess.PIPE)
        errors = StderrTail(process.stderr)
        assert process.stdout is not None
        out = process.stdout.read()
        if process.wait() != 0:
            errors.join()
            raise RuntimeError(f"mariadb-dump of the sample database {db.name} failed: {errors.text}")
        return out

    def dump_to(self, db: SampleDatabase, target: int) -> None:
        """mariadb-dump straight into an open file (large dumps never pass through this process)."""
        self._make(db)
        process = self._dump(db, target)
        errors = StderrTail(process.stderr)
        if process.wait() != 0:
            errors.join()
            raise RuntimeError(f"mariadb-dump of the sample database {db.name} failed: {errors.text}")


def _mariadb_ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"
