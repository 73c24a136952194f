"""The rows the daily fleet digest is built from: a day's entries, the expected backups that day
owes, and each one's last success up to the end of the day."""

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
    backups: list[Any]  # id, agent, database
    entries: list[Any]  # job id, cycle, status, message, size, anomaly, median, ratio
    last_successes: list[Any]  # job id, when


def digest_rows(session: Session, start: datetime, end: datetime) -> DigestRows:
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
    # The day's expected backups: those with an entry, and the active ones whose cycle that day is
    # owed (its deadline is not before the backup was declared), as automatic scans see them.
    deadline = sa.cast(sa.literal(start), sa.DateTime(timezone=True)) + sa.func.make_interval(
        0,
        0,
        0,
        0,
        ExpectedBackupRow.expected_hour_utc,
        ExpectedBackupRow.expected_minute_utc + ExpectedBackupRow.window_minutes,
    )
    backups = session.execute(
        sa.select(
            ExpectedBackupRow.id, ExpectedBackupRow.agent_id_responsible, ExpectedBackupRow.database_name
        ).where(
            sa.or_(
                sa.and_(ExpectedBackupRow.is_active, deadline >= ExpectedBackupRow.created_at),
                ExpectedBackupRow.id.in_(with_entries),
            )
        )
    ).all()
    last_successes = session.execute(
        sa.select(
            BackupEntryRow.job_id,
            sa.func.coalesce(BackupEntryRow.agent_operation_end_time, BackupEntryRow.cycle_expected_at),
        )
        .where(
            BackupEntryRow.job_id.in_([b.id for b in backups]),
            BackupEntryRow.status.in_(successes()),
            BackupEntryRow.cycle_expected_at < end,
        )
        .distinct(BackupEntryRow.job_id)
        .order_by(BackupEntryRow.job_id, BackupEntryRow.cycle_expected_at.desc())
    ).all()
    return DigestRows(list(backups), list(entries), list(last_successes))
