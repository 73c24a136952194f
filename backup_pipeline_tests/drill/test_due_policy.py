"""The due policy over a simulated month: every expected backup is drilled within its period (per its
`restore_drill.every_days`), the budget of each daily run is respected (its drills' estimates fit, or
it ran a single drill), `off` backups are never drilled, and nothing is drilled twice.

The month's entries are written in bulk (as a month of scans would leave them), all pointing at one
real staged dump per backup, so each day's `backup-pipeline drill --due --at DAY` drills real dumps.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa

from backup_pipeline.core.drills import DrillCandidate, DrillPolicy, estimate_seconds, measured_cost
from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.deposit_builder import Agent
from backup_pipeline_tests.support.drill_fixtures import SITE, SampleDumps, gz, sha

START = date(2025, 10, 1)
DAYS = 28
PERIODS = {"orders": 3, "billing": 7, "stock": 7}  # every_days; "archive" is `off`
BUDGET_MINUTES = 0.1  # six seconds a run: about three small drills
INSERT_ENTRY = sa.text(
    "INSERT INTO backup_entries (job_id, cycle_expected_at, status, message, evaluated_at, staged_file_name, "
    "server_calculated_staged_hash, server_calculated_staged_size) "
    "VALUES (:job, :at, 'SUCCESS', 'ok', :at, :name, :hash, :size)"
)
SELECT_DRILLS = sa.text(
    "SELECT j.database_name, d.as_of, d.duration_seconds, d.entry_id, d.staged_size, d.outcome "
    "FROM restore_drills d JOIN expected_jobs j ON j.id = d.job_id ORDER BY d.as_of, d.id"
)


def write_month(ws: Workspace, dumps: SampleDumps) -> None:
    agent = Agent(ws.root, SITE)
    jobs = []
    for database in [*PERIODS, "archive"]:
        drill = {"every_days": PERIODS[database]} if database in PERIODS else "off"
        jobs.append(
            {
                "agent_id": SITE,
                "database_name": database,
                "expected_hour_utc": 2,
                "expected_minute_utc": 0,
                "restore_drill": drill,
            }
        )
    ws.write_jobs(jobs)
    ws.cli("backups", "sync", "--at", f"{START - timedelta(days=1)}T00:00:00Z")
    engine = sa.create_engine(ws.database_url)
    try:
        with engine.begin() as conn:
            ids = dict(conn.execute(sa.text("SELECT database_name, id FROM expected_jobs")).all())
            for database, job_id in ids.items():
                data = gz(dumps.get(database))
                agent.stage(f"{database}.sql.gz", data)
                for offset in range(DAYS):
                    at = datetime.combine(
                        START + timedelta(days=offset), datetime.min.time(), UTC
                    ) + timedelta(hours=2)
                    conn.execute(
                        INSERT_ENTRY,
                        {
                            "job": job_id,
                            "at": at,
                            "name": f"{database}.sql.gz",
                            "hash": sha(data),
                            "size": len(data),
                        },
                    )
    finally:
        engine.dispose()


@pytest.mark.slow
def test_a_month_of_daily_drill_runs_covers_every_backup_within_its_period_and_budget(
    drill_workspace: Workspace, sample_dumps: SampleDumps, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = drill_workspace
    monkeypatch.setenv("BACKUP_PIPELINE_DRILL_BUDGET_MINUTES", str(BUDGET_MINUTES))
    write_month(ws, sample_dumps)
    for offset in range(DAYS):
        day = START + timedelta(days=offset)
        ws.json("drill", "--due", "--at", f"{day}T04:00:00Z")

    engine = sa.create_engine(ws.database_url)
    try:
        with engine.connect() as conn:
            drills = conn.execute(SELECT_DRILLS).all()
    finally:
        engine.dispose()

    assert {d.outcome for d in drills} == {"RESTORED"}
    assert len({d.entry_id for d in drills}) == len(drills), "an entry drilled twice"
    by_backup: dict[str, list[date]] = defaultdict(list)
    for d in drills:
        by_backup[d.database_name].append(d.as_of.date())
    assert "archive" not in by_backup  # restore_drill: off
    for database, every in PERIODS.items():
        days = by_backup[database]
        assert days[0] <= START + timedelta(days=2), f"{database} first drilled on {days[0]}"
        gaps = [(b - a).days for a, b in itertools.pairwise(days)]
        assert all(every <= gap <= every + 2 for gap in gaps), f"{database}: drilled on {days}"
        assert (START + timedelta(days=DAYS - 1) - days[-1]).days <= every + 2

    # Each run's drills fit in its budget by their estimates (or it ran just one): the restore rate
    # as measured on the drills of the runs before it.
    last: dict[str, float] = {}
    runs: dict[date, list[float]] = defaultdict(list)
    for day, of_day in itertools.groupby(drills, key=lambda d: d.as_of.date()):
        done = [d for d in drills if d.as_of.date() < day and d.outcome == "RESTORED"]
        cost = measured_cost([(d.staged_size, d.duration_seconds) for d in done])
        for d in of_day:
            candidate = DrillCandidate(
                0, d.entry_id, d.as_of, d.staged_size, DrillPolicy(), None, last.get(d.database_name)
            )
            runs[day].append(estimate_seconds(candidate, cost))
            last[d.database_name] = d.duration_seconds
    for day, estimates in runs.items():
        assert len(estimates) == 1 or sum(estimates) <= BUDGET_MINUTES * 60, (day, estimates)
    assert max(len(e) for e in runs.values()) < len(PERIODS) or len(runs) > 3  # the budget did spread them
