"""Dagster's own storage on PostgreSQL, keeping its connections open within a process.

dagster-postgres opens a new PostgreSQL connection for every statement group (SQLAlchemy's
NullPool, so that idle processes hold none): writing one asset materialization opened two, one
asset check evaluation three (the event, a "does the checks table exist" query, the check's row).
A connection costs about 3 ms on the embedded server, more than the statements themselves, and a
first scan of 20,000 databases writes some 3,000 such events. This storage is dagster-postgres's,
with runs and events on the pooled engine its webserver already uses (one connection kept per
process, a few more under concurrency, recycled hourly, closed when the instance is disposed) and
the checks table's existence remembered once seen.

`dagster.yaml` names it (`storage: custom:`); `backup-pipeline dev`, `dg dev`, the daemon, run
workers and CLI scans all load it from there. Without a URL in its configuration it stores on the
product's PostgreSQL (BACKUP_PIPELINE_DAGSTER_PG_URL, else a `dagster` database beside the product's).
"""

from __future__ import annotations

import os
from typing import Any

from dagster_postgres import (
    DagsterPostgresStorage,
    PostgresEventLogStorage,
    PostgresRunStorage,
    PostgresScheduleStorage,
)

from backup_pipeline.defs.private_dagster import ConfigurableClassData, DagsterStorage, pg_config
from backup_pipeline.defs.private_dagster_postgres import get_token_provider_from_config, pg_url_from_config

POOL_RECYCLE_SECONDS = 3600
POOL_MAX_OVERFLOW = 8  # connections beyond the kept one, closed when returned (threads of a daemon)


class _KeptConnections:
    """A dagster-postgres storage whose engine keeps its connection: the webserver's pooled
    engine (no statement timeout: runs behave as before), closed when the instance is disposed."""

    _engine: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.optimize_for_webserver(  # type: ignore[attr-defined]
            statement_timeout=0, pool_recycle=POOL_RECYCLE_SECONDS, max_overflow=POOL_MAX_OVERFLOW
        )

    def dispose(self) -> None:
        super().dispose()  # type: ignore[misc]
        self._engine.dispose()


class PooledRunStorage(_KeptConnections, PostgresRunStorage):
    """Runs and their status, over a kept connection."""


class PooledEventLogStorage(_KeptConnections, PostgresEventLogStorage):
    """The event log over a kept connection; its tables are created once and never dropped while
    a process runs, so whether the checks table exists is asked once, not at every check event."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._existing_tables: set[str] = set()
        super().__init__(*args, **kwargs)

    def has_table(self, table_name: str) -> bool:
        if table_name not in self._existing_tables and super().has_table(table_name):
            self._existing_tables.add(table_name)
        return table_name in self._existing_tables


class PooledPostgresStorage(DagsterPostgresStorage):
    """`storage: postgres:` as dagster-postgres builds it, runs and events over kept connections."""

    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = True,
        inst_data: ConfigurableClassData | None = None,
        token_provider: Any = None,
    ) -> None:
        self.postgres_url = postgres_url
        self.should_autocreate_tables = should_autocreate_tables
        self._inst_data = inst_data
        options = {"token_provider": token_provider}
        self._run_storage = PooledRunStorage(postgres_url, should_autocreate_tables, **options)
        self._event_log_storage = PooledEventLogStorage(postgres_url, should_autocreate_tables, **options)
        # Schedules and sensors are touched by the daemon's ticks only, and Dagster never disposes
        # this storage: it keeps opening a connection when it needs one.
        self._schedule_storage = PostgresScheduleStorage(postgres_url, should_autocreate_tables, **options)
        DagsterStorage.__init__(self)

    @classmethod
    def config_type(cls) -> Any:
        return pg_config()

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: Any
    ) -> PooledPostgresStorage:
        return cls(
            inst_data=inst_data,
            postgres_url=_storage_url(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )


def _storage_url(config_value: Any) -> str:
    """The URL dagster.yaml gives, else the product's own (BACKUP_PIPELINE_DAGSTER_PG_URL, else the
    `dagster` database of the product's PostgreSQL): any Dagster command started from the checkout
    (`dg dev`, `dg check defs`, `dagster dev`) stores on the same server as the product."""
    if config_value.get("postgres_url") or config_value.get("postgres_db"):
        return pg_url_from_config(config_value)
    from backup_pipeline.app.launcher import DAGSTER_URL_ENV, ensure_dagster_storage_url
    from backup_pipeline.config.settings import load_settings

    ensure_dagster_storage_url(load_settings())
    return os.environ[DAGSTER_URL_ENV]
