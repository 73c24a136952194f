"""Dagster's own storage as the shipped dagster.yaml configures it: the same events in the UI as with
dagster-postgres's stock storage, written over connections kept open instead of one per statement
group, and the number of events a scan writes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from dagster import DagsterEventType, DagsterInstance

from backup_pipeline.app.dagster_storage import PooledEventLogStorage
from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.defs.test_dagster_job import DAY, SCAN_AT, simulate_fleet
from backup_pipeline_tests.support.dagster_runs import run_scan_job
from backup_pipeline_tests.support.paths import PROJECT_ROOT

STOCK_STORAGE = "storage:\n  postgres:\n    postgres_url:\n      env: BACKUP_PIPELINE_DAGSTER_PG_URL\n"


@contextmanager
def instance_from(home: Path, dagster_yaml: str, url: str) -> Iterator[DagsterInstance]:
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(dagster_yaml)
    os.environ["BACKUP_PIPELINE_DAGSTER_PG_URL"] = url
    try:
        instance = DagsterInstance.from_config(str(home))
        yield instance
        before = sessions(url)
        instance.dispose()
        assert sessions(url) <= before - (2 if dagster_yaml != STOCK_STORAGE else 0)  # runs', events'
    finally:
        del os.environ["BACKUP_PIPELINE_DAGSTER_PG_URL"]


def sessions(url: str) -> int:
    """Client connections open on the database (disposing the instance closes the kept ones)."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        others = "datname = current_database() AND pid <> pg_backend_pid()"
        count = conn.execute(sa.text(f"SELECT count(*) FROM pg_stat_activity WHERE {others}")).scalar()
    engine.dispose()
    return int(count or 0)


@contextmanager
def counting_connections() -> Iterator[list[int]]:
    """How many new PostgreSQL connections the process opens meanwhile (every engine)."""
    opened = [0]

    def count(*_: object) -> None:
        opened[0] += 1

    sa.event.listen(sa.engine.Engine, "connect", count)
    try:
        yield opened
    finally:
        sa.event.remove(sa.engine.Engine, "connect", count)


def scan_events(instance: DagsterInstance) -> tuple[int, int, int, int]:
    """(connections opened, events, materializations, check evaluations) of one scan run."""
    with counting_connections() as opened:
        result = run_scan_job(DAY, SCAN_AT, instance)
    kinds = [e.dagster_event.event_type for e in instance.all_logs(result.run_id) if e.dagster_event]
    return (
        opened[0],
        len(instance.all_logs(result.run_id)),
        kinds.count(DagsterEventType.ASSET_MATERIALIZATION),
        kinds.count(DagsterEventType.ASSET_CHECK_EVALUATION),
    )


def _second_database(url: str, name: str) -> str:
    admin = sa.create_engine(sa.make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return sa.make_url(url).set(database=name).render_as_string(hide_password=False)


def test_the_shipped_storage_writes_the_same_events_over_kept_connections(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per-agent assets (3 agents): each scan reports the reports' materialization, then a
    materialization and an integrity and a size check evaluation per agent. The stock storage
    opens a connection per statement group (two or three per event); the shipped one a handful for
    the whole run, and closes them when the instance is disposed."""
    monkeypatch.setenv("BACKUP_PIPELINE_PER_DATABASE_ASSETS_MAX", "2")
    simulate_fleet(workspace, agents=3, databases=2)
    shipped = (PROJECT_ROOT / "dagster.yaml").read_text()
    stock_url = _second_database(workspace.database_url, workspace.database_url.rsplit("/", 1)[-1] + "_stock")

    with instance_from(workspace.home / "shipped", shipped, workspace.database_url) as instance:
        assert isinstance(instance.event_log_storage, PooledEventLogStorage)
        connections, events, materializations, checks = scan_events(instance)
        idle = run_scan_job(DAY, SCAN_AT, instance, automatic=True)  # nothing new: no asset event
        assert not [
            e for e in instance.all_logs(idle.run_id) if e.dagster_event and e.dagster_event.asset_key
        ]
    # The same day again (an explicit re-evaluation: every entry is materialized, `changed: false`).
    with instance_from(workspace.home / "stock", STOCK_STORAGE, stock_url) as instance:
        stock_connections, _, stock_materializations, stock_checks = scan_events(instance)

    assert (materializations, checks) == (1 + 3, 6)  # the recorded reports, then each agent
    assert (stock_materializations, stock_checks) == (3, 6)  # no report is new the second time
    assert connections < 10, f"{connections} connections opened for {events} events"
    assert stock_connections >= 2 * (stock_materializations + stock_checks)


def test_the_shipped_run_queue_dequeues_every_second_one_scan_and_one_drill_run_at_a_time(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run coordinator block (a 1 s dequeue) and the `concurrency` block (the limits) of the
    shipped dagster.yaml both take effect: one does not replace the other."""
    (tmp_path / "dagster.yaml").write_text((PROJECT_ROOT / "dagster.yaml").read_text())
    monkeypatch.setenv("BACKUP_PIPELINE_DAGSTER_PG_URL", database_url)
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_coordinator.dequeue_interval_seconds == 1  # type: ignore[attr-defined]
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None
        assert queue.max_concurrent_runs == 4
        limits = {(t["key"], t.get("value")): t["limit"] for t in queue.tag_concurrency_limits}
        assert limits == {
            ("backup_pipeline/scan", "exclusive"): 1,
            ("backup_pipeline/drill", "exclusive"): 1,
        }
