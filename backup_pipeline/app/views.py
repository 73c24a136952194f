"""What the CLI shows, as rows (dicts of plain values): built from storage's queries, rendered by
`app.render` as tables or printed as JSON."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from backup_pipeline.config.jobs_file import schedule_of
from backup_pipeline.core.cycles import day_bounds
from backup_pipeline.core.domain import EntryStatus
from backup_pipeline.storage import alerts as stored_alerts
from backup_pipeline.storage import drills, entries, expected_backups, reports
from backup_pipeline.storage.database import Database
from backup_pipeline.storage.orm import BackupEntryRow, ExpectedBackupRow

if TYPE_CHECKING:
    from backup_pipeline.app.runner import PartitionRun
    from backup_pipeline.drill.run import DrillResult

STATUS_COLUMNS = [
    "agent_id",
    "database_name",
    "name",
    "schedule",
    "current_status",
    "last_checked_timestamp",
    "last_successful_backup_timestamp",
    "previous_successful_hash_global",
]
BACKUP_COLUMNS = [
    "agent_id",
    "database_name",
    "name",
    "schedule",
    "early_minutes",
    "grace_minutes",
    "timezone",
    "content_change",
    "is_active",
    "current_status",
]
ENTRY_COLUMNS = [
    "agent_id",
    "database_name",
    "name",
    "cycle_expected_at",
    "status",
    "restore_drill",
    "message",
    "superseded_at",
]
# On a terminal too narrow for every column, the columns kept, most important first.
STATUS_KEEP = [
    "agent_id",
    "database_name",
    "current_status",
    "last_successful_backup_timestamp",
    "name",  # tells apart two backups of one database
    "last_checked_timestamp",
    "schedule",
    "previous_successful_hash_global",
]
BACKUP_KEEP = ["agent_id", "database_name", "current_status", "is_active", "name", "schedule"]
ENTRY_KEEP = ["agent_id", "database_name", "status", "cycle_expected_at", "message", "restore_drill"]
REPORT_COLUMNS = ["agent_id", "file_name", "accepted", "operation_end_time", "ingested_at", "reason"]
REPORT_KEEP = ["file_name", "accepted", "reason", "operation_end_time", "ingested_at"]
RUN_COLUMNS = [
    "partition",
    "run_id",
    "result",
    "reports_accepted",
    "reports_rejected",
    "evaluated",
    "written",
    "new_or_changed",
    "still_open",
]
RUN_KEEP = ["partition", "result", "evaluated", "new_or_changed", "still_open", "reports_accepted"]
_STATUSES = [status.value for status in reversed(EntryStatus)]


def iso(value: datetime | None) -> str | None:
    """ISO-8601 in UTC with a Z, as every CLI timestamp."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def backup_rows(database: Database, *, active_only: bool) -> list[dict[str, Any]]:
    with database.sessions() as session:
        backups = expected_backups.all_backups(session)
        fleet_checked = expected_backups.fleet_checked_at(session)
    return [_backup_row(b, fleet_checked) for b in backups if b.is_active or not active_only]


# Shown as they are stored (the rest are renamed or are timestamps, shown in ISO-8601 UTC).
_BACKUP_FIELDS = (
    "database_name",
    "name",
    "expected_hour_utc",
    "expected_minute_utc",
    "early_minutes",
    "grace_minutes",
    "timezone",
    "staged_file_name",
    "content_change",
    "is_active",
    "company_name",
    "city",
    "neighborhood",
    "current_status",
)


def _backup_row(backup: ExpectedBackupRow, fleet_checked: datetime | None) -> dict[str, Any]:
    return {
        "agent_id": backup.agent_id_responsible,
        **{field: getattr(backup, field) for field in _BACKUP_FIELDS},
        "schedule": _schedule_text(backup),
        "cron": backup.schedule,
        "last_checked_timestamp": iso(expected_backups.last_checked(backup, fleet_checked)),
        "last_successful_backup_timestamp": iso(backup.last_successful_backup_timestamp),
        "previous_successful_hash_global": backup.previous_successful_hash_global,
        "created_at": iso(backup.created_at),
    }


def _schedule_text(backup: ExpectedBackupRow) -> str:
    """Readable, e.g. "At 02:30 on Sunday (Europe/Paris)"; a stored expression the running version
    cannot read (an older or newer cron library) is shown as stored rather than failing the listing."""
    try:
        return schedule_of(backup).text
    except ValueError:
        return f"cron {backup.schedule!r} ({backup.timezone})"


def entry_rows(
    database: Database, agent: str | None, db: str | None, since: date | None
) -> list[dict[str, Any]]:
    with database.sessions() as session:
        pairs = entries.list_entries(session, entries.EntryFilter(agent, db, since))
        drilled = drills.latest_drills_of_entries(session, [entry.id for entry, _ in pairs])
    return [_entry_row(entry, backup) | _entry_drill(drilled.get(entry.id)) for entry, backup in pairs]


def _entry_drill(drill: Any) -> dict[str, Any]:
    """The entry's latest restore drill, if it was drilled."""
    return {
        "restore_drill": drill.outcome if drill else None,
        "restore_drill_reason": (drill.comparison or drill.reason) if drill else None,
        "restore_drill_at": iso(drill.finished_at) if drill else None,
        "restore_drill_id": drill.id if drill else None,
    }


def _entry_row(entry: BackupEntryRow, backup: ExpectedBackupRow) -> dict[str, Any]:
    row: dict[str, Any] = {
        "entry_id": entry.id,
        "agent_id": backup.agent_id_responsible,
        "database_name": backup.database_name,
        "name": backup.name,
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


def report_rows(database: Database) -> list[dict[str, Any]]:
    with database.sessions() as session:
        rows = reports.list_reports(session)
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
            counts = entries.status_counts(session, *day_bounds(day))
            rows.append({"day": day.isoformat()} | {s: counts.get(s, 0) for s in _STATUSES})
    return rows


def attempt_rows(database: Database, limit: int) -> list[dict[str, Any]]:
    with database.sessions() as session:
        rows = stored_alerts.attempt_log(session, limit)
    return [
        {
            "attempted_at": iso(r.attempt.attempted_at),
            "target": r.attempt.target,
            "target_id": r.attempt.target_key[:8],
            "kind": r.attempt.kind,
            "agent_id": r.backup.agent_id_responsible if r.backup else None,
            "database_name": r.backup.database_name if r.backup else None,
            "cycle_expected_at": iso(r.alert.cycle_expected_at) if r.alert else None,
            "event": r.alert.event if r.alert else None,
            "result": "sent" if r.attempt.ok else "failed",
            "error": r.attempt.error,
            "dagster_run_id": r.attempt.dagster_run_id,
        }
        for r in rows
    ]


def alert_rows(database: Database, limit: int) -> list[dict[str, Any]]:
    with database.sessions() as session:
        pairs = stored_alerts.alerts_of(session, limit)
        states = stored_alerts.delivery_states(session, [a.id for a, _ in pairs])
    return [
        {
            "raised_at": iso(alert.raised_at),
            "agent_id": backup.agent_id_responsible,
            "database_name": backup.database_name,
            "cycle_expected_at": iso(alert.cycle_expected_at),
            "event": alert.event,
            "held_by": alert.held_by,
            "deliveries": "; ".join(f"{target}: {state}" for target, state in states.get(alert.id, []))
            or ("held" if alert.held_by else "none"),
            "message": alert.message,
        }
        for alert, backup in pairs
    ]


DRILL_COLUMNS = [
    "agent_id",
    "database_name",
    "cycle_expected_at",
    "outcome",
    "engine",
    "tables",
    "rows",
    "bytes",
    "duration_seconds",
    "reason",
]
DRILL_KEEP = ["agent_id", "database_name", "cycle_expected_at", "outcome", "reason", "bytes", "rows"]
ATTEMPT_COLUMNS = [
    "attempted_at",
    "target",
    "kind",
    "agent_id",
    "database_name",
    "cycle_expected_at",
    "event",
    "result",
    "error",
]
ATTEMPT_KEEP = ["attempted_at", "target", "event", "result", "agent_id", "database_name", "error"]
ALERT_COLUMNS = [
    "raised_at",
    "agent_id",
    "database_name",
    "cycle_expected_at",
    "event",
    "held_by",
    "deliveries",
]
ALERT_KEEP = ["raised_at", "agent_id", "database_name", "event", "deliveries", "cycle_expected_at"]
TARGET_COLUMNS = ["target", "target_id", "configured_in", "result", "error"]
TARGET_KEEP = ["target", "result", "error", "configured_in"]


def _slow(r: DrillResult) -> str:
    took = f"{r.duration_seconds:.0f} s" if r.duration_seconds is not None else "?"
    return f"slow: the restore took {took}, over its objective of {r.objective_seconds or 0:.0f} s"


def drill_rows(results: Sequence[DrillResult]) -> list[dict[str, Any]]:
    """One row per drill asked for: what ran, or why nothing did (`note`)."""
    rows = []
    for r in results:
        note = r.skipped
        rows.append(
            {
                "agent_id": r.agent_id,
                "database_name": r.database_name,
                "cycle_expected_at": iso(r.cycle_expected_at),
                "outcome": r.outcome,
                "engine": r.engine,
                "reason": r.comparison if r.shrank else _slow(r) if r.slow else r.reason,
                "tables": r.tables,
                "rows": r.rows,
                "bytes": r.bytes,
                "duration_seconds": round(r.duration_seconds, 3) if r.duration_seconds is not None else None,
                "finished_at": iso(r.finished_at) if r.finished_at is not None else None,
                "shrank": r.shrank,
                "detected_kind": r.detected_kind,
                "failing_statement": r.failing_statement,
                "amcheck": r.amcheck,
                "checks": r.checks,
                "objective_seconds": r.objective_seconds,
                "slow": r.slow,
                "attempt": r.attempt,
                "drill_id": r.drill_id,
                "tool_versions": r.tool_versions,
                "alerts": r.alerts,
                "note": note,
            }
        )
    return rows
