"""Restore drills in PostgreSQL: which entries can be drilled, the drills recorded, and what the CLI,
the Dagster checks and the digest read back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from backup_pipeline.core.drills import DrillOutcome
from backup_pipeline.storage.entries import successes
from backup_pipeline.storage.orm import AlertRow, BackupEntryRow, ExpectedBackupRow, RestoreDrillRow


@dataclass(frozen=True)
class DrillTarget:
    """An entry to drill, with what the drill needs of its expected backup."""

    entry_id: int
    job_id: int
    agent_id: str
    database_name: str
    name: str  # the expected backup's name: with agent and database, its identity
    grace_minutes: int
    cycle_expected_at: datetime
    status: str
    staged_file_name: str | None
    staged_sha256: str | None
    staged_size: int | None
    alerting: dict[str, Any]
    restore_drill: dict[str, Any]


def drill_targets(session: Session, entry_ids: Sequence[int]) -> list[DrillTarget]:
    """These entries (in the order given) with their expected backups."""
    if not entry_ids:
        return []
    rows = session.execute(
        sa.select(BackupEntryRow, ExpectedBackupRow)
        .join(ExpectedBackupRow, BackupEntryRow.job_id == ExpectedBackupRow.id)
        .where(BackupEntryRow.id.in_(list(entry_ids)))
    ).tuples()
    found = {entry.id: _target(entry, job) for entry, job in rows}
    return [found[i] for i in entry_ids if i in found]


def _target(entry: BackupEntryRow, job: ExpectedBackupRow) -> DrillTarget:
    return DrillTarget(
        entry_id=entry.id,
        job_id=job.id,
        agent_id=job.agent_id_responsible,
        database_name=job.database_name,
        name=job.name,
        grace_minutes=job.grace_minutes,
        cycle_expected_at=entry.cycle_expected_at,
        status=entry.status,
        staged_file_name=entry.staged_file_name,
        staged_sha256=entry.server_calculated_staged_hash,
        staged_size=entry.server_calculated_staged_size,
        alerting=job.alerting or {},
        restore_drill=job.restore_drill or {},
    )


def chosen_entries(
    session: Session, agent: str | None, database: str | None, cycle: datetime | None, as_of: datetime
) -> list[int]:
    """A person's choice: the entry of that cycle, or each matching backup's latest good entry
    (SUCCESS or HASH_MISMATCH, measured) up to `as_of`."""
    query = (
        sa.select(BackupEntryRow.id)
        .join(ExpectedBackupRow, BackupEntryRow.job_id == ExpectedBackupRow.id)
        .where(BackupEntryRow.cycle_expected_at <= as_of)
    )
    if agent:
        query = query.where(ExpectedBackupRow.agent_id_responsible == agent)
    if database:
        query = query.where(ExpectedBackupRow.database_name == database)
    if cycle is not None:
        return list(session.execute(query.where(BackupEntryRow.cycle_expected_at == cycle)).scalars())
    query = (
        query.where(
            BackupEntryRow.status.in_(successes()),
            BackupEntryRow.server_calculated_staged_hash.is_not(None),
        )
        .distinct(BackupEntryRow.job_id)
        .order_by(BackupEntryRow.job_id, BackupEntryRow.cycle_expected_at.desc())
    )
    return list(session.execute(query).scalars())


@dataclass(frozen=True)
class DueRow:
    job_id: int
    restore_drill: dict[str, Any]
    entry_id: int
    cycle_expected_at: datetime
    staged_size: int | None
    last_drilled_at: datetime | None
    last_duration: float | None


def drill_candidates(session: Session, as_of: datetime) -> list[DueRow]:
    """Per active expected backup: its latest good entry up to `as_of` when that entry has not been
    drilled yet, with the backup's latest drill (when, how long)."""
    statement = sa.text(
        """
        SELECT j.id, j.restore_drill, e.id, e.cycle_expected_at, e.server_calculated_staged_size,
               d.as_of, d.duration_seconds
        FROM expected_jobs j
        CROSS JOIN LATERAL (
            SELECT e.id, e.cycle_expected_at, e.server_calculated_staged_size FROM backup_entries e
            WHERE e.job_id = j.id AND e.status IN :successes AND e.cycle_expected_at <= :as_of
              AND e.server_calculated_staged_hash IS NOT NULL
            ORDER BY e.cycle_expected_at DESC LIMIT 1
        ) e
        LEFT JOIN LATERAL (
            SELECT d.as_of, d.duration_seconds FROM restore_drills d WHERE d.job_id = j.id
            ORDER BY d.as_of DESC, d.id DESC LIMIT 1
        ) d ON true
        WHERE j.is_active AND NOT EXISTS (SELECT 1 FROM restore_drills x WHERE x.entry_id = e.id)
        ORDER BY j.id
        """
    ).bindparams(successes())
    return [DueRow(*row) for row in session.execute(statement, {"as_of": as_of})]


def latest_attempt(session: Session, entry_id: int) -> RestoreDrillRow | None:
    return session.execute(
        sa.select(RestoreDrillRow)
        .where(RestoreDrillRow.entry_id == entry_id)
        .order_by(RestoreDrillRow.attempt.desc())
        .limit(1)
    ).scalar_one_or_none()


def previous_restored(session: Session, job_id: int, before: datetime) -> RestoreDrillRow | None:
    """The backup's latest drill that restored, of a cycle before `before` (so a backfill compares
    the same way in any order)."""
    return session.execute(
        sa.select(RestoreDrillRow)
        .where(
            RestoreDrillRow.job_id == job_id,
            RestoreDrillRow.outcome == DrillOutcome.RESTORED.value,
            RestoreDrillRow.cycle_expected_at < before,
        )
        .order_by(RestoreDrillRow.cycle_expected_at.desc(), RestoreDrillRow.attempt.desc())
        .limit(1)
    ).scalar_one_or_none()


def record_drill(session: Session, values: dict[str, Any]) -> int | None:
    """Insert one drill (in the caller's transaction); None when that attempt is already recorded."""
    statement = (
        insert(RestoreDrillRow).values(values).on_conflict_do_nothing(constraint="uq_drill_attempt")
    ).returning(RestoreDrillRow.id)
    return session.execute(statement).scalar_one_or_none()


@dataclass(frozen=True)
class DrillAlertContext:
    last_failure: datetime | None  # cycle of the backup's latest RESTORE_FAILED alert
    last_failure_held: bool
    last_recovery: datetime | None  # cycle of its latest RESTORE_RECOVERED alert
    previous_pass: datetime | None  # its latest restored drill's cycle before the one drilled


def drill_alert_context(
    session: Session, job_id: int, cycle: datetime, drill_id: int, *, slow: bool = False
) -> DrillAlertContext:
    """What a restored drill's recovery depends on: from RESTORE_FAILED (restored at all), or with
    `slow`, from RESTORE_SLOW (restored within its objective)."""
    problem, recovered = (
        ("RESTORE_SLOW", "RESTORE_SLOW_RECOVERED")
        if slow
        else (
            "RESTORE_FAILED",
            "RESTORE_RECOVERED",
        )
    )
    failure = session.execute(
        sa.select(AlertRow.cycle_expected_at, AlertRow.held_by)
        .where(AlertRow.job_id == job_id, AlertRow.event == problem)
        .order_by(AlertRow.cycle_expected_at.desc(), AlertRow.id.desc())
        .limit(1)
    ).first()
    recovery = session.execute(
        sa.select(sa.func.max(AlertRow.cycle_expected_at)).where(
            AlertRow.job_id == job_id, AlertRow.event == recovered
        )
    ).scalar()
    conditions = [
        RestoreDrillRow.job_id == job_id,
        RestoreDrillRow.outcome == DrillOutcome.RESTORED.value,
        RestoreDrillRow.id != drill_id,
        RestoreDrillRow.cycle_expected_at < cycle,
    ]
    if slow:
        conditions.append(RestoreDrillRow.slow.is_(False))
    passed = session.execute(
        sa.select(sa.func.max(RestoreDrillRow.cycle_expected_at)).where(*conditions)
    ).scalar()
    return DrillAlertContext(
        last_failure=failure[0] if failure else None,
        last_failure_held=bool(failure and failure[1]),
        last_recovery=recovery,
        previous_pass=passed,
    )


# ---------------------------------------------------------------- reading back


def latest_drills_of_entries(session: Session, entry_ids: Sequence[int]) -> dict[int, RestoreDrillRow]:
    """Each entry's latest drill attempt, for the entries that have one."""
    if not entry_ids:
        return {}
    rows = session.execute(
        sa.select(RestoreDrillRow)
        .where(RestoreDrillRow.entry_id.in_(list(entry_ids)))
        .distinct(RestoreDrillRow.entry_id)
        .order_by(RestoreDrillRow.entry_id, RestoreDrillRow.attempt.desc())
    ).scalars()
    return {row.entry_id: row for row in rows}


def latest_drills_of_agent(session: Session, agent: str) -> list[tuple[RestoreDrillRow, ExpectedBackupRow]]:
    """Each active expected backup of the agent with its latest drill (by cycle, then attempt)."""
    query = (
        sa.select(RestoreDrillRow, ExpectedBackupRow)
        .join(ExpectedBackupRow, RestoreDrillRow.job_id == ExpectedBackupRow.id)
        .where(ExpectedBackupRow.agent_id_responsible == agent, ExpectedBackupRow.is_active)
        .distinct(RestoreDrillRow.job_id)
        .order_by(
            RestoreDrillRow.job_id,
            RestoreDrillRow.cycle_expected_at.desc(),
            RestoreDrillRow.attempt.desc(),
        )
    )
    return [(drill, job) for drill, job in session.execute(query).tuples()]


def drills_finished_between(
    session: Session, start: datetime, end: datetime
) -> list[tuple[RestoreDrillRow, ExpectedBackupRow]]:
    """The drills that ran as of an instant in [start, end) (the digest's day)."""
    query = (
        sa.select(RestoreDrillRow, ExpectedBackupRow)
        .join(ExpectedBackupRow, RestoreDrillRow.job_id == ExpectedBackupRow.id)
        .where(RestoreDrillRow.as_of >= start, RestoreDrillRow.as_of < end)
        .order_by(ExpectedBackupRow.agent_id_responsible, ExpectedBackupRow.database_name, RestoreDrillRow.id)
    )
    return [(drill, job) for drill, job in session.execute(query).tuples()]


def recent_restores(session: Session, limit: int = 200) -> list[tuple[int, float]]:
    """The staged bytes and duration of the latest drills that restored: what the restore rate is
    measured on (`core.drills.measured_cost`). Uses the `finished_at` index."""
    rows = session.execute(
        sa.select(RestoreDrillRow.staged_size, RestoreDrillRow.duration_seconds)
        .where(
            RestoreDrillRow.outcome == DrillOutcome.RESTORED.value, RestoreDrillRow.staged_size.is_not(None)
        )
        .order_by(RestoreDrillRow.finished_at.desc())
        .limit(limit)
    ).all()
    return [(int(size), float(seconds)) for size, seconds in rows]
