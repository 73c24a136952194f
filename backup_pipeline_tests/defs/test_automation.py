"""The scans that start by themselves, at unit level: schedule ticks, sensor ticks, loadable definitions.

Schedule and sensor come from the product's definitions and are evaluated the way the daemon
evaluates them (`evaluate_tick`), without a webserver or a daemon: the sensor for a chosen list of
expected backups, the schedule on the fleet synced into PostgreSQL, as in production.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from dagster import (
    AssetKey,
    DagsterInstance,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    Definitions,
    SensorDefinition,
    build_schedule_context,
    build_sensor_context,
    instance_for_test,
)

from backup_pipeline.config.jobs_file import DeclaredBackup
from backup_pipeline.config.settings import Settings, load_settings
from backup_pipeline.defs import SCAN_JOB, build_definitions
from backup_pipeline.defs.automation import DEPOSIT_SENSOR, SCAN_SCHEDULE
from backup_pipeline.defs.fleet import FleetAssets
from backup_pipeline.defs.resources import DatabaseResource
from backup_pipeline.defs.scan_job import AUTOMATIC_TAG
from backup_pipeline.scan.sync import sync_jobs_file
from backup_pipeline.storage.database import open_database
from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.dagster_runs import run_scan_job
from backup_pipeline_tests.support.deposit_builder import Agent, utc

AGENT = "SIRPACAM_DOUALA_NEWBELL"
OTHER = "SIRPACAM_BAFOUSSAM_CAMPUS_1"


def defs_for(backups: list[DeclaredBackup], settings: Settings | None = None) -> Definitions:
    """The product's definitions for these expected backups (as a jobs file would declare them)."""
    return build_definitions(settings or Settings(), FleetAssets.of(backups, per_database=True))


def resolved(hour: int, minute: int, window: int = 60, database: str = "compta_db") -> DeclaredBackup:
    return DeclaredBackup(
        agent_id=AGENT,
        database_name=database,
        name=f"{hour:02d}{minute:02d}",
        expected_hour_utc=hour,
        expected_minute_utc=minute,
        early_minutes=window,
        grace_minutes=window,
        timezone="UTC",
        staged_file_name=None,
        content_change="changed",
    )


# ---------------------------------------------------------------- schedule
#
# Each tick asks the synced fleet in PostgreSQL which days owe something: a cycle past its deadline
# and still without an entry. Jobs at 13:00 and 23:50, both with 60-minute windows (deadlines 14:00
# and 00:50 the next day), created at the start of 2025-11-21.

TWO_JOBS = [
    {"agent_id": AGENT, "database_name": database, "expected_hour_utc": hour, "expected_minute_utc": minute}
    for database, hour, minute in (("compta_db", 13, 0), ("paie_db", 23, 50))
]
CREATED = "2025-11-21T00:00:00Z"


def scheduled(at: str) -> list[str] | str:
    """The partitions the shipped schedule requests at `at` (UTC), or its skip reason."""
    settings = load_settings()
    defs = build_definitions(settings)
    schedule = defs.resolve_schedule_def(SCAN_SCHEDULE)
    resources = {"settings": settings, "database": DatabaseResource(settings=settings)}
    with (
        instance_for_test() as instance,
        build_schedule_context(
            instance=instance,
            scheduled_execution_time=utc(at),
            repository_def=defs.get_repository_def(),
            resources=resources,
        ) as context,
    ):
        data = schedule.evaluate_tick(context)
    requests = list(data.run_requests or [])
    for request in requests:
        assert request.tags[AUTOMATIC_TAG] == "true"
        assert request.run_key and request.run_key == f"{request.partition_key}@{at[:16]}"
    return [r.partition_key for r in requests] if requests else data.skip_message or ""


def nothing_owed(at: str) -> str:
    return f"no cycle past its deadline without an entry as of {at[:10]} {at[11:16]} UTC"


@pytest.fixture
def two_jobs(workspace: Workspace) -> Workspace:
    workspace.write_jobs(TWO_JOBS)
    workspace.cli("backups", "sync", "--at", CREATED)
    return workspace


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        # The morning owes nothing: no cycle of today is past its deadline (ticks used to ask for today).
        pytest.param("2025-11-21T10:00:00Z", [], id="morning-nothing-due"),
        pytest.param("2025-11-21T13:59:00Z", [], id="before-the-first-deadline"),
        pytest.param("2025-11-21T14:00:01Z", ["2025-11-21"], id="first-deadline-passed"),
        pytest.param("2025-11-22T00:45:00Z", ["2025-11-21"], id="yesterday-still-owed"),
        pytest.param("2025-11-23T10:00:00Z", ["2025-11-21", "2025-11-22"], id="two-days-owed"),
    ],
)
def test_schedule_ticks_request_only_the_days_with_a_cycle_past_its_deadline_without_entry(
    two_jobs: Workspace, at: str, expected: list[str]
) -> None:
    assert scheduled(at) == (expected or nothing_owed(at))


def test_schedule_ticks_stop_asking_for_a_day_once_its_overdue_cycles_are_recorded(
    two_jobs: Workspace,
) -> None:
    assert scheduled("2025-11-21T14:15:00Z") == ["2025-11-21"]
    automatic_scan("2025-11-21", "2025-11-21T14:15:00Z")  # what that tick's run does: 13:00 MISSING
    assert two_jobs.entries()[0]["status"] == "MISSING"

    assert scheduled("2025-11-21T14:30:00Z") == nothing_owed("2025-11-21T14:30:00Z")
    assert scheduled("2025-11-22T00:45:00Z") == nothing_owed("2025-11-22T00:45:00Z")  # 23:50: not yet
    assert scheduled("2025-11-22T01:00:00Z") == ["2025-11-21"]  # now it is


def test_schedule_with_no_jobs_requests_nothing(workspace: Workspace) -> None:
    assert scheduled("2025-11-21T10:00:00Z") == nothing_owed("2025-11-21T10:00:00Z")


def test_shipped_schedule_runs_every_15_minutes_utc_by_default() -> None:
    schedule = defs_for([resolved(13, 0)]).resolve_schedule_def(SCAN_SCHEDULE)

    assert schedule.cron_schedule == "*/15 * * * *"
    assert schedule.execution_timezone == "UTC"
    assert schedule.default_status == DefaultScheduleStatus.RUNNING
    assert schedule.job_name == SCAN_JOB


# ---------------------------------------------------------------- sensor


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as instance:
        yield instance


@pytest.fixture
def deposit(tmp_path: Path) -> Path:
    root = tmp_path / "deposit"
    root.mkdir()
    return root


@dataclass
class SensorUnderTest:
    defs: Definitions
    settings: Settings

    @property
    def definition(self) -> SensorDefinition:
        return self.defs.resolve_sensor_def(DEPOSIT_SENSOR)


def sensor_for(
    root: Path, jobs: list[DeclaredBackup] | None = None, start: date = date(2024, 1, 1)
) -> SensorUnderTest:
    settings = Settings(storage_root=root, jobs_file=root.parent / "jobs.yaml", start_date=start)
    return SensorUnderTest(defs_for(jobs if jobs is not None else [resolved(13, 0)], settings), settings)


def evaluate(sensor: SensorUnderTest, instance: DagsterInstance, cursor: str | None):
    # `definitions=` does not give a sensor its resources: they are passed as the daemon passes them.
    context = build_sensor_context(
        instance=instance, cursor=cursor, definitions=sensor.defs, resources={"settings": sensor.settings}
    )
    return sensor.definition.evaluate_tick(context)


def drop(root: Path, agent_id: str, named_at: datetime, mtime: datetime | None = None) -> Path:
    """A report file that the sensor must never need to parse: its content is not even JSON."""
    log = root / agent_id / "log"
    log.mkdir(parents=True, exist_ok=True)
    path = log / f"{named_at:%Y%m%d_%H%M%S}_{agent_id}.json"
    path.write_text("{ not parsed by the sensor")
    stamp = (mtime or named_at).timestamp()
    os.utime(path, (stamp, stamp))
    return path


def days_ago(n: int, hour: int) -> datetime:
    today = datetime.now(UTC).date()
    return datetime.combine(today - timedelta(days=n), datetime.min.time(), tzinfo=UTC) + timedelta(
        hours=hour
    )


def iso_days(*offsets: int) -> list[str]:
    today = datetime.now(UTC).date()
    return [(today - timedelta(days=n)).isoformat() for n in offsets]


def test_sensor_skips_when_the_deposit_is_empty(deposit: Path, instance: DagsterInstance) -> None:
    data = evaluate(sensor_for(deposit), instance, None)

    assert not data.run_requests
    assert data.skip_message == "no new report file"
    assert json.loads(data.cursor) == []


def test_sensor_skips_with_a_reason_when_the_deposit_root_is_missing(
    tmp_path: Path, instance: DagsterInstance
) -> None:
    data = evaluate(sensor_for(tmp_path / "nowhere"), instance, None)

    assert not data.run_requests
    assert "does not exist" in (data.skip_message or "")


def test_sensor_requests_the_partitions_new_reports_can_be_relevant_to(
    deposit: Path, instance: DagsterInstance
) -> None:
    sensor = sensor_for(deposit)
    first = evaluate(sensor, instance, None)
    # Named 15:00 UTC three days ago: ±(60 min window + 14 h of agent time zones) spans that day and
    # the next, never today (the sensor never parses the report to know better).
    drop(deposit, AGENT, days_ago(3, 15))

    data = evaluate(sensor, instance, first.cursor)

    assert [r.partition_key for r in data.run_requests] == iso_days(3, 2)
    for request in data.run_requests:
        assert request.tags[AUTOMATIC_TAG] == "true"
        assert request.run_key.startswith(f"{request.partition_key}:")
    assert len({r.run_key for r in data.run_requests}) == 2
    assert len(json.loads(data.cursor)) == 1

    again = evaluate(sensor, instance, data.cursor)

    assert not again.run_requests
    assert again.skip_message == "no new report file"
    assert again.cursor == data.cursor


def test_sensor_uses_the_widest_window_of_the_jobs(deposit: Path, instance: DagsterInstance) -> None:
    drop(deposit, AGENT, days_ago(4, 15))
    narrow = evaluate(sensor_for(deposit), instance, None)
    # With a 12-hour window, a report named 15:00 may also belong to a cycle of the day before.
    wide = evaluate(
        sensor_for(deposit, [resolved(13, 0), resolved(23, 0, window=720, database="paie_db")]),
        instance,
        None,
    )

    assert [r.partition_key for r in narrow.run_requests] == iso_days(4, 3)
    assert [r.partition_key for r in wide.run_requests] == iso_days(5, 4, 3)


def test_sensor_notices_files_sharing_an_mtime(deposit: Path, instance: DagsterInstance) -> None:
    sensor = sensor_for(deposit)
    shared = days_ago(2, 15)
    drop(deposit, AGENT, days_ago(2, 15), mtime=shared)
    first = evaluate(sensor, instance, None)
    assert [r.partition_key for r in first.run_requests] == iso_days(2, 1)

    # Another agent's report and a second one of the same agent, both with exactly the same mtime.
    drop(deposit, OTHER, days_ago(2, 15), mtime=shared)
    drop(deposit, AGENT, days_ago(2, 15) + timedelta(seconds=1), mtime=shared)
    second = evaluate(sensor, instance, first.cursor)

    assert [r.partition_key for r in second.run_requests] == iso_days(2, 1)
    assert {r.run_key for r in second.run_requests}.isdisjoint({r.run_key for r in first.run_requests})
    assert len(json.loads(second.cursor)) == 3


def test_sensor_notices_a_file_uploaded_with_an_old_preserved_mtime(
    deposit: Path, instance: DagsterInstance
) -> None:
    sensor = sensor_for(deposit)
    drop(deposit, AGENT, days_ago(1, 15))
    first = evaluate(sensor, instance, None)
    assert first.run_requests

    # Copied with `cp -p`/rsync -t: named and dated three days ago, it arrives after the newer one.
    drop(deposit, OTHER, days_ago(3, 15), mtime=days_ago(30, 0))
    data = evaluate(sensor, instance, first.cursor)

    assert [r.partition_key for r in data.run_requests] == iso_days(3, 2)


def test_sensor_run_keys_are_stable_so_a_cursor_reset_does_not_rerun(
    deposit: Path, instance: DagsterInstance
) -> None:
    sensor = sensor_for(deposit)
    drop(deposit, AGENT, days_ago(2, 15))
    drop(deposit, OTHER, days_ago(2, 16))

    once = evaluate(sensor, instance, None)
    after_reset = evaluate(sensor, instance, None)

    assert [r.run_key for r in once.run_requests] == [r.run_key for r in after_reset.run_requests]


def test_sensor_notices_a_report_rewritten_in_place(deposit: Path, instance: DagsterInstance) -> None:
    sensor = sensor_for(deposit)
    path = drop(deposit, AGENT, days_ago(2, 15))
    first = evaluate(sensor, instance, None)

    path.write_text('{"the": "agent rewrote its report, longer now"}')
    data = evaluate(sensor, instance, first.cursor)

    assert [r.partition_key for r in data.run_requests] == iso_days(2, 1)


def test_sensor_ignores_the_archive_and_what_is_not_a_report(
    deposit: Path, instance: DagsterInstance
) -> None:
    sensor = sensor_for(deposit)
    path = drop(deposit, AGENT, days_ago(2, 15))
    first = evaluate(sensor, instance, None)

    archive = path.parent / "_archive"
    archive.mkdir()
    path.rename(archive / path.name)  # what a scan does after recording it
    (path.parent / "notes.txt").write_text("not a report")
    stray = deposit / "stray-folder" / "log"  # not ENTREPRISE_VILLE_QUARTIER: skipped, never read
    stray.mkdir(parents=True)
    (stray / f"{days_ago(1, 15):%Y%m%d_%H%M%S}_stray-folder.json").write_text("{}")
    data = evaluate(sensor, instance, first.cursor)

    assert not data.run_requests
    assert data.skip_message == "no new report file"
    assert json.loads(data.cursor) == []


def test_sensor_requests_today_for_a_report_whose_name_tells_no_time(
    deposit: Path, instance: DagsterInstance
) -> None:
    sensor = sensor_for(deposit)
    log = deposit / AGENT / "log"
    log.mkdir(parents=True)
    (log / "latest_report.json").write_text("{}")  # rejected at ingestion: it still must be recorded

    data = evaluate(sensor, instance, None)

    assert [r.partition_key for r in data.run_requests] == iso_days(0)


def test_sensor_never_requests_days_outside_the_partitions(deposit: Path, instance: DagsterInstance) -> None:
    today = datetime.now(UTC).date()
    sensor = sensor_for(deposit, start=today - timedelta(days=2))
    drop(deposit, AGENT, days_ago(10, 12))  # before the first partition
    drop(deposit, OTHER, days_ago(-3, 12))  # named in the future (an agent's clock ahead)

    data = evaluate(sensor, instance, None)

    # Clamped days coincide: each is requested once, with one run key.
    assert [r.partition_key for r in data.run_requests] == iso_days(2, 0)
    assert len({r.run_key for r in data.run_requests}) == 2


def test_shipped_sensor_runs_by_default_on_the_scan_job() -> None:
    sensor = defs_for([resolved(13, 0)]).resolve_sensor_def(DEPOSIT_SENSOR)

    assert sensor.default_status == DefaultSensorStatus.RUNNING
    assert sensor.job_name == SCAN_JOB
    assert sensor.minimum_interval_seconds == 30


# ---------------------------------------------------------------- definitions
#
# Built by the product's function for a real jobs file, in both asset modes: one asset per expected
# backup, and one per agent above BACKUP_PIPELINE_PER_DATABASE_ASSETS_MAX.

DECLARED = [
    {"agent_id": agent, "database_name": database, "expected_hour_utc": 13, "expected_minute_utc": 0}
    for agent in (AGENT, OTHER)
    for database in ("compta_db", "paie.db")
] + [{"agent_id": AGENT, "database_name": "compta_db", "expected_hour_utc": 1, "expected_minute_utc": 30}]


def settings_with_jobs_file(tmp_path: Path, database_url: str, **overrides: object) -> Settings:
    tmp_path.mkdir(parents=True, exist_ok=True)
    jobs_file = tmp_path / "jobs.yaml"
    jobs_file.write_text(yaml.safe_dump({"jobs": DECLARED}))
    return Settings(
        jobs_file=jobs_file,
        storage_root=tmp_path,
        home=tmp_path / "home",
        database_url=database_url,
        **overrides,
    )


def test_definitions_declare_one_partitioned_asset_and_check_per_expected_backup(
    tmp_path: Path, database_url: str
) -> None:
    loaded = build_definitions(settings_with_jobs_file(tmp_path, database_url))
    Definitions.validate_loadable(loaded)

    graph = loaded.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {
        "backup_reports",
        "fleet_digest",  # the daily fleet digest (issue 4)
        f"backups/{AGENT}/compta_db_1300",
        f"backups/{AGENT}/compta_db_0130",
        f"backups/{AGENT}/paie_db_1300",
        f"backups/{OTHER}/compta_db_1300",
        f"backups/{OTHER}/paie_db_1300",
    }
    node = graph.get(AssetKey(["backups", OTHER, "paie_db_1300"]))
    assert node.group_name == OTHER
    assert node.parent_keys == {AssetKey("backup_reports")}
    assert node.partitions_def is not None
    assert "`paie.db`" in (node.description or "")
    assert OTHER in (node.description or "")
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    databases = keys - {"backup_reports", "fleet_digest"}
    assert checks == {(k, name) for k in databases for name in ("integrity", "size", "restorable")}
    assert loaded.resolve_job_def(SCAN_JOB).partitions_def is not None
    assert loaded.resolve_sensor_def(DEPOSIT_SENSOR)
    assert loaded.resolve_schedule_def(SCAN_SCHEDULE)


def test_definitions_of_a_large_fleet_declare_one_asset_and_check_per_agent(
    tmp_path: Path, database_url: str
) -> None:
    loaded = build_definitions(settings_with_jobs_file(tmp_path, database_url, per_database_assets_max=2))
    Definitions.validate_loadable(loaded)

    graph = loaded.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {"backup_reports", "fleet_digest", f"backups/{AGENT}", f"backups/{OTHER}"}
    node = graph.get(AssetKey(["backups", AGENT]))
    assert node.partitions_def is not None and node.parent_keys == {AssetKey("backup_reports")}
    assert "3 expected backup(s)" in (node.description or "")
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    agents = {f"backups/{AGENT}", f"backups/{OTHER}"}
    assert checks == {(k, name) for k in agents for name in ("integrity", "size", "restorable")}


def test_definitions_load_nothing_at_import_and_follow_the_settings_given(
    tmp_path: Path, database_url: str
) -> None:
    """Two jobs files, two sets of definitions in one process: nothing was read at import time."""
    small = build_definitions(
        settings_with_jobs_file(tmp_path / "a", database_url, start_date=date(2025, 1, 1))
    )
    other = tmp_path / "b"
    other.mkdir()
    (other / "jobs.yaml").write_text(yaml.safe_dump({"jobs": DECLARED[:1]}))
    settings = Settings(jobs_file=other / "jobs.yaml", start_date=date(2025, 6, 1), database_url=database_url)
    sync_jobs_file(settings, open_database(settings), datetime.now(UTC))  # what a scan of it would do
    single = build_definitions(settings)
    assert len(small.resolve_asset_graph().get_all_asset_keys()) == 7
    assert len(single.resolve_asset_graph().get_all_asset_keys()) == 3
    assert single.resolve_job_def(SCAN_JOB).partitions_def.get_first_partition_key() == "2025-06-01"
    assert small.resolve_job_def(SCAN_JOB).partitions_def.get_first_partition_key() == "2025-01-01"


# ---------------------------------------------------------------- automatic scans in the sensor's order


def automatic_scan(day: str, at: str) -> None:
    """One run of the scan job as the sensor or the schedule requests it (automatic tag), as of `at`."""
    result = run_scan_job(
        day, at, DagsterInstance.ephemeral(), tags={AUTOMATIC_TAG: "true"}, raise_on_error=False
    )
    assert result.success, f"automatic scan of {day} failed"


@pytest.mark.parametrize(
    "days",
    [
        pytest.param(["2025-11-21"], id="today-only"),
        # A report named 13:05 is relevant, for the sensor, to 2025-11-20 and 2025-11-21 (agents' time
        # zones): it requests both, oldest first, and the first run records the report.
        pytest.param(["2025-11-20", "2025-11-21"], id="yesterday-then-today"),
    ],
)
def test_automatic_scans_record_a_report_before_its_deadline_whatever_the_order(
    workspace, days: list[str]
) -> None:
    workspace.write_jobs(
        [{"agent_id": AGENT, "database_name": "compta_db", "expected_hour_utc": 13, "expected_minute_utc": 0}]
    )
    Agent(workspace.root, AGENT).backup(utc("2025-11-21T13:05:00Z"), "compta_db", b"-- rows\n" * 100)
    workspace.cli("jobs", "sync", "--at", "2025-11-21T12:00:00Z")

    for day in days:
        automatic_scan(day, "2025-11-21T13:30:00Z")  # before the 14:00 deadline: the report decides

    entries = workspace.entries()
    assert [(e["cycle_expected_at"], e["status"]) for e in entries] == [("2025-11-21T13:00:00Z", "SUCCESS")]
