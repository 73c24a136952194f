"""Small real PostgreSQL databases and their dumps, made with pg_dump: what the simulator stages when
it writes real dumps, and what the drill benchmark restores.

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

from backup_pipeline.adapters.drill_host import Limits
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
