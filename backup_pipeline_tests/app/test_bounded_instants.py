"""Issue 20: an instant a person types (`--at`, a run's `as_of`) is refused outside the fleet's life.

From the fleet's start date (BACKUP_PIPELINE_START_DATE) to a few minutes after now: a mistaken
`--at 9999-12-31` used to leave expected backups created in that future (every later automatic scan
crashed), `--at 2100` left them never evaluated again, `--at 2200` recorded a valid report as too old
and a cycle that had not happened as MISSING. A refused command does nothing at all; what such a
command stored before is repaired by migration 0012.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command as alembic
from alembic.config import Config

from backup_pipeline.storage.database import MIGRATIONS_DIR, migrate
from backup_pipeline_tests.app.test_cli_contract import assert_expected_error
from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.dagster_runs import run_scan_job
from backup_pipeline_tests.support.deposit_builder import Agent, utc

AGENT = "SIRPACAM_DOUALA_NEWBELL"
JOB = {"agent_id": AGENT, "database_name": "compta_db", "expected_hour_utc": 13, "expected_minute_utc": 0}


def stored(workspace: Workspace) -> dict[str, list[tuple[object, ...]]]:
    """Everything a command could have written."""
    engine = sa.create_engine(workspace.database_url)
    try:
        with engine.connect() as conn:
            return {
                table: sorted(tuple(map(str, row)) for row in conn.execute(sa.text(f"SELECT * FROM {table}")))
                for table in (
                    "expected_jobs",
                    "status_reports",
                    "backup_entries",
                    "scan_records",
                    "fleet_state",
                )
            }
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "command",
    [
        ["scan", "--at", "9999-12-31T23:59:59Z"],
        ["scan", "--at", "2100-01-01T00:00:00Z"],
        ["scan", "--at", "2200-01-01T00:00:00Z", "--partition", "2025-11-21"],
        ["backups", "sync", "--at", "9999-12-31T23:59:59Z"],
        ["jobs", "sync", "--at", "2100-01-01T00:00:00Z"],
        ["drill", "--due", "--at", "9999-12-31T23:59:59Z"],
    ],
)
def test_an_instant_after_now_is_refused_and_nothing_remains(
    workspace: Workspace, command: list[str]
) -> None:
    workspace.write_jobs([JOB])
    workspace.cli("backups", "sync", "--at", "2025-11-20T08:00:00Z")
    Agent(workspace.root, AGENT).backup(utc("2025-11-21T13:05:00Z"), "compta_db", b"a valid report")
    before = stored(workspace)
    result = workspace.cli(*command, expect_ok=False)
    assert_expected_error(result, "--at", command[command.index("--at") + 1], "after now")
    assert stored(workspace) == before
    assert workspace.cli("scan", "--at", "2025-11-21T14:30:00Z").exit_code == 0, "later scans work"
    assert workspace.entry(AGENT, "compta_db", "2025-11-21T13:00:00Z")["status"] == "SUCCESS"


def test_an_instant_before_the_fleet_started_is_refused(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKUP_PIPELINE_START_DATE", "2025-01-01")
    workspace.write_jobs([JOB])
    for command in (["scan", "--at", "2024-12-31T23:00:00Z"], ["backups", "sync", "--at", "1970-01-01"]):
        result = workspace.cli(*command, expect_ok=False)
        assert_expected_error(
            result, "--at", "before the fleet's start date 2025-01-01", "BACKUP_PIPELINE_START_DATE"
        )
    assert stored(workspace)["expected_jobs"] == []


def test_now_and_a_little_after_are_accepted(workspace: Workspace) -> None:
    workspace.write_jobs([JOB])
    soon = (datetime.now(UTC) + timedelta(minutes=2)).isoformat()
    workspace.cli("backups", "sync", "--at", soon)
    assert len(workspace.json("status")) == 1


def test_a_run_configured_as_of_the_far_future_fails_before_writing_anything(workspace: Workspace) -> None:
    workspace.write_jobs([JOB])
    workspace.cli("backups", "sync", "--at", "2025-11-20T08:00:00Z")
    before = stored(workspace)
    result = run_scan_job("2025-11-21", "9999-12-31T23:59:59Z", raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "after now" in failure.step_failure_data.error.message
    after = stored(workspace)
    assert [r[-1] for r in after.pop("scan_records")] == ["failed"], "the run is recorded as failed"
    assert after == {k: v for k, v in before.items() if k != "scan_records"}


def test_migration_0012_repairs_expected_backups_created_in_the_future(database_url: str) -> None:
    """What a far-future `--at` stored before the bound: a creation time in that future (automatic
    scans never evaluated the backup, or crashed), and a fleet check stuck there."""
    engine = sa.create_engine(database_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            alembic.downgrade(config, "0011")
        with engine.begin() as conn:
            for name, created in (
                ("far", "9999-12-31T23:59:59Z"),
                ("near", "2100-01-01T00:00:00Z"),
                ("ok", "2025-11-20T08:00:00Z"),
            ):
                conn.execute(
                    sa.text(
                        "INSERT INTO expected_jobs (agent_id_responsible, database_name, name,"
                        " expected_hour_utc, expected_minute_utc, early_minutes, grace_minutes, timezone,"
                        " content_change, is_active,"
                        " company_name, city, neighborhood, created_at)"
                        " VALUES (:agent, 'db', :name, 13, 0, 60, 60, 'UTC', 'changed', true,"
                        " 'SIRPACAM', 'DOUALA', 'NEWBELL', :created)"
                    ),
                    {"agent": AGENT, "name": name, "created": created},
                )
            conn.execute(
                sa.text("INSERT INTO fleet_state (id, checked_at) VALUES (1, '9999-12-31T00:00:00Z')")
            )
        migrate(engine)
        with engine.connect() as conn:
            created = dict(conn.execute(sa.text("SELECT name, created_at FROM expected_jobs")).all())
            checked = conn.execute(sa.text("SELECT checked_at FROM fleet_state")).scalar()
    finally:
        engine.dispose()
    now = datetime.now(UTC)
    assert created["ok"] == utc("2025-11-20T08:00:00Z")
    assert now - timedelta(minutes=5) < created["far"] <= now
    assert now - timedelta(minutes=5) < created["near"] <= now
    assert checked is None
