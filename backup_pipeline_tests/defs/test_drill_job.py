"""Restore drills as a Dagster job: every outcome through a run of the daily partitioned job, with the
`restorable` check results in the instance (per database, and per agent in large fleets), the
on-demand check that re-publishes the latest drills, the job's own schedule, and the executor."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from dagster import (
    AssetCheckSeverity,
    AssetKey,
    AssetSelection,
    DagsterInstance,
    Definitions,
    build_schedule_context,
    define_asset_job,
)

from backup_pipeline.app.simulator import MYSQL_DUMP
from backup_pipeline.defs import DRILL_JOB
from backup_pipeline.defs.drill_job import DRILL_SCHEDULE, DrillConfig, drill_run_config
from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.dagster_runs import definitions
from backup_pipeline_tests.support.drill_fixtures import (
    DAY1,
    DAY2,
    SITE,
    SampleDumps,
    Site,
    build_site,
    gz,
    staged,
)

# A sound MySQL 8 dump whose collation MariaDB lacks: not drillable here, never a failure.
MYSQL = MYSQL_DUMP.format(db="mysql", day=DAY1).encode()


def fleet(ws: Workspace, d: SampleDumps) -> Site:
    dumps = {
        "good": {DAY1: staged("good", DAY1, gz(d.get("good")), ".sql.gz")},
        "broken": {DAY1: staged("broken", DAY1, gz(d.get("broken")[:-500]), ".sql.gz")},
        "mysql": {DAY1: staged("mysql", DAY1, gz(MYSQL), ".sql.gz")},
        "shrunk": {
            DAY1: staged("shrunk", DAY1, d.get("shrunk", "custom", rows=2000), ".dump"),
            DAY2: staged("shrunk", DAY2, d.get("shrunk", "custom", rows=100), ".dump"),
        },
    }
    return build_site(ws, dumps, restore_drill={"every_days": 1})


def run(day: str, instance: DagsterInstance, **config: object):  # type: ignore[no-untyped-def]
    job = definitions().resolve_job_def(DRILL_JOB)
    return job.execute_in_process(
        partition_key=day, instance=instance, run_config=drill_run_config(DrillConfig(**config))
    )


def restorable(result) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {
        c.asset_key.path[-1]: c for c in result.get_asset_check_evaluations() if c.check_name == "restorable"
    }


def observed(result) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """The drills' observations on the assets, by asset."""
    return {
        e.event_specific_data.asset_observation.asset_key.path[-1]: e.event_specific_data.asset_observation
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    }


def test_the_drill_job_reports_each_outcome_as_a_restorable_check(
    drill_workspace: Workspace, sample_dumps: SampleDumps
) -> None:
    fleet(drill_workspace, sample_dumps)
    with DagsterInstance.ephemeral() as instance:
        first = run(DAY1, instance, as_of=f"{DAY1}T23:00:00Z")
        assert first.success
        checks = restorable(first)
        assert set(checks) == {"good_1300", "broken_1300", "mysql_1300", "shrunk_1300"}
        good = checks["good_1300"]
        assert good.passed and good.metadata["outcome"].value == "RESTORED"
        assert good.metadata["restored_tables"].value == 2 and good.metadata["restored_rows"].value == 315
        assert good.metadata["restored_bytes"].value > 0 and good.partition == DAY1
        # The figures the asset's Plots tab graphs are on an observation of the asset, for the cycle's day.
        plotted = observed(first)["good_1300"]
        assert plotted.partition == DAY1
        assert plotted.metadata["restored_rows"].value == 315
        assert plotted.metadata["restored_bytes"].value == good.metadata["restored_bytes"].value
        assert plotted.metadata["drill_seconds"].value > 0
        broken = checks["broken_1300"]
        assert not broken.passed and broken.severity == AssetCheckSeverity.ERROR
        assert "truncated" in broken.metadata["reason"].value
        mysql = checks["mysql_1300"]
        assert not mysql.passed and mysql.severity == AssetCheckSeverity.WARN  # not drillable: no failure
        assert mysql.metadata["outcome"].value == "NOT_DRILLABLE"
        summary = first.output_for_node("notify_drills")
        assert summary.unaddressed == 1  # the failed restore's alert reached the notify path (no target here)

        second = run(DAY2, instance, as_of=f"{DAY2}T23:00:00Z")
        checks = restorable(second)
        assert set(checks) == {"shrunk_1300"}  # only the shrunk backup has a new good entry
        shrunk = checks["shrunk_1300"]
        assert not shrunk.passed and shrunk.severity == AssetCheckSeverity.WARN
        assert "rows 2,100 → 105" in shrunk.metadata["shrank"].value

        nothing = run(DAY2, instance, as_of=f"{DAY2}T23:30:00Z")  # everything due is drilled
        assert restorable(nothing) == {}

        again = run(
            DAY2,
            instance,
            as_of=f"{DAY2}T23:40:00Z",
            entry_ids=[_entry(drill_workspace, "good")],
            redrill=True,
        )
        assert restorable(again)["good_1300"].passed
    rows = drill_workspace.json("entries", f"--agent={SITE}", "--database=good")
    assert [r["restore_drill"] for r in rows if r["cycle_expected_at"].startswith(DAY1)] == ["RESTORED"]


def _entry(ws: Workspace, database: str) -> int:
    (entry,) = [
        e for e in ws.entries(agent=SITE, database=database) if e["cycle_expected_at"].startswith(DAY1)
    ]
    return int(entry["entry_id"])


def test_large_fleets_get_one_restorable_verdict_per_agent_and_the_check_runs_on_demand(
    drill_workspace: Workspace, sample_dumps: SampleDumps, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKUP_PIPELINE_PER_DATABASE_ASSETS_MAX", "0")
    fleet(drill_workspace, sample_dumps)
    with DagsterInstance.ephemeral() as instance:
        result = run(DAY1, instance, as_of=f"{DAY1}T23:00:00Z")
        (agent,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "restorable"]
        assert agent.asset_key == AssetKey(["backups", SITE])
        assert not agent.passed and agent.severity == AssetCheckSeverity.ERROR  # one backup does not restore
        assert agent.metadata["drilled"].value == 4 and agent.metadata["restored"].value == 2
        assert "broken: RESTORE_FAILED (the dump ends" in agent.metadata["drills"].value

        check_now = define_asset_job(
            "check_now", selection=AssetSelection.checks_for_assets(AssetKey(["backups", SITE]))
        )
        defs = Definitions.merge(definitions(), Definitions(jobs=[check_now]))
        on_demand = defs.resolve_job_def("check_now").execute_in_process(instance=instance)
        checks = {c.check_name: c for c in on_demand.get_asset_check_evaluations()}
        again = checks["restorable"]
        assert (again.passed, again.severity, again.partition) == (agent.passed, agent.severity, DAY1)
        # the on-demand integrity check of an agent with failing entries names them (it used to crash),
        # for the latest day it judges
        integrity = checks["integrity"]
        assert not integrity.passed and integrity.partition == DAY2
        assert "good 13:00Z MISSING" in integrity.metadata["problems"].value


def test_the_drill_schedule_requests_todays_partition_once_a_day(drill_workspace: Workspace) -> None:
    drill_workspace.write_jobs(
        [{"agent_id": SITE, "database_name": "good", "expected_hour_utc": 13, "expected_minute_utc": 0}]
    )
    defs = definitions()
    schedule = defs.resolve_schedule_def(DRILL_SCHEDULE)
    assert schedule.cron_schedule == "0 4 * * *" and schedule.execution_timezone == "UTC"
    with DagsterInstance.ephemeral() as instance:
        context = build_schedule_context(
            instance=instance,
            scheduled_execution_time=datetime(2025, 11, 21, 4, 0, tzinfo=UTC),
            repository_def=defs.get_repository_def(),
        )
        (request,) = schedule.evaluate_tick(context).run_requests or []
    assert request.partition_key == "2025-11-21" and request.run_key == "drills-2025-11-21"
    job = defs.resolve_job_def(DRILL_JOB)
    assert job.tags["backup_pipeline/drill"] == "exclusive"
    assert job.executor_def.name == "multiprocess"
    key = AssetKey(["backups", SITE, "good_1300"])
    assert any(
        k.asset_key == key and k.name == "restorable" for k in defs.resolve_asset_graph().asset_check_keys
    )
