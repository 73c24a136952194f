"""What Dagster shows is the truth, read back through Dagster's own APIs from a persistent instance on
PostgreSQL (the shipped dagster.yaml), after the product's commands ran:

- a materialization of a backup asset's partition means a good backup: the days with a bad or
  missing cycle are not materialized, their cycles are observations, and their checks failed for
  that partition; a cycle re-evaluated from bad to good materializes;
- `backup-pipeline drill` runs the drill job: the drilled asset's restorable check has an evaluation;
- every backup asset has a freshness policy from its schedule;
- the assets of the definitions and the events of a scan name the same fleet after `backups sync
  --file OTHER` (one source: the synced fleet).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
)
from sqlalchemy.engine import make_url

from backup_pipeline.app.launcher import DAGSTER_URL_ENV, SHIPPED_INSTANCE_CONFIG
from backup_pipeline.config.settings import load_settings
from backup_pipeline.defs import build_definitions
from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.deposit_builder import Agent, gz, utc
from backup_pipeline_tests.support.drill_fixtures import DAY1, SITE, SampleDumps, build_site, staged

AGENT = "SIRPACAM_DOUALA_NEWBELL"
DAY_ONE, DAY_TWO = "2025-11-21", "2025-11-22"
COMPTA = AssetKey(["backups", AGENT, "compta_db_1300"])
PAIE = AssetKey(["backups", AGENT, "paie_db_1300"])


@pytest.fixture
def dagster_home(workspace: Workspace, pg_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """DAGSTER_HOME with the shipped dagster.yaml, on a fresh database of the test server: the CLI's
    in-process runs record there, as they do for the UI."""
    name = f"bp_truth_dagster_{os.getpid()}_{time.monotonic_ns()}"
    admin = sa.create_engine(make_url(pg_server).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    home = workspace.home / "dagster_home"
    home.mkdir(parents=True)
    shutil.copyfile(SHIPPED_INSTANCE_CONFIG, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv(
        DAGSTER_URL_ENV, make_url(pg_server).set(database=name).render_as_string(hide_password=False)
    )
    yield home
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def instance(home: Path) -> DagsterInstance:
    return DagsterInstance.from_config(str(home))


def two_databases(ws: Workspace) -> Agent:
    ws.write_jobs(
        [
            {"agent_id": AGENT, "database_name": database, "expected_hour_utc": 13, "expected_minute_utc": 0}
            for database in ("compta_db", "paie_db")
        ]
    )
    ws.cli("backups", "sync", "--at", "2025-11-20T00:00:00Z")
    return Agent(ws.root, AGENT)


def report(agent: Agent, day: str, *databases: str) -> None:
    """One report at 13:05 of `day` with a good dump of each database."""
    sections = {}
    for database in databases:
        packed = gz(f"-- {database} of {day}\n".encode() * 500)
        agent.stage(f"{database}_{day}.sql.gz", packed)
        sections[database] = agent.database_section(f"{database}_{day}.sql.gz", packed)
    agent.report(utc(f"{day}T13:05:00Z"), sections)


def test_only_good_days_are_materialized_and_a_failed_day_shows_its_failed_check(
    workspace: Workspace, dagster_home: Path
) -> None:
    agent = two_databases(workspace)
    report(agent, DAY_ONE, "compta_db")  # paie_db sends nothing on the first day: MISSING
    report(agent, DAY_TWO, "compta_db", "paie_db")
    workspace.cli("scan", "--at", f"{DAY_TWO}T23:00:00Z", "--partition", DAY_ONE, "--partition", DAY_TWO)
    assert workspace.entry(AGENT, "paie_db", f"{DAY_ONE}T13:00:00Z")["status"] == "MISSING"

    dagster = instance(dagster_home)
    assert dagster.get_materialized_partitions(COMPTA) == {DAY_ONE, DAY_TWO}
    assert dagster.get_materialized_partitions(PAIE) == {DAY_TWO}
    (observed,) = dagster.fetch_observations(
        AssetRecordsFilter(asset_key=PAIE, asset_partitions=[DAY_ONE]), limit=10
    ).records
    metadata = observed.asset_observation.metadata
    assert metadata["status"].value == "MISSING" and metadata["staged_bytes"].value is None
    history = dagster.event_log_storage.get_asset_check_execution_history(
        AssetCheckKey(PAIE, "integrity"), limit=10
    )
    verdicts = {(r.partition, r.status.value) for r in history}
    assert verdicts == {(DAY_ONE, "FAILED"), (DAY_TWO, "SUCCEEDED")}
    good = dagster.fetch_materializations(
        AssetRecordsFilter(asset_key=PAIE, asset_partitions=[DAY_TWO]), limit=1
    ).records[0]
    assert good.asset_materialization.metadata["staged_bytes"].value > 0  # numeric: plotted by the UI
    dagster.dispose()

    # The day's report was only late: once uploaded, a re-evaluation of that day materializes it.
    report(agent, DAY_ONE, "paie_db")
    workspace.cli("scan", "--at", f"{DAY_TWO}T23:30:00Z", "--partition", DAY_ONE)
    assert workspace.entry(AGENT, "paie_db", f"{DAY_ONE}T13:00:00Z")["status"] == "SUCCESS"
    dagster = instance(dagster_home)
    assert dagster.get_materialized_partitions(PAIE) == {DAY_ONE, DAY_TWO}
    latest = dagster.event_log_storage.get_asset_check_execution_history(
        AssetCheckKey(PAIE, "integrity"), limit=1
    )[0]
    assert (latest.partition, latest.status.value) == (DAY_ONE, "SUCCEEDED")
    dagster.dispose()


def test_backup_pipeline_drill_records_its_run_and_the_restorable_check_in_dagster(
    drill_workspace: Workspace, sample_dumps: SampleDumps, dagster_home: Path
) -> None:
    site = build_site(
        drill_workspace, {"good": {DAY1: staged("good", DAY1, gz(sample_dumps.get("good")), ".sql.gz")}}
    )
    key = AssetKey(["backups", SITE, "good_1300"])

    row = site.drill_json("good", DAY1)

    assert row["outcome"] == "RESTORED"
    dagster = instance(dagster_home)
    evaluation = dagster.get_latest_asset_check_evaluation_record(AssetCheckKey(key, "restorable"))
    assert evaluation is not None and evaluation.partition == DAY1
    assert evaluation.status.value == "SUCCEEDED"
    run = dagster.get_run_by_id(evaluation.run_id)
    assert run is not None and run.job_name == "restore_drills"
    (plotted,) = dagster.fetch_observations(
        AssetRecordsFilter(asset_key=key, asset_partitions=[DAY1]), limit=5
    ).records
    figures = plotted.asset_observation.metadata
    assert figures["restored_rows"].value == row["rows"] and figures["restored_bytes"].value == row["bytes"]
    assert figures["drill_seconds"].value > 0
    dagster.dispose()


def test_every_backup_asset_is_overdue_after_its_deadline_without_a_good_backup(workspace: Workspace) -> None:
    """The freshness policy of each backup asset: the deadline is the expected instant plus the grace,
    in the job's time zone; the window opens early + grace before it."""
    workspace.write_jobs(
        [
            {
                "agent_id": AGENT,
                "database_name": "compta_db",
                "expected_hour_utc": 13,
                "expected_minute_utc": 0,
            },
            {
                "agent_id": AGENT,
                "database_name": "compta_db",
                "name": "weekly_full",
                "schedule": "50 23 * * 6",
                "timezone": "Europe/Paris",
                "early_minutes": 30,
                "grace_minutes": 120,
            },
            # 02:15 and 02:45 + 20 min fall in two different hours: no single cron says the deadlines
            {
                "agent_id": AGENT,
                "database_name": "paie_db",
                "schedule": "15,45 2 * * *",
                "early_minutes": 5,
                "grace_minutes": 20,
            },
        ],
        defaults={"window_minutes": 60},
    )
    graph = build_definitions(load_settings()).resolve_asset_graph()
    backups = [k for k in graph.get_all_asset_keys() if k.path[0] == "backups"]
    assert len(backups) == 3
    policies = {k.path[-1]: graph.get(k).freshness_policy for k in backups}
    daily = policies["compta_db_1300"]
    assert type(daily).__name__ == "CronFreshnessPolicy"  # the kinds are not exported
    assert (daily.deadline_cron, daily.timezone, daily.lower_bound_delta) == (
        "0 14 * * *",
        "UTC",
        timedelta(hours=2),
    )
    weekly = policies["compta_db_weekly_full"]
    assert type(weekly).__name__ == "CronFreshnessPolicy"
    # Saturday 23:50 + 120 min is Sunday 01:50, in Paris.
    assert (weekly.deadline_cron, weekly.timezone) == ("50 1 * * 0", "Europe/Paris")
    assert weekly.lower_bound_delta == timedelta(minutes=150)
    uneven = policies["paie_db"]
    assert type(uneven).__name__ == "TimeWindowFreshnessPolicy"
    # The longest gap between its cycles (02:45 to 02:15 the next day) plus its window.
    assert uneven.fail_window.to_timedelta() == timedelta(hours=23, minutes=30 + 25)


def test_the_assets_of_an_agent_fleet_have_a_freshness_policy_too(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKUP_PIPELINE_PER_DATABASE_ASSETS_MAX", "1")
    two_databases(workspace)
    graph = build_definitions(load_settings()).resolve_asset_graph()
    policy = graph.get(AssetKey(["backups", AGENT])).freshness_policy
    assert type(policy).__name__ == "TimeWindowFreshnessPolicy"
    # Its day is good once a day: overdue a day and a window (60 min each side) after the last one.
    assert policy.fail_window.to_timedelta() == timedelta(days=1, hours=2)
