"""What the Prometheus exporter and the status badges read, in bulk: a scrape costs the same few
queries whatever the fleet's size (no query per expected backup), in one consistent snapshot."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.orm import Session

from backup_pipeline.storage.entries import successes
from backup_pipeline.storage.expected_backups import fleet_checked_at, last_checked
from backup_pipeline.storage.orm import ExpectedBackupRow
from backup_pipeline.storage.scan_records import ScanOutcome


class BackupState(NamedTuple):
    """One active expected backup as the exporter shows it (a tuple: a scrape reads thousands)."""

    agent_id: str
    database_name: str
    name: str  # the expected backup's identity beside agent and database
    schedule: str | None  # a cron expression read in `timezone`, or None: daily at hour:minute UTC
    timezone: str
    expected_hour_utc: int | None
    expected_minute_utc: int | None
    early_minutes: int
    grace_minutes: int
    current_status: str
    created_at: datetime
    last_checked: datetime | None
    last_success: datetime | None
    latest_cycle_status: str | None  # the latest evaluated cycle's entry status
    latest_cycle_at: datetime | None
    last_staged_size: int | None  # of the latest successful cycle
    size_anomaly: str | None  # of the latest successful cycle: TOO_SMALL, TOO_LARGE or None


@dataclass(frozen=True)
class DrillState:
    """The latest restore drill of one active expected backup (one that has been drilled)."""

    agent_id: str
    database_name: str
    name: str
    schedule: str | None
    timezone: str
    expected_hour_utc: int | None
    expected_minute_utc: int | None
    outcome: str  # core.drills.DrillOutcome
    shrank: bool
    finished_at: datetime
    duration_seconds: float
    rows: int | None
    bytes: int | None
    slow: bool = False  # restored, slower than its objective
    objective_seconds: float | None = None  # the restore-time objective in force, if any


@dataclass(frozen=True)
class LastScan:
    started_at: datetime
    ended_at: datetime
    outcome: str


@dataclass(frozen=True)
class ScanTotals:
    last: LastScan | None  # the latest scan run that ended, however it ended
    last_success_end: datetime | None
    runs: dict[str, int]  # scan runs per outcome (running ones included)


@dataclass(frozen=True)
class FleetSnapshot:
    backups: list[BackupState]
    scans: ScanTotals
    reports: dict[bool, int]  # recorded report files, accepted (True) or rejected
    deliveries: dict[str, int]  # notification deliveries per state
    drills: list[DrillState]  # the latest drill of each drilled active expected backup


# The latest entry of every active expected backup, and (only when that one is not a success, which
# PostgreSQL checks before looking) its latest successful one: two short index descents per expected
# backup at most, one for a healthy one.
_BACKUPS = sa.text(
    """
    SELECT j.agent_id_responsible, j.database_name, j.name, j.schedule, j.timezone, j.expected_hour_utc,
           j.expected_minute_utc, j.early_minutes, j.grace_minutes, j.current_status, j.created_at,
           j.is_active, j.last_checked_timestamp,
           j.last_successful_backup_timestamp, latest.status, latest.cycle_expected_at,
           CASE WHEN latest.status IN :successes THEN latest.size ELSE earlier.size END,
           CASE WHEN latest.status IN :successes THEN latest.size_anomaly ELSE earlier.size_anomaly END
    FROM expected_jobs j
    LEFT JOIN LATERAL (
        SELECT e.status, e.cycle_expected_at, e.server_calculated_staged_size AS size, e.size_anomaly
        FROM backup_entries e WHERE e.job_id = j.id ORDER BY e.cycle_expected_at DESC LIMIT 1
    ) latest ON true
    LEFT JOIN LATERAL (
        SELECT e.server_calculated_staged_size AS size, e.size_anomaly FROM backup_entries e
        WHERE latest.status NOT IN :successes AND e.job_id = j.id AND e.status IN :successes
        ORDER BY e.cycle_expected_at DESC LIMIT 1
    ) earlier ON true
    WHERE j.is_active
    ORDER BY j.agent_id_responsible, j.database_name, j.name
    """
).bindparams(successes())


# The latest drill (the last attempt of the latest drilled cycle) of each active expected backup that has
# one: one index descent per expected backup.
_DRILLS = sa.text(
    """
    SELECT j.agent_id_responsible, j.database_name, j.name, j.schedule, j.timezone, j.expected_hour_utc,
           j.expected_minute_utc, d.outcome, d.shrank, d.finished_at, d.duration_seconds, d.rows, d.bytes,
           d.slow, d.objective_seconds
    FROM expected_jobs j
    JOIN LATERAL (
        SELECT * FROM restore_drills r WHERE r.job_id = j.id
        ORDER BY r.as_of DESC, r.finished_at DESC LIMIT 1
    ) d ON true
    WHERE j.is_active
    ORDER BY j.agent_id_responsible, j.database_name, j.name
    """
)


def fleet_snapshot(session: Session) -> FleetSnapshot:
    """Everything a scrape exports, read in one repeatable-read transaction so that totals and
    per-backup series agree."""
    session.connection(execution_options={"isolation_level": "REPEATABLE READ", "postgresql_readonly": True})
    fleet_checked = fleet_checked_at(session)
    backups = [_backup_state(row, fleet_checked) for row in session.execute(_BACKUPS)]
    snapshot = FleetSnapshot(
        backups,
        _scan_totals(session),
        _report_counts(session),
        _delivery_counts(session),
        [DrillState(*row) for row in session.execute(_DRILLS)],
    )
    session.rollback()
    return snapshot


def _backup_state(row: Any, fleet_checked: datetime | None) -> BackupState:
    (agent, database, name, schedule, zone, hour, minute, early, grace, status, *rest) = row
    created, _active, _checked, success, cycle_status, cycle_at, size, anomaly = rest
    return BackupState(
        agent_id=agent,
        database_name=database,
        name=name,
        schedule=schedule,
        timezone=zone,
        expected_hour_utc=hour,
        expected_minute_utc=minute,
        early_minutes=early,
        grace_minutes=grace,
        current_status=status,
        created_at=created,
        last_checked=last_checked(row, fleet_checked),
        last_success=success,
        latest_cycle_status=cycle_status,
        latest_cycle_at=cycle_at,
        last_staged_size=size,
        size_anomaly=anomaly,
    )


def _scan_totals(session: Session) -> ScanTotals:
    runs: dict[str, int] = {}
    last_success_end = None
    for outcome, count, ended in session.execute(
        sa.text("SELECT outcome, count(*), max(ended_at) FROM scan_records GROUP BY outcome")
    ):
        runs[outcome] = count
        if outcome == ScanOutcome.SUCCEEDED.value:
            last_success_end = ended
    last = session.execute(
        sa.text(
            "SELECT started_at, ended_at, outcome FROM scan_records WHERE ended_at IS NOT NULL "
            "ORDER BY ended_at DESC LIMIT 1"
        )
    ).first()
    return ScanTotals(LastScan(*last) if last else None, last_success_end, runs)


def _report_counts(session: Session) -> dict[bool, int]:
    rows = session.execute(sa.text("SELECT accepted, count(*) FROM status_reports GROUP BY accepted"))
    return {accepted: count for accepted, count in rows}


def _delivery_counts(session: Session) -> dict[str, int]:
    rows = session.execute(sa.text("SELECT state, count(*) FROM notification_deliveries GROUP BY state"))
    return {state: count for state, count in rows}


def current_statuses(session: Session, agent_id: str, database_name: str | None = None) -> Sequence[str]:
    """The current status of each active expected backup of an agent (or of one of its databases):
    what its status badge says. Empty when none is known."""
    query = sa.select(ExpectedBackupRow.current_status).where(
        ExpectedBackupRow.is_active, ExpectedBackupRow.agent_id_responsible == agent_id
    )
    if database_name is not None:
        query = query.where(ExpectedBackupRow.database_name == database_name)
    return list(session.execute(query).scalars())


def check_connection(session: Session) -> None:
    """Raise the driver's error when PostgreSQL cannot answer (the exporter's health check)."""
    session.execute(sa.text("SELECT 1"))
