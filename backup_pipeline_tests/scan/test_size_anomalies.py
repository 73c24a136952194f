"""Issue 4, size anomalies end to end: the staged size of each successful cycle against the median of
the job's last successful cycles before it. The status stays SUCCESS; the entry carries the anomaly,
it is notified like a problem and shows as a WARNING check on the asset. Deterministic under backfills.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import pytest
from dagster import AssetCheckSeverity, AssetKey, DagsterInstance

from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.dagster_runs import run_scan_job
from backup_pipeline_tests.support.deposit_builder import Agent, gz, utc
from backup_pipeline_tests.support.receivers import HttpReceiver

AGENT = "SIRPACAM_DOUALA_NEWBELL"
FIRST = date(2025, 11, 1)
DAYS = [(FIRST + timedelta(days=i)).isoformat() for i in range(15)]  # 14 of history, then the 15th
LAST = DAYS[-1]
NORMAL = 100_000


def job(database: str = "compta_db", **extra: Any) -> dict[str, Any]:
    declared = {"agent_id": AGENT, "database_name": database, "expected_hour_utc": 13}
    return declared | {"expected_minute_utc": 0, "content_change": "off"} | extra


@pytest.fixture
def http(workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()
    monkeypatch.setenv("BACKUP_PIPELINE_NOTIFY_URLS", receiver.url("hook"))
    monkeypatch.setenv("MAX_STATUS_FILE_AGE_DAYS", "60")  # the whole history is ingested in one scan
    yield receiver
    receiver.close()


def backups(agent: Agent, sizes: dict[str, dict[str, int]]) -> dict[tuple[str, str], int]:
    """Stage incompressible dumps of the given sizes (per day, per database); their staged sizes."""
    staged = {}
    for day, per_database in sizes.items():
        sections = {}
        for database, size in per_database.items():
            packed = gz(random.Random(f"{database}{day}").randbytes(size), mtime=0)
            name = f"{database}_{day}.sql.gz"
            agent.stage(name, packed)
            sections[database] = agent.database_section(name, packed)
            staged[(database, day)] = len(packed)
        agent.report(utc(f"{day}T13:05:00Z"), sections)
    return staged


def noisy(spread: float, seed: int = 1) -> list[int]:
    rng = random.Random(seed)
    return [int(NORMAL * (1 + rng.uniform(-spread, spread))) for _ in DAYS]


def scan(ws: Workspace, *days: str) -> None:
    args = ["scan", "--at", f"{LAST}T14:30:00Z"]
    for day in days:
        args += ["--partition", day]
    ws.cli(*args)


def entries(ws: Workspace, database: str = "compta_db") -> dict[str, dict[str, Any]]:
    return {e["cycle_expected_at"][:10]: e for e in ws.entries(database=database)}


def test_a_two_percent_backup_after_fourteen_normal_ones_is_flagged(
    workspace: Workspace, http: HttpReceiver
) -> None:
    workspace.write_jobs([job()])
    sizes = [*noisy(0.05)[:14], NORMAL * 2 // 100]
    staged = backups(
        Agent(workspace.root, AGENT), {d: {"compta_db": s} for d, s in zip(DAYS, sizes, strict=True)}
    )

    scan(workspace, *DAYS)

    by_day = entries(workspace)
    assert {e["status"] for e in by_day.values()} == {"SUCCESS"}
    assert [by_day[d]["size_history"] for d in DAYS[:5]] == [None, None, None, 3, 4]  # 3 needed
    assert all(by_day[d]["size_anomaly"] is None for d in DAYS[:14])
    flagged = by_day[LAST]
    median = statistics.median(staged[("compta_db", d)] for d in DAYS[:14])
    assert flagged["size_anomaly"] == "TOO_SMALL"
    assert flagged["size_history"] == 14
    assert flagged["size_median"] == pytest.approx(median)
    assert flagged["size_ratio"] == pytest.approx(staged[("compta_db", LAST)] / median)
    assert 0.015 < flagged["size_ratio"] < 0.025
    assert "size anomaly (too small)" in flagged["message"]
    assert f"{staged[('compta_db', LAST)]:,} bytes is 0.02× the median" in flagged["message"]
    assert workspace.json("status")[0]["current_status"] == "OK"

    (message,) = http.take()
    assert message.title == "[backup_pipeline] 1 size anomaly"
    assert message.type == "warning"
    assert f"SIZE_ANOMALY — {AGENT} / compta_db — cycle {LAST} 13:00 UTC" in message.body
    assert "size anomaly (too small)" in message.body
    assert "sha256" not in message.body  # the alert says what is wrong, not the whole entry

    # Re-evaluating the day finds the same state: the same entry, no second notification.
    scan(workspace, LAST)
    assert entries(workspace)[LAST]["message"] == flagged["message"]
    assert http.take() == []


def test_normal_noise_is_not_flagged(workspace: Workspace, http: HttpReceiver) -> None:
    workspace.write_jobs([job()])
    sizes = noisy(0.3, seed=7)
    backups(Agent(workspace.root, AGENT), {d: {"compta_db": s} for d, s in zip(DAYS, sizes, strict=True)})
    scan(workspace, *DAYS)
    by_day = entries(workspace)
    assert by_day[LAST]["size_history"] == 14
    assert all(e["size_anomaly"] is None for e in by_day.values())
    assert all(0.5 < e["size_ratio"] < 3.0 for e in by_day.values() if e["size_ratio"] is not None)
    assert http.take() == []


def test_thresholds_per_job_and_the_larger_side(workspace: Workspace, http: HttpReceiver) -> None:
    workspace.write_jobs(
        [
            job("strict_db", size_anomaly={"above": 1.5, "history": 5}),
            job("default_db"),
            job("unwatched_db", size_anomaly="off"),
        ]
    )
    history = {d: {"strict_db": NORMAL, "default_db": NORMAL, "unwatched_db": NORMAL} for d in DAYS[:14]}
    history[LAST] = {"strict_db": NORMAL * 2, "default_db": NORMAL * 2, "unwatched_db": NORMAL // 50}
    backups(Agent(workspace.root, AGENT), history)
    scan(workspace, *DAYS)

    strict = entries(workspace, "strict_db")[LAST]
    assert (strict["size_anomaly"], strict["size_history"]) == ("TOO_LARGE", 5)
    assert "size anomaly (too large)" in strict["message"] and "flagged above 1.5×" in strict["message"]
    assert entries(workspace, "default_db")[LAST]["size_anomaly"] is None  # 2× is under the default 3×
    unwatched = entries(workspace, "unwatched_db")[LAST]
    assert unwatched["size_anomaly"] is None and unwatched["size_median"] is None
    (message,) = http.take()
    assert "strict_db" in message.body and "default_db" not in message.body


def test_deterministic_under_backfills(workspace: Workspace, http: HttpReceiver) -> None:
    """Only cycles before T count: the order in which days are (re)evaluated changes nothing."""
    workspace.write_jobs([job()])
    sizes = [*noisy(0.05, seed=3)[:14], NORMAL // 50]
    staged = backups(
        Agent(workspace.root, AGENT), {d: {"compta_db": s} for d, s in zip(DAYS, sizes, strict=True)}
    )

    scan(workspace, LAST)  # the last day first: no history yet, nothing to compare with
    assert entries(workspace)[LAST]["size_history"] is None
    scan(workspace, *DAYS[:14])  # then the history, as a backfill
    scan(workspace, LAST)
    assert entries(workspace)[LAST]["size_anomaly"] == "TOO_SMALL"
    scan(workspace, DAYS[9])  # day 10 again: days 1-9 count, not the tiny 15th
    tenth = entries(workspace)[DAYS[9]]
    assert tenth["size_history"] == 9
    assert tenth["size_median"] == pytest.approx(
        statistics.median(staged[("compta_db", d)] for d in DAYS[:9])
    )
    assert tenth["size_anomaly"] is None


def test_an_anomaly_is_a_warning_check_on_the_asset(
    workspace: Workspace, http: HttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace.write_jobs([job()])
    sizes = [NORMAL] * 14 + [NORMAL // 50]
    backups(Agent(workspace.root, AGENT), {d: {"compta_db": s} for d, s in zip(DAYS, sizes, strict=True)})
    scan(workspace, *DAYS[:14])
    with DagsterInstance.ephemeral() as instance:
        result = run_scan_job(LAST, f"{LAST}T14:30:00Z", instance)
    assert result.success
    key = AssetKey(["backups", AGENT, "compta_db_1300"])
    checks = {c.check_name: c for c in result.get_asset_check_evaluations() if c.asset_key == key}
    assert checks["integrity"].passed  # the backup itself is intact…
    size = checks["size"]  # …but suspiciously small
    assert not size.passed
    assert size.severity == AssetCheckSeverity.WARN
    assert size.metadata["anomaly"].value == "TOO_SMALL"
    assert size.metadata["history"].value == 14
    (materialization,) = [m for m in result.get_asset_materialization_events() if m.asset_key == key]
    assert materialization.materialization.metadata["status"].value == "SUCCESS"
    assert materialization.materialization.metadata["size_anomaly"].value == "TOO_SMALL"
