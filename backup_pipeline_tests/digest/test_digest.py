"""Issue 4, the daily fleet digest: built once, shown by `backup-pipeline digest` (table, CSV, JSON;
`report` is its old name) and materialized as the `fleet_digest` asset (markdown metadata, CSV file)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime
from typing import Any

import pytest
import yaml
from dagster import DagsterInstance, build_schedule_context

from backup_pipeline.config.jobs_file import DeclaredBackup
from backup_pipeline.config.settings import Settings, load_settings
from backup_pipeline.core.domain import ContentPolicy
from backup_pipeline.defs.digest import DIGEST_ASSET, DIGEST_JOB, build_digest_schedule, digest_delay
from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.dagster_runs import definitions
from backup_pipeline_tests.support.deposit_builder import Agent, gz, utc

DOUALA = "SIRPACAM_DOUALA_NEWBELL"
YAOUNDE = "SOCIA_YAOUNDE_BASTOS_1"
DAYS = ["2025-11-18", "2025-11-19", "2025-11-20", "2025-11-21"]
DAY = DAYS[-1]


def job(agent: str, database: str, hour: int = 13) -> dict[str, Any]:
    return {
        "agent_id": agent,
        "database_name": database,
        "expected_hour_utc": hour,
        "expected_minute_utc": 0,
        "content_change": "off",
    }


@pytest.fixture
def fleet(workspace: Workspace) -> Workspace:
    """Douala: compta_db succeeds every day but is tiny on DAY; paie_db fails on DAY.
    Yaoundé: stock_db never reports (MISSING); late_db's 23:00 cycle is still open on DAY."""
    workspace.write_jobs(
        [
            job(DOUALA, "compta_db"),
            job(DOUALA, "paie_db"),
            job(YAOUNDE, "stock_db"),
            job(YAOUNDE, "late_db", 23),
        ]
    )
    douala = Agent(workspace.root, DOUALA)
    for day in DAYS:
        sections = {}
        for database in ("compta_db", "paie_db"):
            size = 200 if (database, day) == ("compta_db", DAY) else 10_000
            packed = gz(bytes(range(256)) * (size // 256) + day.encode(), mtime=0)
            name = f"{database}_{day}.sql.gz"
            douala.stage(name, packed)
            failed = (database, day) == ("paie_db", DAY)
            sections[database] = douala.database_section(
                name, packed, backup=not failed, logs="pg_dump: lock"
            )
        douala.report(utc(f"{day}T13:05:00Z"), sections)
    args = ["scan", "--at", f"{DAY}T14:30:00Z"]
    for day in DAYS:
        args += ["--partition", day]
    workspace.cli(*args)
    return workspace


def test_report_json_summarises_the_fleet(fleet: Workspace) -> None:
    report = json.loads(fleet.cli("digest", "--date", DAY, "--format", "json").stdout)
    assert report["day"] == DAY
    agents = {a["agent_id"]: a for a in report["agents"]}
    assert list(agents) == [DOUALA, YAOUNDE]
    douala, yaounde, total = agents[DOUALA], agents[YAOUNDE], report["total"]
    assert (douala["jobs"], douala["evaluated"], douala["success"], douala["failed"]) == (2, 2, 1, 1)
    assert (douala["size_anomalies"], douala["pending"], douala["never_succeeded"]) == (1, 0, 0)
    assert douala["oldest_last_success"] == "2025-11-20T13:05:00Z"  # paie_db's last success
    assert douala["oldest_last_success_database"] == "paie_db"
    assert (yaounde["jobs"], yaounde["evaluated"], yaounde["missing"], yaounde["pending"]) == (2, 1, 1, 1)
    assert (yaounde["never_succeeded"], yaounde["oldest_last_success"]) == (2, None)
    assert (total["agent_id"], total["jobs"], total["evaluated"], total["pending"]) == ("TOTAL", 4, 3, 1)
    assert (total["success"], total["failed"], total["missing"], total["size_anomalies"]) == (1, 1, 1, 1)
    assert total["oldest_last_success_database"] == f"{DOUALA}/paie_db"
    assert [(p["agent_id"], p["database_name"], p["status"]) for p in report["problems"]] == [
        (DOUALA, "paie_db", "FAILED"),
        (YAOUNDE, "stock_db", "MISSING"),
    ]
    assert "pg_dump: lock" in report["problems"][0]["message"]
    (anomaly,) = report["anomalies"]
    assert (anomaly["database_name"], anomaly["kind"]) == ("compta_db", "TOO_SMALL")
    assert anomaly["ratio"] < 0.5

    # A job declared after the day's deadline owed nothing that day: it is not counted as pending.
    declared = yaml.safe_load(fleet.jobs_file.read_text())["jobs"]
    fleet.write_jobs([*declared, job(DOUALA, "new_db")])
    fleet.cli("jobs", "sync", "--at", f"{DAY}T20:00:00Z")
    again = json.loads(fleet.cli("digest", "--date", DAY, "--format", "json").stdout)
    assert (again["total"]["jobs"], again["total"]["pending"]) == (4, 1)
    tomorrow = json.loads(fleet.cli("digest", "--date", "2025-11-22", "--format", "json").stdout)
    assert (tomorrow["total"]["jobs"], tomorrow["total"]["pending"]) == (5, 5)

    earlier = json.loads(fleet.cli("digest", "--date", DAYS[0], "--format", "json").stdout)
    assert earlier["total"]["missing"] == 2  # stock_db and late_db on the first day
    assert earlier["anomalies"] == [] and earlier["total"]["size_anomalies"] == 0


def test_report_table_and_csv(fleet: Workspace) -> None:
    table = fleet.cli("digest", "--date", DAY).stdout
    headline = f"Fleet health on {DAY}: 2 agent(s), 4 expected backup(s), 3 evaluated, 2 problem(s)"
    assert table.startswith(headline)
    assert "Problems" in table and "Size anomalies" in table and "TOTAL" in table

    rows = list(csv.DictReader(io.StringIO(fleet.cli("digest", "--date", DAY, "--format", "csv").stdout)))
    assert [r["agent_id"] for r in rows] == [DOUALA, YAOUNDE, "TOTAL"]
    assert rows[0]["failed"] == "1" and rows[1]["missing"] == "1" and rows[2]["jobs"] == "4"

    bad = fleet.cli("digest", "--date", "21/11/2025", expect_ok=False)
    assert bad.exit_code == 2 and "is not a day" in bad.stderr


def test_the_asset_writes_the_same_csv_and_a_markdown_table(fleet: Workspace) -> None:
    with DagsterInstance.ephemeral() as instance:
        result = (
            definitions().resolve_job_def(DIGEST_JOB).execute_in_process(partition_key=DAY, instance=instance)
        )
    assert result.success
    (event,) = result.get_asset_materialization_events()
    materialization = event.materialization
    assert materialization.asset_key == DIGEST_ASSET and materialization.partition == DAY
    metadata = materialization.metadata
    assert (metadata["problems"].value, metadata["size_anomalies"].value, metadata["jobs"].value) == (2, 1, 4)
    markdown = metadata["digest"].value
    assert "| agent_id | jobs | evaluated | success |" in markdown
    assert "| SIRPACAM\\_DOUALA\\_NEWBELL | 2 | 2 | 1 |" in markdown  # cells are escaped markdown
    assert "**Problems**" in markdown and "**Size anomalies**" in markdown
    path = fleet.home / "digests" / f"digest_{DAY}.csv"
    assert metadata["csv"].value == str(path)
    assert path.read_text() == fleet.cli("digest", "--date", DAY, "--format", "csv").stdout


def _resolved(hour: int, minute: int, window: int) -> DeclaredBackup:
    return DeclaredBackup(
        agent_id=DOUALA,
        database_name="compta_db",
        name=f"{hour:02d}{minute:02d}",
        expected_hour_utc=hour,
        expected_minute_utc=minute,
        early_minutes=window,
        grace_minutes=window,
        timezone="UTC",
        staged_file_name=None,
        content_change=ContentPolicy.CHANGED,
    )


@pytest.mark.parametrize(
    ("jobs", "cron", "tick", "day"),
    [
        # the last deadline is 14:00: the day's report at 14:30 the same day
        ([(13, 0, 60), (2, 30, 60)], "30 14 * * *", datetime(2025, 11, 21, 14, 30, tzinfo=UTC), "2025-11-21"),
        # a 23:50 job with a 60-minute window: its deadline is tomorrow 00:50, the report at 01:20
        ([(23, 50, 60)], "20 1 * * *", datetime(2025, 11, 22, 1, 20, tzinfo=UTC), "2025-11-21"),
        # no job: just after midnight, for the day before
        ([], "30 0 * * *", datetime(2025, 11, 22, 0, 30, tzinfo=UTC), "2025-11-21"),
    ],
)
def test_the_daily_schedule_digests_the_day_whose_cycles_are_decided(
    jobs: list[tuple[int, int, int]], cron: str, tick: datetime, day: str, workspace: Workspace
) -> None:
    declared = [_resolved(*j) for j in jobs]
    settings = load_settings().model_copy(update={"start_date": date(2024, 1, 1)})
    schedule = build_digest_schedule(definitions(settings).resolve_job_def(DIGEST_JOB), declared)
    assert schedule.cron_schedule == cron
    assert digest_delay(declared).total_seconds() > 0

    def tick_with(settings: Settings) -> object:
        return schedule(
            build_schedule_context(scheduled_execution_time=tick, resources={"settings": settings})
        )

    (request,) = tick_with(settings)
    assert request.partition_key == day
    assert tick_with(settings) == [request]  # same run key
    late = settings.model_copy(update={"start_date": date(2030, 1, 1)})
    assert tick_with(late) == []  # before the first partition
