"""Schedules in Dagster: the per-database assets named by identity with their schedule in words, the
scan job materializing a cron-scheduled backup's cycles, the 15-minute schedule's and the digest
schedule's timing following the schedules."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from dagster import Definitions, build_schedule_context

from backup_pipeline.config.jobs_file import load_jobs_file
from backup_pipeline.config.settings import load_settings
from backup_pipeline.defs import build_definitions
from backup_pipeline.defs.automation import SCAN_SCHEDULE
from backup_pipeline.defs.digest import digest_delay
from backup_pipeline.defs.resources import DatabaseResource
from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.dagster_runs import run_scan_job
from backup_pipeline_tests.support.deposit_builder import Agent, gz, utc

AGENT = "SIRPACAM_DOUALA_NEWBELL"
JOBS = [
    {"agent_id": AGENT, "database_name": "compta_db", "expected_hour_utc": 13, "expected_minute_utc": 0},
    {
        "agent_id": AGENT,
        "database_name": "compta_db",
        "name": "weekly_full",
        "schedule": "50 23 * * 6",
        "timezone": "Europe/Paris",
        "grace_minutes": 120,
    },
    {"agent_id": AGENT, "database_name": "paie_db", "schedule": "0 */6 * * *"},
]


def fleet_defs(ws: Workspace) -> Definitions:
    ws.write_jobs(JOBS)
    return build_definitions(load_settings())


def test_assets_are_named_by_identity_and_describe_their_schedule(workspace: Workspace) -> None:
    defs = fleet_defs(workspace)
    Definitions.validate_loadable(defs)
    specs = {spec.key.path[-1]: spec for spec in defs.resolve_all_asset_specs()}
    # The daily-UTC backup keeps its key (name 1300); a named one and the unnamed cron one get theirs.
    assert {"compta_db_1300", "compta_db_weekly_full", "paie_db"} <= set(specs)
    weekly = specs["compta_db_weekly_full"]
    assert "At 23:50 on Saturday (Europe/Paris)" in (weekly.description or "")
    assert "120 min late" in (weekly.description or "")
    assert weekly.metadata["schedule"] == "At 23:50 on Saturday (Europe/Paris)"
    assert "daily at 13:00 (UTC)" in (specs["compta_db_1300"].description or "")


def test_the_scan_job_materializes_each_cycle_on_its_backups_asset(workspace: Workspace) -> None:
    workspace.write_jobs(JOBS)
    agent = Agent(workspace.root, AGENT)
    for hour in (0, 6):
        packed = gz(b"-- paie\n" * 20)
        agent.stage(f"paie_db_{hour}.sql.gz", packed)
        agent.report(
            utc(f"2025-11-22T{hour:02d}:05:00Z"),
            {"paie_db": agent.database_section(f"paie_db_{hour}.sql.gz", packed)},
        )
    workspace.cli("backups", "sync", "--at", "2025-11-21T00:00:00Z")

    result = run_scan_job("2025-11-22", "2025-11-22T07:30:00Z")
    materialized = [
        (m.asset_key.path[-1], m.metadata["cycle_expected_at"].value, m.metadata["schedule"].value)
        for m in result.asset_materializations_for_node("evaluate")
    ]
    # Saturday 23:50 in Paris is 22:50 UTC: not due yet, like the 12:00 and 13:00 cycles.
    assert sorted(materialized) == [
        ("paie_db", "2025-11-22T00:00:00Z", "At minute 0 past every sixth hour (UTC)"),
        ("paie_db", "2025-11-22T06:00:00Z", "At minute 0 past every sixth hour (UTC)"),
    ]


def test_the_periodic_scan_and_the_digest_follow_the_schedules(workspace: Workspace) -> None:
    """The weekly backup alone: Saturday 23:50 in Paris is 22:50 UTC in winter, its deadline 00:50 on
    Sunday (grace 120 min). The 15-minute schedule asks for Saturday once that deadline has passed."""
    workspace.write_jobs([JOBS[1]])
    workspace.cli("backups", "sync", "--at", "2025-11-20T00:00:00Z")
    settings = load_settings()
    defs = build_definitions(settings)
    schedule = defs.resolve_schedule_def(SCAN_SCHEDULE)

    def requested(at: datetime) -> list[str]:
        resources = {"settings": settings, "database": DatabaseResource(settings=settings)}
        with build_schedule_context(
            scheduled_execution_time=at, repository_def=defs.get_repository_def(), resources=resources
        ) as context:
            return sorted(r.partition_key for r in schedule.evaluate_tick(context).run_requests or [])

    assert requested(datetime(2025, 11, 23, 0, 45, tzinfo=UTC)) == []
    assert requested(datetime(2025, 11, 23, 1, 0, tzinfo=UTC)) == ["2025-11-22"]
    # The latest deadline of a day: the weekly one, 23:50 Paris = 22:50 UTC in winter, + 120 min.
    workspace.write_jobs(JOBS)
    declared = load_jobs_file(workspace.jobs_file, 60)
    delay = digest_delay(declared, date(2025, 1, 1))
    assert delay == timedelta(hours=22, minutes=50 + 120 + 30)
