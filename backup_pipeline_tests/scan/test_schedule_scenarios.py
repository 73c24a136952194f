"""Schedules end to end (issue 12's proof): cron expressions in a zone, early and grace windows, DST,
a schedule change and its backfill — real files, the real CLI running the Dagster scan job in
process, PostgreSQL."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Any

import pytest

from backup_pipeline_tests.support.deposit_builder import Agent, gz, utc

AGENT = "SIRPACAM_DOUALA_NEWBELL"
DUMP = b"-- the same dump every cycle\n" * 50  # same content: SUCCESS under the `changed` policy


def cron(database: str, schedule: str, **extra: Any) -> dict[str, Any]:
    return {"agent_id": AGENT, "database_name": database, "schedule": schedule} | extra


@pytest.fixture
def agent(workspace) -> Agent:
    return Agent(workspace.root, AGENT)


def deliver(
    agent: Agent, end: datetime, database: str, data: bytes = DUMP, naive_end: str | None = None
) -> None:
    """A backup staged under a name of its own (cycles do not overwrite each other's dump) and its
    report; `naive_end` is the end time as an agent writing local times would put it."""
    name = f"{database}_{end:%Y%m%d%H%M}.sql.gz"
    packed = gz(data)
    agent.stage(name, packed)
    extra = {"operation_end_time": naive_end} if naive_end else None
    agent.report(end, {database: agent.database_section(name, packed)}, extra=extra)


def scan(workspace, at: str, *partitions: str) -> set[str]:
    """The days the scan ran (its tables name them)."""
    args = ["scan", "--at", at]
    for p in partitions:
        args += ["--partition", p]
    return set(re.findall(r"\d{4}-\d{2}-\d{2}", workspace.cli(*args).stdout))


def outcomes(workspace, **filters: str) -> list[tuple[str, str, str]]:
    return [(e["database_name"], e["cycle_expected_at"], e["status"]) for e in workspace.entries(**filters)]


def digest(workspace, day: str) -> dict[str, Any]:
    return json.loads(workspace.cli("digest", "--date", day, "--format", "json").stdout)


def test_a_weekly_backup_over_two_weeks_owes_nothing_on_other_days(workspace, agent, monkeypatch):
    monkeypatch.setenv("MAX_STATUS_FILE_AGE_DAYS", "30")
    workspace.write_jobs([cron("compta_db", "30 2 * * 0", timezone="Europe/Paris", grace_minutes=180)])
    workspace.cli("backups", "sync", "--at", "2025-11-14T00:00:00Z")  # a Friday
    deliver(agent, utc("2025-11-16T02:10:00Z"), "compta_db")  # Sunday 03:10 in Paris: 40 min late
    # ...and nothing the next Sunday.

    scanned = scan(workspace, "2025-11-25T12:00:00Z")  # automatic: it catches up what is owed

    assert outcomes(workspace) == [
        ("compta_db", "2025-11-16T01:30:00Z", "SUCCESS"),
        ("compta_db", "2025-11-23T01:30:00Z", "MISSING"),
    ]
    assert {"2025-11-16", "2025-11-23"} <= scanned
    assert not scanned & {"2025-11-18", "2025-11-19", "2025-11-20", "2025-11-21"}  # nothing owed there
    (status,) = workspace.json("status")
    assert (status["schedule"], status["current_status"]) == ("At 02:30 on Sunday (Europe/Paris)", "MISSING")
    tuesday, sunday = digest(workspace, "2025-11-18"), digest(workspace, "2025-11-23")
    assert (tuesday["total"]["jobs"], tuesday["total"]["pending"], tuesday["problems"]) == (0, 0, [])
    assert (sunday["total"]["jobs"], sunday["total"]["missing"], sunday["total"]["pending"]) == (1, 1, 0)


def test_every_6_hours_four_cycles_a_day_one_report_each(workspace, agent):
    workspace.write_jobs([cron("compta_db", "0 */6 * * *")])  # UTC, the default 60-minute window
    for hour in (0, 6, 12, 18):
        data = b"-- changed at noon\n" * 50 if hour == 12 else DUMP
        deliver(agent, utc(f"2025-11-21T{hour:02d}:10:00Z"), "compta_db", data)

    scan(workspace, "2025-11-22T02:00:00Z", "2025-11-21")

    entries = workspace.entries()
    assert [(e["cycle_expected_at"], e["status"]) for e in entries] == [
        ("2025-11-21T00:00:00Z", "SUCCESS"),
        ("2025-11-21T06:00:00Z", "SUCCESS"),
        ("2025-11-21T12:00:00Z", "HASH_MISMATCH"),
        ("2025-11-21T18:00:00Z", "HASH_MISMATCH"),
    ]
    assert [e["report_file"][:13] for e in entries] == [
        f"20251121_{h}" for h in ("0010", "0610", "1210", "1810")
    ]
    # The previous success is the previous cycle of the same day, not the previous day's.
    assert "since the last successful cycle 2025-11-21T06:00Z" in entries[2]["message"]
    assert "since the last successful cycle 2025-11-21T12:00Z" in entries[3]["message"]
    assert [e["previous_success_cycle"] for e in entries] == [
        None,
        "2025-11-21T00:00:00Z",
        "2025-11-21T06:00:00Z",
        "2025-11-21T12:00:00Z",
    ]
    assert digest(workspace, "2025-11-21")["total"]["evaluated"] == 4


def test_month_end_across_a_30_and_a_31_day_month(workspace, agent, monkeypatch):
    monkeypatch.setenv("MAX_STATUS_FILE_AGE_DAYS", "60")
    workspace.write_jobs([cron("paie_db", "0 22 L * *")])
    workspace.cli("backups", "sync", "--at", "2025-11-28T00:00:00Z")
    deliver(agent, utc("2025-11-30T22:20:00Z"), "paie_db")

    scan(workspace, "2026-01-01T12:00:00Z")

    assert outcomes(workspace) == [
        ("paie_db", "2025-11-30T22:00:00Z", "SUCCESS"),
        ("paie_db", "2025-12-31T22:00:00Z", "MISSING"),
    ]


def test_weekdays_only_and_both_forms_in_one_jobs_file(workspace, agent):
    workspace.write_jobs(
        [
            {
                "agent_id": AGENT,
                "database_name": "compta_db",
                "expected_hour_utc": 13,
                "expected_minute_utc": 0,
            },
            cron("paie_db", "0 18 * * 1-5", timezone="Africa/Douala", grace_minutes=120),  # 17:00 UTC
        ]
    )
    workspace.cli("backups", "sync", "--at", "2025-11-21T00:00:00Z")  # a Friday
    for day in ("2025-11-21", "2025-11-22", "2025-11-23", "2025-11-24"):
        deliver(agent, utc(f"{day}T13:05:00Z"), "compta_db")
    deliver(agent, utc("2025-11-21T17:10:00Z"), "paie_db")
    deliver(agent, utc("2025-11-24T18:30:00Z"), "paie_db")  # 90 minutes late: within its grace

    scan(workspace, "2025-11-24T23:00:00Z")

    assert outcomes(workspace, database="paie_db") == [
        ("paie_db", "2025-11-21T17:00:00Z", "SUCCESS"),
        ("paie_db", "2025-11-24T17:00:00Z", "SUCCESS"),  # Monday: nothing owed on the weekend
    ]
    assert [o[2] for o in outcomes(workspace, database="compta_db")] == ["SUCCESS"] * 4
    schedules = {(s["database_name"], s["name"], s["schedule"]) for s in workspace.json("status")}
    assert schedules == {
        ("compta_db", "1300", "daily at 13:00 (UTC)"),
        ("paie_db", "", "At 18:00 on Monday through Friday (Africa/Douala)"),
    }


@pytest.mark.parametrize(
    ("zone", "schedule", "day", "cycle", "naive_end", "end"),
    [
        # 02:30 does not exist in Paris on 2025-03-30: expected at 03:00 CEST (01:00 UTC); the agent
        # writes local times, 03:10 CEST is 01:10 UTC.
        ("Europe/Paris", "30 2 * * *", "2025-03-30", "2025-03-30T01:00:00Z", "2025-03-30 03:10:00", "01:10"),
        # 02:30 happens twice in Paris on 2025-10-26: expected at the first (00:30 UTC); an agent's
        # 02:40 is read at its first occurrence too (00:40 UTC).
        ("Europe/Paris", "30 2 * * *", "2025-10-26", "2025-10-26T00:30:00Z", "2025-10-26 02:40:00", "00:40"),
        (
            "America/New_York",
            "30 2 * * *",
            "2025-03-09",
            "2025-03-09T07:00:00Z",
            "2025-03-09 03:05:00",
            "07:05",
        ),
        (
            "America/New_York",
            "30 1 * * *",
            "2025-11-02",
            "2025-11-02T05:30:00Z",
            "2025-11-02 01:45:00",
            "05:45",
        ),
    ],
)
def test_both_dst_transitions_of_a_european_and_an_american_zone(
    workspace, agent, zone, schedule, day, cycle, naive_end, end
):
    workspace.write_jobs(
        [cron("compta_db", schedule, timezone=zone), cron("paie_db", schedule, timezone=zone)]
    )
    deadline = utc(cycle) + timedelta(minutes=60)
    deliver(agent, datetime.fromisoformat(naive_end), "compta_db", naive_end=naive_end)

    scan(workspace, (deadline).isoformat(), day)  # at the deadline: not late yet
    assert outcomes(workspace) == [("compta_db", cycle, "SUCCESS")]

    scan(workspace, (deadline + timedelta(seconds=1)).isoformat(), day)
    assert outcomes(workspace) == [("compta_db", cycle, "SUCCESS"), ("paie_db", cycle, "MISSING")]
    (entry,) = workspace.entries(database="compta_db")
    assert entry["agent_operation_end_time"] == f"{day}T{end}:00Z"  # the naive time, read in the zone


def test_asymmetric_windows_early_and_grace(workspace, agent):
    legacy = {"agent_id": AGENT, "expected_hour_utc": 13, "expected_minute_utc": 0}
    windows = {"early_minutes": 15, "grace_minutes": 180}
    workspace.write_jobs(
        [legacy | {"database_name": "compta_db"} | windows, legacy | {"database_name": "paie_db"} | windows]
    )
    deliver(agent, utc("2025-11-21T12:50:00Z"), "compta_db")  # 10 minutes early: used
    deliver(agent, utc("2025-11-21T12:40:00Z"), "paie_db")  # 20 minutes early: not this cycle's

    scan(workspace, "2025-11-21T16:00:00Z", "2025-11-21")  # the deadline is T + grace = 16:00
    assert outcomes(workspace) == [("compta_db", "2025-11-21T13:00:00Z", "SUCCESS")]

    scan(workspace, "2025-11-21T16:00:01Z", "2025-11-21")
    missing = workspace.entry(AGENT, "paie_db", "2025-11-21T13:00:00Z")
    assert missing is not None and missing["status"] == "MISSING"
    assert "2025-11-21 12:45–2025-11-21 16:00 UTC" in missing["message"]


def test_overlapping_windows_are_refused_naming_the_line_and_the_field(workspace):
    workspace.write_jobs([cron("compta_db", "0 * * * *", grace_minutes=90, early_minutes=0)])
    result = workspace.cli("backups", "sync", expect_ok=False)
    assert result.exit_code == 1
    assert f"{workspace.jobs_file}:" in result.output and "field 'schedule'" in result.output
    assert "their windows overlap" in result.output


def test_a_schedule_change_then_a_backfill_supersedes_the_old_instants(workspace, agent):
    nightly = cron("compta_db", "0 2 * * *", name="nightly")
    workspace.write_jobs([nightly])
    deliver(agent, utc("2025-11-20T02:05:00Z"), "compta_db")
    scan(workspace, "2025-11-21T12:00:00Z", "2025-11-20", "2025-11-21")
    assert outcomes(workspace) == [
        ("compta_db", "2025-11-20T02:00:00Z", "SUCCESS"),
        ("compta_db", "2025-11-21T02:00:00Z", "MISSING"),
    ]
    # The agent really runs at 04:00: the configuration is fixed, then the two days backfilled.
    deliver(agent, utc("2025-11-20T04:05:00Z"), "compta_db")
    deliver(agent, utc("2025-11-21T04:05:00Z"), "compta_db")
    workspace.write_jobs([nightly | {"schedule": "0 4 * * *"}])
    scan(workspace, "2025-11-21T12:00:00Z", "2025-11-20", "2025-11-21")

    entries = workspace.entries()
    kept = [(e["cycle_expected_at"], e["status"], e["superseded_at"] is not None) for e in entries]
    assert kept == [
        ("2025-11-20T02:00:00Z", "SUCCESS", True),  # history is kept, marked
        ("2025-11-20T04:00:00Z", "SUCCESS", False),
        ("2025-11-21T02:00:00Z", "MISSING", True),
        ("2025-11-21T04:00:00Z", "SUCCESS", False),
    ]
    (status,) = workspace.json("status")
    assert (status["name"], status["current_status"]) == ("nightly", "OK")
    assert len(workspace.json("backups", "list")) == 1  # the same expected backup: its name is its identity
    day = digest(workspace, "2025-11-21")
    assert (day["total"]["evaluated"], day["total"]["missing"], day["problems"]) == (1, 0, [])
    # No alert comes of superseded cycles: not a RECOVERED from a MISSING that no longer counts.
    events = [(a["cycle_expected_at"], a["event"]) for a in workspace.json("notify", "alerts")]
    assert events == [("2025-11-21T02:00:00Z", "MISSING")]
    # Re-evaluating with the old schedule back makes the old instants count again.
    workspace.write_jobs([nightly])
    scan(workspace, "2025-11-21T12:00:00Z", "2025-11-21")
    statuses = {e["cycle_expected_at"]: e["superseded_at"] for e in workspace.entries(since="2025-11-21")}
    assert statuses["2025-11-21T02:00:00Z"] is None and statuses["2025-11-21T04:00:00Z"] is not None
