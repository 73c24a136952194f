"""Issue 4, silences end to end: cycles whose deadline falls in a maintenance window or before a job's
`silenced_until` are evaluated and recorded as usual, but their notifications are held; a MISSING in
a window names it; after the window, the next problem alerts again."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.deposit_builder import Agent, gz, utc
from backup_pipeline_tests.support.receivers import HttpReceiver

AGENT = "SIRPACAM_DOUALA_NEWBELL"
SATURDAY, SUNDAY, MONDAY, TUESDAY = "2025-11-22", "2025-11-23", "2025-11-24", "2025-11-25"
WEEKLY = {"name": "weekly-maintenance", "days": ["sun"], "start": "00:00", "end": "06:00"}


def job(hour: int = 4, **extra: Any) -> dict[str, Any]:
    declared = {"agent_id": AGENT, "database_name": "compta_db", "expected_hour_utc": hour}
    return declared | {"expected_minute_utc": 0} | extra


@pytest.fixture
def http(workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()
    monkeypatch.setenv("BACKUP_PIPELINE_NOTIFY_URLS", receiver.url("hook"))
    yield receiver
    receiver.close()


def scan(ws: Workspace, at: str, *partitions: str) -> str:
    args = ["scan", "--at", at]
    for p in partitions:
        args += ["--partition", p]
    return ws.cli(*args).stdout


def test_missing_in_a_maintenance_window_is_recorded_but_not_sent(
    workspace: Workspace, http: HttpReceiver
) -> None:
    workspace.write_jobs([job(maintenance=[WEEKLY])])
    workspace.cli("jobs", "sync", "--at", f"{SATURDAY}T08:00:00Z")

    # Sunday 04:00, deadline 05:00: inside the window. Recorded as MISSING, naming the window.
    out = scan(workspace, f"{SUNDAY}T05:30:00Z")
    entry = workspace.entry(AGENT, "compta_db", f"{SUNDAY}T04:00:00Z")
    assert entry["status"] == "MISSING"
    assert "no report for compta_db" in entry["message"]
    assert "maintenance window 'weekly-maintenance' (Sun 00:00–06:00 UTC)" in entry["message"]
    assert "notifications held" in entry["message"]
    assert workspace.json("status")[0]["current_status"] == "MISSING"
    assert http.take() == []
    assert "0 alert(s) delivered, 0 failed, 1 held by a silence" in out
    (alert,) = workspace.json("notify", "alerts")
    assert alert["event"] == "MISSING"
    assert alert["held_by"] == "maintenance window 'weekly-maintenance' (Sun 00:00–06:00 UTC)"
    assert workspace.json("notify", "log") == []

    # Later scans of the silenced cycle still send nothing, even after the window has ended.
    scan(workspace, f"{SUNDAY}T09:00:00Z", SUNDAY)
    assert http.take() == []

    # Monday's cycle is outside the window: the next problem alerts, and only it.
    scan(workspace, f"{MONDAY}T05:30:00Z")
    (message,) = http.take()
    assert message.title == "[backup_pipeline] 1 problem"
    assert f"MISSING — {AGENT} / compta_db — cycle {MONDAY} 04:00 UTC" in message.body
    assert SUNDAY not in message.body
    monday = workspace.entry(AGENT, "compta_db", f"{MONDAY}T04:00:00Z")
    assert "maintenance" not in monday["message"]


def test_no_recovery_notice_for_a_problem_nobody_was_told_about(
    workspace: Workspace, http: HttpReceiver
) -> None:
    workspace.write_jobs([job(maintenance=[WEEKLY])])
    workspace.cli("jobs", "sync", "--at", f"{SATURDAY}T08:00:00Z")
    scan(workspace, f"{SUNDAY}T05:30:00Z")  # MISSING, held
    agent = Agent(workspace.root, AGENT)
    packed = gz(b"-- dump\n" * 100)
    agent.stage("compta_db.sql.gz", packed)
    agent.report(
        utc(f"{MONDAY}T04:05:00Z"), {"compta_db": agent.database_section("compta_db.sql.gz", packed)}
    )
    scan(workspace, f"{MONDAY}T05:30:00Z")
    assert workspace.entry(AGENT, "compta_db", f"{MONDAY}T04:00:00Z")["status"] == "SUCCESS"
    assert workspace.json("status")[0]["current_status"] == "OK"
    assert http.take() == []
    assert [a["event"] for a in workspace.json("notify", "alerts")] == ["MISSING"]


def test_silenced_until_holds_the_cycles_due_before_it(workspace: Workspace, http: HttpReceiver) -> None:
    workspace.write_jobs([job(hour=13, silenced_until="2025-11-22T14:30:00Z")])
    agent = Agent(workspace.root, AGENT)
    for day in ("2025-11-21", "2025-11-22", "2025-11-23"):
        agent.report(
            utc(f"{day}T13:05:00Z"),
            {
                "compta_db": agent.database_section(
                    "compta_db.sql.gz", gz(b"x"), backup=False, error="pg_dump"
                )
            },
        )
    # 21st and 22nd (deadline 14:00, before 14:30): held. 23rd: sent.
    scan(workspace, "2025-11-23T15:00:00Z", "2025-11-21", "2025-11-22", "2025-11-23")
    assert [e["status"] for e in workspace.entries()] == ["FAILED"] * 3
    (message,) = http.take()
    assert "cycle 2025-11-23 13:00 UTC" in message.body
    assert "2025-11-21" not in message.body and "2025-11-22 13:00" not in message.body
    held = {a["cycle_expected_at"]: a["held_by"] for a in workspace.json("notify", "alerts")}
    assert held == {
        "2025-11-21T13:00:00Z": "silenced until 2025-11-22 14:30 UTC",
        "2025-11-22T13:00:00Z": "silenced until 2025-11-22 14:30 UTC",
        "2025-11-23T13:00:00Z": None,
    }
