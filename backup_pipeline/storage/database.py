"""Connecting to PostgreSQL: an external server by URL, or the embedded one under the product's home.

Migrations are applied on connect, under an advisory lock so concurrent processes migrate once.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from backup_pipeline.config.settings import Settings
from backup_pipeline.storage.embedded import EmbeddedServerError, embedded_server_url, normalise_url

log = logging.getLogger(__name__)

APP_DATABASE = "backup_pipeline"
DAGSTER_DATABASE = "dagster"
MIGRATION_LOCK = 0x6261636B  # "back": an arbitrary, fixed advisory-lock key
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
VERSION_TABLE = "backup_pipeline_alembic_version"  # apart from Dagster's, which may share the database
_REVISION_LINE = re.compile(r'^(revision|down_revision)\b[^=\n]*=\s*(?:"([^"]+)"|None)', re.MULTILINE)
_lock = threading.Lock()
_open: dict[str, Database] = {}
# The embedded server's databases known to exist, by (data folder, name): a process asks for its
# database once per op, and checking pg_database each time cost a connection (~10 ms) per op.
_embedded_databases: dict[tuple[str, str], str] = {}


# What a caller outside storage catches when PostgreSQL fails mid-command (the driver's error, wrapped
# by SQLAlchemy), and the session type it passes back in: SQL itself stays in this package.
DatabaseFailure = DBAPIError
# No connection of the pool came free in time: PostgreSQL is fine, this process is too busy.
DatabaseBusy = sa.exc.TimeoutError
__all__ = [
    "Database",
    "DatabaseBusy",
    "DatabaseFailure",
    "DatabaseUnavailable",
    "Session",
    "open_database",
    "serving_database",
]


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL cannot be reached or prepared; the message says which server, without secrets."""


@dataclass
class Database:
    engine: Engine
    sessions: sessionmaker[Session]

    @property
    def safe_url(self) -> str:
        return redact(self.engine.url)


def redact(url: URL | str) -> str:
    """A URL fit for logs and messages: the password never appears."""
    try:
        parsed = url if isinstance(url, URL) else make_url(url)
    except ArgumentError:
        return "<unparseable database URL>"
    return parsed.render_as_string(hide_password=True)


def ensure_database(server_url: str, name: str) -> str:
    """The URL of database `name` on the same server, creating it when absent."""
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            ).first()
            if not exists:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.ProgrammingError as exc:
        if "already exists" not in str(exc):  # a concurrent process won the race
            raise
    finally:
        engine.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def application_url(settings: Settings) -> str:
    if settings.database_url:
        return _configured_url(settings.database_url)
    return _embedded_database(settings, APP_DATABASE)


def _embedded_database(settings: Settings, name: str) -> str:
    """The URL of database `name` on the embedded server, created when absent (checked once per process
    until `close_all`)."""
    key = (str(settings.embedded_pgdata), name)
    if key not in _embedded_databases:
        _embedded_databases[key] = ensure_database(_embedded(settings), name)
    return _embedded_databases[key]


def _embedded(settings: Settings) -> str:
    try:
        return embedded_server_url(settings.embedded_pgdata.resolve())
    except EmbeddedServerError as exc:
        raise DatabaseUnavailable(str(exc)) from exc


def _configured_url(url: str) -> str:
    """BACKUP_PIPELINE_DATABASE_URL normalised, or an actionable error that never shows the URL."""
    normalised = normalise_url(url)
    try:
        backend = make_url(normalised).get_backend_name()
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        backend = None
    if backend != "postgresql":
        raise DatabaseUnavailable(
            "BACKUP_PIPELINE_DATABASE_URL is not a PostgreSQL URL "
            "(expected postgresql://user:password@host:port/database)"
        )
    return normalised


# Dagster's run events on the embedded server commit without waiting for their WAL flush: a commit
# per event (three or four per asset event) was a good part of each event's cost. A crash of the
# machine can lose the last fraction of a second of run events, never corrupt them; the product's
# own database (entries, alerts) keeps synchronous commits.
DAGSTER_SESSION_OPTIONS = "-c synchronous_commit=off"


def dagster_url(settings: Settings) -> str:
    """Where Dagster keeps its runs and events when the product starts it (embedded mode)."""
    url = make_url(_embedded_database(settings, DAGSTER_DATABASE))
    return url.update_query_dict({"options": DAGSTER_SESSION_OPTIONS}).render_as_string(hide_password=False)


@functools.cache
def head_revision() -> str | None:
    """The newest migration, from the scripts' `revision` and `down_revision` lines; None unless
    they name exactly one head (Alembic then decides)."""
    revisions, parents = set(), set()
    for script in (MIGRATIONS_DIR / "versions").glob("*.py"):
        for kind, value in _REVISION_LINE.findall(script.read_text()):
            if value:
                (revisions if kind == "revision" else parents).add(value)
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def at_head(engine: Engine) -> bool:
    """Whether the database is at the newest migration (two quick queries, no Alembic)."""
    head = head_revision()
    if head is None:
        return False
    with engine.connect() as conn:
        if conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": VERSION_TABLE}).scalar() is None:
            return False
        versions = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    return list(versions) == [head]


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration. Every process opening the database calls this:
    when it is already there, Alembic is not even imported (a third of a second per command)."""
    if at_head(engine):
        return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


def open_database(settings: Settings) -> Database:
    """A migrated database handle, shared within the process."""
    with _lock:
        try:
            url = application_url(settings)
        except OperationalError as exc:
            raise DatabaseUnavailable(f"PostgreSQL unreachable: {_first_line(exc)}") from None
        if url not in _open:
            engine = sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
            try:
                migrate(engine)
            except OperationalError as exc:
                engine.dispose()
                raise DatabaseUnavailable(
                    f"PostgreSQL at {redact(url)} unreachable: {_first_line(exc)}"
                ) from None
            _open[url] = Database(engine, sessionmaker(engine, expire_on_commit=False))
        return _open[url]


def serving_database(settings: Settings, connections: int, wait_seconds: float) -> Database:
    """A handle for a server answering requests in `connections` threads: a pool of that many
    connections, and a request that finds none free within `wait_seconds` gets DatabaseBusy (a busy
    answer beats a scraper's timeout). The schema is brought up to date first, as `open_database`."""
    open_database(settings)
    with _lock:
        url = application_url(settings)
    engine = sa.create_engine(
        url, pool_pre_ping=True, pool_size=connections, max_overflow=0, pool_timeout=wait_seconds
    )
    return Database(engine, sessionmaker(engine, expire_on_commit=False))


def close_all() -> None:
    with _lock:
        for database in _open.values():
            database.engine.dispose()
        _open.clear()
        _embedded_databases.clear()


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", exc)).strip().splitlines()
    return text[0] if text else type(exc).__name__


def db_error_line(error: BaseException | str) -> str:
    """What went wrong with PostgreSQL, in one line fit for people: the driver's own first line,
    without SQLAlchemy's prefixes, the SQL or its parameters (the driver never quotes passwords)."""
    text = str(getattr(error, "orig", None) or error).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else "unknown error"
    first = re.sub(r"^(?:[\w.]+(?:Error|Exception): )?(?:\(psycopg2?\.[\w.]+\) )?", "", first)
    return redact_text(first)


def redact_text(text: str) -> str:
    """`text` with the password of any database URL in it masked."""
    return re.sub(r"(\w+(?:\+\w+)?://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)
