"""The parts of dagster-postgres the product builds on that it does not export (the seam with it).

`app.dagster_storage` is dagster-postgres's storage with kept connections. dagster-postgres exports
its storage classes (imported from `dagster_postgres` where used); what it does not export, or
promise, is here, each assumption checked by `backup_pipeline_tests/defs/test_private_seams.py`:

- `pg_url_from_config(config)` and `get_token_provider_from_config(config)`: how `storage: postgres:`
  becomes a URL and a token provider (as `DagsterPostgresStorage.from_config_value` does).
- `PostgresRunStorage` and `PostgresEventLogStorage` take `(postgres_url, should_autocreate_tables,
  token_provider=)`, keep their SQLAlchemy engine in `_engine`, and `optimize_for_webserver(
  statement_timeout, pool_recycle, max_overflow)` replaces it with a pooled one.
- `PostgresEventLogStorage.has_table(table_name)` is asked before writing an asset check event.
- `DagsterPostgresStorage` keeps `postgres_url`, `should_autocreate_tables`, `_inst_data` and its
  three storages in `_run_storage`, `_event_log_storage`, `_schedule_storage`.
"""

from __future__ import annotations

from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

__all__ = ["get_token_provider_from_config", "pg_url_from_config"]
