"""The daily health report: the whole fleet on one day, built once and rendered four ways.

`build_report` reads the day's entries, the active jobs and each job's last success up to the end
of the day, and summarises them with pandas: one row per agent (jobs, entries per status, cycles
not evaluated yet, size anomalies, the oldest last success among its databases) plus a TOTAL row,
the day's problems and its size anomalies. The Dagster asset `fleet_health_report` and the CLI's
`backup-pipeline report` both call it, then render it as a markdown table (the asset's metadata),
CSV (the file under BACKUP_PIPELINE_HOME/reports/, and `--format csv`), a text table or JSON.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from pydantic import BaseModel

from backup_pipeline.core.alerts import escape_markdown
from backup_pipeline.core.cycles import day_bounds
from backup_pipeline.storage.database import Database
from backup_pipeline.storage.orm import BackupEntryRow, ExpectedJobRow

STATUSES = ["SUCCESS", "HASH_MISMATCH", "TRANSFER_INTEGRITY_FAILED", "FAILED", "MISSING"]
PROBLEMS = {"TRANSFER_INTEGRITY_FAILED", "FAILED", "MISSING"}
TOTAL = "TOTAL"


class AgentHealth(BaseModel):
    agent_id: str
    jobs: int = 0
    evaluated: int = 0
    success: int = 0
    hash_mismatch: int = 0
    transfer_integrity_failed: int = 0
    failed: int = 0
    missing: int = 0
    pending: int = 0  # cycles of the day without an entry yet (still open, or not scanned)
    size_anomalies: int = 0
    oldest_last_success: datetime | None = None  # the most neglected of the agent's databases
    oldest_last_success_database: str | None = None
    never_succeeded: int = 0  # jobs without any successful cycle up to the end of the day


class Problem(BaseModel):
    agent_id: str
    database_name: str
    cycle_expected_at: datetime
    status: str
    message: str


class Anomaly(BaseModel):
    agent_id: str
    database_name: str
    cycle_expected_at: datetime
    kind: str
    size: int | None
    median: float | None
    ratio: float | None


class HealthReport(BaseModel):
    day: date
    generated_at: datetime
    agents: list[AgentHealth]
    total: AgentHealth
    problems: list[Problem]
    anomalies: list[Anomaly]

    @property
    def headline(self) -> str:
        t = self.total
        return (
            f"Fleet health on {self.day}: {len(self.agents)} agent(s), {t.jobs} job(s), "
            f"{t.evaluated} evaluated, {len(self.problems)} problem(s), "
            f"{len(self.anomalies)} size anomaly(ies), {t.pending} pending"
        )


# ---------------------------------------------------------------- building


def build_report(database: Database, day: date) -> HealthReport:
    start, end = day_bounds(day)
    with database.sessions() as session:
        entries = session.execute(
            sa.select(
                BackupEntryRow.job_id,
                BackupEntryRow.cycle_expected_at,
                BackupEntryRow.status,
                BackupEntryRow.message,
                BackupEntryRow.server_calculated_staged_size,
                BackupEntryRow.size_anomaly,
                BackupEntryRow.size_median,
                BackupEntryRow.size_ratio,
            ).where(BackupEntryRow.cycle_expected_at >= start, BackupEntryRow.cycle_expected_at < end)
        ).all()
        with_entries = {row.job_id for row in entries}
        # The day's jobs: those with an entry, and the active ones whose cycle that day is owed (its
        # deadline is not before the job was declared), as automatic scans see them.
        deadline = sa.cast(sa.literal(start), sa.DateTime(timezone=True)) + sa.func.make_interval(
            0,
            0,
            0,
            0,
            ExpectedJobRow.expected_hour_utc,
            ExpectedJobRow.expected_minute_utc + ExpectedJobRow.window_minutes,
        )
        jobs = session.execute(
            sa.select(
                ExpectedJobRow.id, ExpectedJobRow.agent_id_responsible, ExpectedJobRow.database_name
            ).where(
                sa.or_(
                    sa.and_(ExpectedJobRow.is_active, deadline >= ExpectedJobRow.created_at),
                    ExpectedJobRow.id.in_(with_entries),
                )
            )
        ).all()
        last_success = session.execute(
            sa.select(
                BackupEntryRow.job_id,
                sa.func.coalesce(BackupEntryRow.agent_operation_end_time, BackupEntryRow.cycle_expected_at),
            )
            .where(
                BackupEntryRow.job_id.in_([j.id for j in jobs]),
                BackupEntryRow.status.in_(("SUCCESS", "HASH_MISMATCH")),
                BackupEntryRow.cycle_expected_at < end,
            )
            .distinct(BackupEntryRow.job_id)
            .order_by(BackupEntryRow.job_id, BackupEntryRow.cycle_expected_at.desc())
        ).all()
    return summarise(day, jobs, entries, last_success)


def summarise(day: date, jobs: list[Any], entries: list[Any], last_success: list[Any]) -> HealthReport:
    """The report from plain rows (jobs: id, agent, database; entries: the day's; last successes)."""
    job_frame = pd.DataFrame([tuple(j) for j in jobs], columns=["job_id", "agent_id", "database_name"])
    entry_frame = pd.DataFrame(
        [tuple(e) for e in entries],
        columns=["job_id", "cycle", "status", "message", "size", "anomaly", "median", "ratio"],
    )
    success_frame = pd.DataFrame([tuple(s) for s in last_success], columns=["job_id", "last_success"])
    frame = job_frame.merge(entry_frame, on="job_id", how="left").merge(
        success_frame, on="job_id", how="left"
    )

    agents = [_agent_row(agent, group) for agent, group in frame.groupby("agent_id", sort=True)]
    problems = [
        Problem(
            agent_id=r.agent_id,
            database_name=r.database_name,
            cycle_expected_at=r.cycle,
            status=r.status,
            message=r.message,
        )
        for r in frame[frame["status"].isin(PROBLEMS)]
        .sort_values(["agent_id", "database_name", "cycle"])
        .itertuples()
    ]
    anomalies = [
        Anomaly(
            agent_id=r.agent_id,
            database_name=r.database_name,
            cycle_expected_at=r.cycle,
            kind=r.anomaly,
            size=_int(r.size),
            median=_float(r.median),
            ratio=_float(r.ratio),
        )
        for r in frame[frame["anomaly"].notna()]
        .sort_values(["agent_id", "database_name", "cycle"])
        .itertuples()
    ]
    return HealthReport(
        day=day,
        generated_at=datetime.now(UTC),
        agents=agents,
        total=_agent_row(TOTAL, frame),
        problems=problems,
        anomalies=anomalies,
    )


def _agent_row(agent: str, group: pd.DataFrame) -> AgentHealth:
    counts = group["status"].value_counts()
    oldest_at, oldest_db = None, None
    succeeded = group[group["last_success"].notna()]
    if not succeeded.empty:
        row = succeeded.loc[succeeded["last_success"].idxmin()]
        oldest_at, oldest_db = row["last_success"].to_pydatetime(), row["database_name"]
        if agent == TOTAL:
            oldest_db = f"{row['agent_id']}/{row['database_name']}"
    return AgentHealth(
        agent_id=agent,
        jobs=int(group["job_id"].nunique()),
        evaluated=int(group["status"].notna().sum()),
        pending=int(group["status"].isna().sum()),
        size_anomalies=int(group["anomaly"].notna().sum()),
        oldest_last_success=oldest_at,
        oldest_last_success_database=oldest_db,
        never_succeeded=int(group.loc[group["last_success"].isna(), "job_id"].nunique()),
        **{status.lower(): int(counts.get(status, 0)) for status in STATUSES},
    )


def _int(value: Any) -> int | None:
    return None if pd.isna(value) else int(value)


def _float(value: Any) -> float | None:
    return None if pd.isna(value) else float(value)


# ---------------------------------------------------------------- rendering

AGENT_COLUMNS = list(AgentHealth.model_fields)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def agent_rows(report: HealthReport) -> list[dict[str, str]]:
    return [{c: _cell(getattr(a, c)) for c in AGENT_COLUMNS} for a in [*report.agents, report.total]]


def problem_rows(report: HealthReport) -> list[dict[str, str]]:
    return [{k: _cell(v) for k, v in p} for p in report.problems]


def anomaly_rows(report: HealthReport) -> list[dict[str, str]]:
    return [{k: _cell(v) for k, v in a} for a in report.anomalies]


def to_csv(report: HealthReport) -> str:
    """One row per agent and a TOTAL row (the problems and anomalies are in the JSON and markdown)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=AGENT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(agent_rows(report))
    return out.getvalue()


def to_json(report: HealthReport) -> dict[str, Any]:
    return report.model_dump(mode="json")


def to_markdown(report: HealthReport) -> str:
    parts = [f"**{report.headline}**", "", _md_table(agent_rows(report), AGENT_COLUMNS)]
    if report.problems:
        parts += ["", "**Problems**", "", _md_table(problem_rows(report), list(Problem.model_fields))]
    if report.anomalies:
        parts += ["", "**Size anomalies**", "", _md_table(anomaly_rows(report), list(Anomaly.model_fields))]
    return "\n".join(parts)


def to_text(report: HealthReport) -> str:
    from backup_pipeline.views import table

    parts = [report.headline, "", table(agent_rows(report), AGENT_COLUMNS)]
    if report.problems:
        parts += ["", "Problems", table(problem_rows(report))]
    if report.anomalies:
        parts += ["", "Size anomalies", table(anomaly_rows(report))]
    return "\n".join(parts)


def _md_table(rows: list[dict[str, str]], columns: list[str]) -> str:
    def clean(text: str) -> str:  # cells quote agents' texts: shortened, then made inert
        text = " ".join(text.split())
        return escape_markdown(text if len(text) <= 200 else text[:199] + "…")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(clean(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_csv(report: HealthReport, directory: Path) -> Path:
    """Write `health_<day>.csv` atomically (a reader never sees half a file)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"health_{report.day.isoformat()}.csv"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(to_csv(report))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
