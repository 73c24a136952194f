"""The rows the daily fleet digest is built from: a day's entries, the expected backups that may owe
cycles that day, and each one's last success up to the end of the day."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from backup_pipeline.storage.entries import successes
from backup_pipeline.storage.orm import BackupEntryRow, ExpectedBackupRow


@dataclass(frozen=True)
class DigestRows:
    backups: list[Any]  # the day's candidates: id, agent, database, is_active, created_at and timing
    entries: list[Any]  # job id, cycle, status, message, size, anomaly, median, ratio
    last_successes: list[Any]  # job id, when


def digest_rows(session: Session, start: datetime, end: datetime) -> DigestRows:
    """The day's entries (superseded ones left out), the expected backups that may owe cycles that
    day (the active ones, whose schedules the caller expands, and any with an entry), and each one's
    last success up to the end of the day."""
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
        ).where(
            BackupEntryRow.cycle_expected_at >= start,
            BackupEntryRow.cycle_expected_at < end,
            BackupEntryRow.superseded_at.is_(None),
        )
    ).all()
    with_entries = {row.job_id for row in entries}
    backups = session.execute(
        sa.select(
            ExpectedBackupRow.id,
            ExpectedBackupRow.agent_id_responsible.label("agent_id"),
            ExpectedBackupRow.database_name,
            ExpectedBackupRow.is_active,
            ExpectedBackupRow.created_at,
            ExpectedBackupRow.name,
            ExpectedBackupRow.expected_hour_utc,
            ExpectedBackupRow.expected_minute_utc,
            ExpectedBackupRow.schedule,
            ExpectedBackupRow.early_minutes,
            ExpectedBackupRow.grace_minutes,
            ExpectedBackupRow.timezone,
            ExpectedBackupRow.staged_file_name,
            ExpectedBackupRow.content_change,
        ).where(sa.or_(ExpectedBackupRow.is_active, ExpectedBackupRow.id.in_(with_entries)))
    ).all()
    last_successes = session.execute(
        sa.select(
            BackupEntryRow.job_id,
            sa.func.coalesce(BackupEntryRow.agent_operation_end_time, BackupEntryRow.cycle_expected_at),
        )
        .where(
            BackupEntryRow.job_id.in_([b.id for b in backups]),
            BackupEntryRow.status.in_(successes()),
            BackupEntryRow.superseded_at.is_(None),
            BackupEntryRow.cycle_expected_at < end,
        )
        .distinct(BackupEntryRow.job_id)
        .order_by(BackupEntryRow.job_id, BackupEntryRow.cycle_expected_at.desc())
    ).all()
    return DigestRows(list(backups), list(entries), list(last_successes))
