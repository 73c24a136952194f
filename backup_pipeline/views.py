"""What the CLI shows: rows built from storage, rendered as tables (pandas) or JSON."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd
import sqlalchemy as sa

from backup_pipeline.core.cycles import day_bounds
from backup_pipeline.storage import repository
from backup_pipeline.storage.database import Database
from backup_pipeline.storage.orm import BackupEntryRow, ExpectedJobRow

if TYPE_CHECKING:
    from backup_pipeline.scan_runner import PartitionRun

STATUS_COLUMNS = [
    "agent_id",
    "database_name",
    "expected_hour_utc",
    "expected_minute_utc",
    "current_status",
    "last_checked_timestamp",
    "last_successful_backup_timestamp",
    "previous_successful_hash_global",
]
JOB_COLUMNS = [
    "agent_id",
    "database_name",
    "expected_hour_utc",
    "expected_minute_utc",
    "window_minutes",
    "timezone",
    "content_change",
    "is_active",
    "current_status",
]
ENTRY_COLUMNS = ["agent_id", "database_name", "cycle_expected_at", "status", "message"]


def iso(value: datetime | None) -> str | None:
    """ISO-8601 in UTC with a Z, as every CLI timestamp."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    if not rows:
        return "(no rows)"
    frame = pd.DataFrame(rows, columns=columns or list(rows[0]))
    with pd.option_context("display.max_colwidth", 90, "display.width", 250):
        return frame.fillna("").to_string(index=False)


def job_rows(database: Database, *, active_only: bool) -> list[dict[str, Any]]:
    with database.sessions() as session:
        jobs = repository.all_jobs(session)
        fleet_checked = repository.fleet_checked_at(session)
    return [_job_row(job, fleet_checked) for job in jobs if job.is_active or not active_only]


def _last_checked(job: ExpectedJobRow, fleet_checked: datetime | None) -> datetime | None:
    """A scan records its evaluations on the jobs it wrote, and once for the fleet that it looked at
    every active job (an idle scan does not rewrite every job row)."""
    times = [job.last_checked_timestamp]
    if job.is_active and fleet_checked is not None and fleet_checked >= job.created_at:
        times.append(fleet_checked)
    return max((t for t in times if t is not None), default=None)


def _job_row(job: ExpectedJobRow, fleet_checked: datetime | None) -> dict[str, Any]:
    return {
        "agent_id": job.agent_id_responsible,
        "database_name": job.database_name,
        "expected_hour_utc": job.expected_hour_utc,
        "expected_minute_utc": job.expected_minute_utc,
        "window_minutes": job.window_minutes,
        "timezone": job.timezone,
        "staged_file_name": job.staged_file_name,
        "content_change": job.content_change,
        "is_active": job.is_active,
        "company_name": job.company_name,
        "city": job.city,
        "neighborhood": job.neighborhood,
        "current_status": job.current_status,
        "last_checked_timestamp": iso(_last_checked(job, fleet_checked)),
        "last_successful_backup_timestamp": iso(job.last_successful_backup_timestamp),
        "previous_successful_hash_global": job.previous_successful_hash_global,
        "created_at": iso(job.created_at),
    }


def entry_rows(
    database: Database, agent: str | None, db: str | None, since: date | None
) -> list[dict[str, Any]]:
    with database.sessions() as session:
        pairs = repository.list_entries(session, repository.EntryFilter(agent, db, since))
    return [_entry_row(entry, job) for entry, job in pairs]


def _entry_row(entry: BackupEntryRow, job: ExpectedJobRow) -> dict[str, Any]:
    row: dict[str, Any] = {
        "entry_id": entry.id,
        "agent_id": job.agent_id_responsible,
        "database_name": job.database_name,
        "cycle_expected_at": iso(entry.cycle_expected_at),
        "status": entry.status,
        "message": entry.message,
        "report_file": entry.report_file,
    }
    for column in BackupEntryRow.__table__.columns.keys():  # noqa: SIM118
        if column in ("id", "job_id", "cycle_expected_at", "status", "message", "report_file"):
            continue
        value = getattr(entry, column)
        row[column] = iso(value) if isinstance(value, datetime) else value
    return row


def latest_entries(database: Database, agent: str, jobs: list[tuple[str, int, int]]) -> list[dict[str, Any]]:
    """The latest entry of each of an agent's jobs (database, hour, minute) that has one."""
    with database.sessions() as session:
        pairs = repository.latest_entries_of_agent(session, agent)
    wanted = set(jobs)
    return [
        _entry_row(entry, job)
        for entry, job in pairs
        if (job.database_name, job.expected_hour_utc, job.expected_minute_utc) in wanted
    ]


def report_rows(database: Database) -> list[dict[str, Any]]:
    with database.sessions() as session:
        rows = repository.list_reports(session)
    return [
        {
            "agent_id": r.agent_id,
            "file_name": r.file_name,
            "accepted": r.accepted,
            "reason": r.reason,
            "operation_end_time": iso(r.operation_end_time),
            "archived_path": r.archived_path,
            "content_sha256": r.content_sha256,
            "size": r.size,
            "notes": r.notes,
            "ingested_at": iso(r.ingested_at),
        }
        for r in rows
    ]


def run_rows(runs: Sequence[PartitionRun]) -> list[dict[str, Any]]:
    return [
        {
            "partition": run.day.isoformat(),
            "run_id": run.run_id,
            "result": "ok" if run.success else "FAILED",
            "reports_accepted": run.ingested.accepted if run.ingested else None,
            "reports_rejected": run.ingested.rejected if run.ingested else None,
            "evaluated": run.evaluated,
            "written": run.written,
            "new_or_changed": run.changed,
            "still_open": run.still_open,
        }
        for run in runs
    ]


def status_counts(database: Database, days: Sequence[date]) -> list[dict[str, Any]]:
    """Entries per day and status for the days just scanned."""
    rows: list[dict[str, Any]] = []
    with database.sessions() as session:
        for day in sorted(set(days)):
            start, end = day_bounds(day)
            query = (
                sa.select(BackupEntryRow.status, sa.func.count())
                .where(BackupEntryRow.cycle_expected_at >= start, BackupEntryRow.cycle_expected_at < end)
                .group_by(BackupEntryRow.status)
            )
            counts = {status: count for status, count in session.execute(query)}
            rows.append({"day": day.isoformat()} | {s: counts.get(s, 0) for s in _STATUSES})
    return rows


_STATUSES = ["SUCCESS", "HASH_MISMATCH", "TRANSFER_INTEGRITY_FAILED", "FAILED", "MISSING"]
