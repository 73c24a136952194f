"""Alerts and notifications in PostgreSQL: the size history and recovery context evaluation needs,
alerts, deliveries and attempts, in bulk."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from backup_pipeline.core.domain import PROBLEM_STATUSES
from backup_pipeline.storage.entries import successes
from backup_pipeline.storage.orm import (
    AlertRow,
    ExpectedBackupRow,
    NotificationAttemptRow,
    NotificationDeliveryRow,
)

# ---------------------------------------------------------------- evaluation side


def size_history(
    session: Session, job_ids: Sequence[int], before: datetime, depth: int
) -> list[tuple[int, datetime, int, int]]:
    """(job, cycle, staged size, rank) of each job's last `depth` successful cycles before `before`,
    rank 1 being the latest."""
    if not job_ids:
        return []
    # One short walk of ix_entry_job_success per job, however long the history.
    statement = sa.text(
        """
        SELECT j.job_id, h.cycle_expected_at, h.size, h.rank
        FROM unnest(CAST(:ids AS integer[])) AS j(job_id)
        CROSS JOIN LATERAL (
            SELECT e.cycle_expected_at, e.server_calculated_staged_size AS size,
                   row_number() OVER (ORDER BY e.cycle_expected_at DESC) AS rank
            FROM backup_entries e
            WHERE e.job_id = j.job_id
              AND e.status IN :successes
              AND e.superseded_at IS NULL
              AND e.cycle_expected_at < :before
              AND e.server_calculated_staged_size IS NOT NULL
            ORDER BY e.cycle_expected_at DESC
            LIMIT :depth
        ) h
        """
    ).bindparams(successes())
    rows = session.execute(statement, {"ids": list(job_ids), "before": before, "depth": depth})
    return [(job_id, cycle, size, rank) for job_id, cycle, size, rank in rows]


def insert_alerts(session: Session, rows: Sequence[dict[str, Any]]) -> int:
    """Record alerts; one per (job, cycle, event), so a repeated one is ignored. Returns how many new."""
    if not rows:
        return 0
    statement = insert(AlertRow).on_conflict_do_nothing(constraint="uq_alert").returning(AlertRow.id)
    return len(session.execute(statement, list(rows)).all())


@dataclass(frozen=True)
class RecoveryContext:
    """What decides whether a job's successful cycle ends a notified problem."""

    last_problem: datetime | None
    last_problem_event: str | None
    last_problem_held: bool
    last_recovery: datetime | None
    previous_success: datetime | None


def recovery_contexts(
    session: Session, cycles: Sequence[tuple[int, datetime]]
) -> dict[tuple[int, datetime], RecoveryContext]:
    """Per (job, cycle being written): the job's latest problem and recovery alerts, and its last
    successful cycle before that cycle (superseded cycles left out)."""
    if not cycles:
        return {}
    # Most jobs never had a problem alert: only those that did need the full look.
    troubled = set(
        session.execute(
            sa.text(
                "SELECT DISTINCT job_id FROM alerts WHERE job_id = ANY(CAST(:ids AS integer[])) "
                "AND event IN :problems"
            ).bindparams(sa.bindparam("problems", sorted(PROBLEM_STATUSES), expanding=True)),
            {"ids": sorted({job_id for job_id, _ in cycles})},
        ).scalars()
    )
    wanted = [(job_id, at) for job_id, at in cycles if job_id in troubled]
    ids, ats = [j for j, _ in wanted], [at for _, at in wanted]
    if not ids:
        return {}
    statement = sa.text(
        """
        SELECT c.job_id, c.t, p.cycle_expected_at, p.event, p.held_by IS NOT NULL, r.cycle_expected_at, s.at
        FROM unnest(CAST(:ids AS integer[]), CAST(:ats AS timestamptz[])) AS c(job_id, t)
        LEFT JOIN LATERAL (
            SELECT a.cycle_expected_at, a.event, a.held_by FROM alerts a
            JOIN backup_entries pe ON pe.id = a.entry_id AND pe.superseded_at IS NULL
            WHERE a.job_id = c.job_id AND a.event IN :problems
            ORDER BY a.cycle_expected_at DESC, a.id DESC LIMIT 1
        ) p ON true
        LEFT JOIN LATERAL (
            SELECT max(a.cycle_expected_at) AS cycle_expected_at FROM alerts a
            WHERE a.job_id = c.job_id AND a.event = 'RECOVERED'
        ) r ON true
        LEFT JOIN LATERAL (
            SELECT max(e.cycle_expected_at) AS at FROM backup_entries e
            WHERE e.job_id = c.job_id AND e.status IN :successes AND e.superseded_at IS NULL
              AND e.cycle_expected_at < c.t
        ) s ON true
        """
    ).bindparams(sa.bindparam("problems", sorted(PROBLEM_STATUSES), expanding=True), successes())
    rows = session.execute(statement, {"ids": ids, "ats": ats})
    return {
        (job_id, at): RecoveryContext(problem_at, event, bool(held), recovered_at, success_at)
        for job_id, at, problem_at, event, held, recovered_at, success_at in rows
    }


# ---------------------------------------------------------------- notification side


def undispatched_alerts(session: Session) -> list[tuple[AlertRow, ExpectedBackupRow]]:
    query = (
        sa.select(AlertRow, ExpectedBackupRow)
        .join(ExpectedBackupRow, AlertRow.job_id == ExpectedBackupRow.id)
        .where(AlertRow.dispatched_at.is_(None))
        .order_by(AlertRow.id)
    )
    return [(alert, job) for alert, job in session.execute(query).tuples()]


def create_deliveries(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        session.execute(
            insert(NotificationDeliveryRow).on_conflict_do_nothing(constraint="uq_delivery"), list(rows)
        )


def mark_dispatched(session: Session, alert_ids: Sequence[int], at: datetime) -> None:
    if alert_ids:
        session.execute(sa.update(AlertRow).where(AlertRow.id.in_(list(alert_ids))).values(dispatched_at=at))


def due_deliveries(
    session: Session,
) -> list[tuple[NotificationDeliveryRow, AlertRow, ExpectedBackupRow]]:
    """Deliveries still to send (new, or failed last time), oldest first."""
    query = (
        sa.select(NotificationDeliveryRow, AlertRow, ExpectedBackupRow)
        .join(AlertRow, NotificationDeliveryRow.alert_id == AlertRow.id)
        .join(ExpectedBackupRow, AlertRow.job_id == ExpectedBackupRow.id)
        .where(NotificationDeliveryRow.state.in_(("pending", "failed")))
        .order_by(NotificationDeliveryRow.target_key, AlertRow.cycle_expected_at, AlertRow.id)
    )
    return [(d, a, j) for d, a, j in session.execute(query).tuples()]


def record_attempts(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        session.execute(sa.insert(NotificationAttemptRow), list(rows))


def update_deliveries(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Bulk update by primary key: each row holds `id` and the new values."""
    if rows:
        session.execute(sa.update(NotificationDeliveryRow), list(rows))


@dataclass(frozen=True)
class LogRow:
    attempt: NotificationAttemptRow
    delivery: NotificationDeliveryRow | None
    alert: AlertRow | None
    backup: ExpectedBackupRow | None


def attempt_log(session: Session, limit: int) -> list[LogRow]:
    """The latest notification attempts, newest first, with what they were about."""
    query = (
        sa.select(NotificationAttemptRow, NotificationDeliveryRow, AlertRow, ExpectedBackupRow)
        .outerjoin(NotificationDeliveryRow, NotificationAttemptRow.delivery_id == NotificationDeliveryRow.id)
        .outerjoin(AlertRow, NotificationDeliveryRow.alert_id == AlertRow.id)
        .outerjoin(ExpectedBackupRow, AlertRow.job_id == ExpectedBackupRow.id)
        .order_by(NotificationAttemptRow.attempted_at.desc(), NotificationAttemptRow.id.desc())
        .limit(limit)
    )
    return [LogRow(*row) for row in session.execute(query).tuples()]


def alerts_of(session: Session, limit: int) -> list[tuple[AlertRow, ExpectedBackupRow]]:
    query = (
        sa.select(AlertRow, ExpectedBackupRow)
        .join(ExpectedBackupRow, AlertRow.job_id == ExpectedBackupRow.id)
        .order_by(AlertRow.id.desc())
        .limit(limit)
    )
    return [(a, j) for a, j in session.execute(query).tuples()]


def active_backup_count(session: Session) -> int:
    return session.execute(sa.select(sa.func.count()).where(ExpectedBackupRow.is_active)).scalar_one()


def configured_backup_targets(session: Session) -> list[tuple[int, list[str]]]:
    """(expected backup id, notify URLs) of every expected backup whose alerting lists targets."""
    rows = session.execute(
        sa.select(ExpectedBackupRow.id, ExpectedBackupRow.alerting["notify"]).where(
            ExpectedBackupRow.alerting.has_key("notify")
        )
    )
    return [(job_id, list(urls or [])) for job_id, urls in rows]


def delivery_states(session: Session, alert_ids: Sequence[int]) -> dict[int, list[tuple[str, str]]]:
    """Per alert, (target label, state) of each of its deliveries, in creation order."""
    if not alert_ids:
        return {}
    rows = session.execute(
        sa.select(
            NotificationDeliveryRow.alert_id, NotificationDeliveryRow.target, NotificationDeliveryRow.state
        )
        .where(NotificationDeliveryRow.alert_id.in_(list(alert_ids)))
        .order_by(NotificationDeliveryRow.id)
    )
    states: dict[int, list[tuple[str, str]]] = {}
    for alert_id, target, state in rows:
        states.setdefault(alert_id, []).append((target, state))
    return states
