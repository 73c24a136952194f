"""A scan costs what its new work costs: idle automatic scans evaluate nothing and rewrite no job,
and an unchanged jobs file is not synced again."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from dagster import DagsterInstance, ExecuteInProcessResult

from backup_pipeline.core.reports import parse_file_name_time, parse_report, report_to_payload
from backup_pipeline.storage.orm import StatusReportRow
from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.dagster_runs import run_scan_job
from backup_pipeline_tests.support.deposit_builder import Agent, gz, utc

AGENTS = ("SIRPACAM_DOUALA_NEWBELL", "SOCIA_BLU_GARE_4")
DATABASES = ("compta_db", "paie_db")
DAY = "2025-11-21"


def jobs() -> list[dict[str, Any]]:
    return [
        {"agent_id": a, "database_name": d, "expected_hour_utc": 13, "expected_minute_utc": 0}
        for a in AGENTS
        for d in DATABASES
    ]


def automatic_scan(at: str) -> ExecuteInProcessResult:
    """The scan job as the schedule or sensor starts it (automatic: only new work)."""
    with DagsterInstance.ephemeral() as instance:
        return run_scan_job(DAY, at, instance, automatic=True)


def evaluate_steps(result: ExecuteInProcessResult) -> set[str]:
    return {
        e.step_key
        for e in result.all_events
        if e.is_step_start and (e.step_key or "").startswith("evaluate[")
    }


def job_row_versions(workspace: Workspace) -> dict[int, str]:
    """Each job row's PostgreSQL row version: it changes whenever the row is rewritten."""
    engine = sa.create_engine(workspace.database_url)
    try:
        with engine.connect() as conn:
            return dict(conn.execute(sa.text("SELECT id, xmin::text FROM expected_jobs")).tuples().all())
    finally:
        engine.dispose()


@pytest.fixture
def scanned(workspace: Workspace) -> dict[str, Agent]:
    """Every cycle of DAY reported and recorded by a first automatic scan."""
    workspace.write_jobs(jobs())
    workspace.cli("jobs", "sync", "--at", "2025-11-21T08:00:00Z")
    agents = {a: Agent(workspace.root, a) for a in AGENTS}
    for agent in agents.values():
        for minute, database in enumerate(DATABASES, start=5):  # one report each, 13:05 and 13:06
            agent.backup(
                utc(f"2025-11-21T13:{minute:02d}:00Z"), database, f"{agent.agent_id} {database}".encode()
            )
    result = automatic_scan("2025-11-21T14:30:00Z")
    assert result.success
    assert len(evaluate_steps(result)) == len(AGENTS)  # one batch per agent with work
    assert {e["status"] for e in workspace.entries()} == {"SUCCESS"}
    return agents


def test_an_idle_scan_runs_one_empty_batch_and_rewrites_no_job_row(
    workspace: Workspace, scanned: dict[str, Agent]
) -> None:
    before = job_row_versions(workspace)

    result = automatic_scan("2025-11-21T14:45:00Z")

    assert result.success
    assert evaluate_steps(result) == {"evaluate[nothing_owed]"}
    (batch,) = result.output_for_node("evaluate").values()
    assert (batch.backups, batch.evaluated, batch.written) == (len(AGENTS) * len(DATABASES), 0, 0)
    assert job_row_versions(workspace) == before
    # The scan still counts as having checked every active job.
    status = workspace.json("status")
    assert {row["last_checked_timestamp"] for row in status} == {"2025-11-21T14:45:00Z"}
    assert {row["current_status"] for row in status} == {"OK"}


def test_a_new_report_makes_only_its_agent_owed(workspace: Workspace, scanned: dict[str, Agent]) -> None:
    late, quiet = AGENTS
    scanned[late].backup(utc("2025-11-21T13:40:00Z"), "compta_db", b"a second dump, later in the window")

    result = automatic_scan("2025-11-21T14:45:00Z")

    assert result.success
    assert evaluate_steps(result) == {f"evaluate[{late}]"}
    entry = workspace.entry(late, "compta_db", "2025-11-21T13:00:00Z")
    assert entry is not None and entry["report_file"].startswith("20251121_134000")
    assert workspace.entry(quiet, "compta_db", "2025-11-21T13:00:00Z")["report_file"].startswith(
        "20251121_130500"
    )


def test_an_unchanged_jobs_file_is_not_synced_again_but_a_changed_default_window_is(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace.write_jobs(jobs())
    assert "4 added" in workspace.cli("jobs", "sync").output
    before = job_row_versions(workspace)
    assert "0 added, 0 deactivated" in workspace.cli("jobs", "sync").output
    assert job_row_versions(workspace) == before

    # The environment's default window is part of what the file resolves to.
    monkeypatch.setenv("SCANNER_REPORT_COLLECTION_WINDOW_MINUTES", "90")
    workspace.cli("jobs", "sync")
    assert {(row["early_minutes"], row["grace_minutes"]) for row in workspace.json("jobs", "list")} == {
        (90, 90)
    }

    # Back to the first file's resolution: synced again, not mistaken for the last digest.
    monkeypatch.delenv("SCANNER_REPORT_COLLECTION_WINDOW_MINUTES")
    workspace.cli("jobs", "sync")
    assert {(row["early_minutes"], row["grace_minutes"]) for row in workspace.json("jobs", "list")} == {
        (60, 60)
    }


def scan_at(at: str, day: str) -> ExecuteInProcessResult:
    with DagsterInstance.ephemeral() as instance:
        return run_scan_job(day, at, instance, automatic=True)


def test_the_first_scan_of_a_new_day_evaluates_nothing_when_no_report_reaches_its_windows(
    workspace: Workspace, scanned: dict[str, Agent]
) -> None:
    # Yesterday's reports (13:05, 13:06) cannot decide any cycle of today before its deadline.
    result = scan_at("2025-11-22T00:05:00Z", "2025-11-22")

    assert result.success
    assert evaluate_steps(result) == {"evaluate[nothing_owed]"}
    (batch,) = result.output_for_node("evaluate").values()
    assert batch.still_open == len(AGENTS) * len(DATABASES)
    # Both agents' new day was looked at with yesterday's reports in view: the next scans need not
    # fetch those reports' end times again.
    engine = sa.create_engine(workspace.database_url)
    try:
        with engine.connect() as conn:
            marked = conn.execute(sa.text("SELECT agent_id FROM cycle_watch WHERE day = '2025-11-22'"))
            assert sorted(marked.scalars()) == sorted(AGENTS)
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("timezone", "written_end"),
    [
        ("UTC", "2025-11-21T23:50:00Z"),  # with its offset
        ("Asia/Tokyo", "2025-11-22T08:50:00"),  # naive, in the job's zone: 23:50 UTC the day before
    ],
)
def test_a_report_of_yesterday_evening_decides_todays_early_cycle_at_the_first_scan_of_the_day(
    workspace: Workspace, timezone: str, written_end: str
) -> None:
    """A job due at 00:30 UTC (window 23:30–01:30): its report ends at 23:50 and is recorded by the
    last scan of the day before, which cannot evaluate a day that has not begun. The first scan of
    the new day must see it as work, reading naive times in the job's zone."""
    agent_id = AGENTS[0]
    workspace.write_jobs(
        [
            {
                "agent_id": agent_id,
                "database_name": "compta_db",
                "expected_hour_utc": 0,
                "expected_minute_utc": 30,
                "timezone": timezone,
            }
        ]
    )
    workspace.cli("jobs", "sync", "--at", "2025-11-20T08:00:00Z")
    agent = Agent(workspace.root, agent_id)
    packed = gz(b"the evening dump", mtime=0)
    agent.stage("compta_db.sql.gz", packed)
    agent.report(
        utc("2025-11-21T23:50:00Z"),
        {"compta_db": agent.database_section("compta_db.sql.gz", packed)},
        extra={"operation_end_time": written_end},
    )
    evening = scan_at("2025-11-21T23:55:00Z", "2025-11-21")
    assert evening.success and evening.output_for_node("ingest_reports").ingested.accepted == 1

    result = scan_at("2025-11-22T00:05:00Z", "2025-11-22")

    assert result.success
    assert evaluate_steps(result) == {f"evaluate[{agent_id}]"}
    entry = workspace.entry(agent_id, "compta_db", "2025-11-22T00:30:00Z")
    assert entry is not None and entry["status"] == "SUCCESS"


def test_a_staged_file_still_being_uploaded_is_judged_by_the_next_automatic_scan(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not at the cycle's deadline: the scan that deferred it must not mark the agent's day as seen."""
    monkeypatch.setenv("BACKUP_PIPELINE_SETTLE_SECONDS", "300")
    agent_id = AGENTS[0]
    workspace.write_jobs([jobs()[0]])
    workspace.cli("jobs", "sync", "--at", "2025-11-21T08:00:00Z")
    agent = Agent(workspace.root, agent_id)
    whole = gz(b"a dump that takes a while to upload" * 1000)
    staged = agent.stage("compta_db.sql.gz", whole[: len(whole) // 2])  # half uploaded, modified just now
    agent.report(utc("2025-11-21T13:05:00Z"), {"compta_db": agent.database_section(staged.name, whole)})

    deferred = automatic_scan("2025-11-21T13:10:00Z")
    assert deferred.success and workspace.entries() == []

    staged.write_bytes(whole)
    result = automatic_scan("2025-11-21T13:25:00Z")  # the deadline is 14:00

    assert result.success
    assert evaluate_steps(result) == {f"evaluate[{agent_id}]"}
    (entry,) = workspace.entries()
    assert entry["status"] == "SUCCESS", entry["message"]


def test_a_report_committed_while_another_scan_evaluates_is_evaluated_by_the_next_scan(
    workspace: Workspace, scanned: dict[str, Agent], tmp_path: Path
) -> None:
    """The race between two scans (a CLI scan and a daemon run, say): scan A records a report in a
    transaction that began before scan B evaluates, and commits after B has read the reports. B
    cannot have seen it, so B's "looked at" mark must not hide it from the next scan."""
    agent_id = AGENTS[0]
    # The late report as scan A reads it: a second dump, ended 13:40, inside the 13:00 window.
    elsewhere = Agent(tmp_path / "elsewhere", agent_id)
    dump = gz(b"the second dump of the day")
    elsewhere.stage("compta_db.sql.gz", dump)
    report = elsewhere.report(
        utc("2025-11-21T13:40:00Z"), {"compta_db": elsewhere.database_section("compta_db.sql.gz", dump)}
    )
    data = report.read_bytes()
    parsed = parse_report(
        data, agent_id=agent_id, as_of=utc("2025-11-21T13:45:00Z"), max_age=timedelta(days=7)
    )
    assert parsed.report is not None
    engine = sa.create_engine(workspace.database_url)
    try:
        with engine.connect() as scan_a:
            scan_a.execute(
                sa.insert(StatusReportRow).values(
                    agent_id=agent_id,
                    file_name=report.name,
                    content_sha256=hashlib.sha256(data).hexdigest(),
                    size=len(data),
                    accepted=True,
                    notes=[],
                    payload=report_to_payload(parsed.report),
                    operation_end_time=parsed.report.operation_end_time.in_utc(),
                    file_name_time=parse_file_name_time(report.name),
                )
            )  # not committed yet: scan B evaluates the agent meanwhile (it has another new report)
            scanned[agent_id].backup(utc("2025-11-21T13:42:00Z"), "paie_db", b"paie, again")
            during = automatic_scan("2025-11-21T13:46:00Z")
            assert during.success and f"evaluate[{agent_id}]" in evaluate_steps(during)
            scan_a.commit()
    finally:
        engine.dispose()
    # Scan A goes on: the dump and the report are in place.
    scanned[agent_id].stage("compta_db.sql.gz", dump)
    (scanned[agent_id].log / report.name).write_bytes(data)

    result = automatic_scan("2025-11-21T13:50:00Z")

    assert result.success
    assert f"evaluate[{agent_id}]" in evaluate_steps(result)
    entry = workspace.entry(agent_id, "compta_db", "2025-11-21T13:00:00Z")
    assert entry is not None and entry["report_file"] == report.name
    assert entry["status"] == "SUCCESS", entry["message"]
