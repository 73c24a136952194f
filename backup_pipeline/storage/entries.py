"""Backup entries in PostgreSQL: one per expected backup and cycle, written in bulk, read back for
evaluation (previous successes), the CLI and the Dagster assets; and the expected backups' state
that follows their latest entry."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from backup_pipeline.core.domain import SUCCESS_STATUSES, BackupStatus, PreviousSuccess
from backup_pipeline.storage.orm import AlertRow, BackupEntryRow, ExpectedBackupRow

CycleKey = tuple[int, datetime]  # (job id, cycle instant): what an entry is unique on


def entry_stamps(
    session: Session, job_ids: Sequence[int] | None, first: datetime, last: datetime
) -> dict[CycleKey, datetime]:
    """When each job's (every job's, or these) entries with a cycle in [first, last) were last
    written, per cycle (a superseded entry is no entry: its cycle is owed if scheduled again)."""
    query = sa.select(
        BackupEntryRow.job_id, BackupEntryRow.cycle_expected_at, BackupEntryRow.updated_at
    ).where(
        BackupEntryRow.cycle_expected_at >= first,
        BackupEntryRow.cycle_expected_at < last,
        BackupEntryRow.superseded_at.is_(None),
    )
    if job_ids is not None:
        query = query.where(BackupEntryRow.job_id.in_(list(job_ids)))
    return {(job_id, cycle): at for job_id, cycle, at in session.execute(query)}


def entries_for_cycles(
    session: Session, job_ids: Sequence[int], first: datetime, last: datetime
) -> dict[CycleKey, BackupEntryRow]:
    """Existing entries of these jobs with a cycle in [first, last), superseded ones included, keyed
    by (job, cycle)."""
    rows = session.execute(
        sa.select(BackupEntryRow).where(
            BackupEntryRow.job_id.in_(job_ids),
            BackupEntryRow.cycle_expected_at >= first,
            BackupEntryRow.cycle_expected_at < last,
        )
    ).scalars()
    return {(row.job_id, row.cycle_expected_at): row for row in rows}


def supersede_entries(session: Session, entry_ids: Sequence[int], at: datetime) -> None:
    """Mark entries whose instant the backup's schedule no longer has (kept as history, out of
    statuses, digests and alerts); their alerts not yet sent are held."""
    if not entry_ids:
        return
    session.execute(
        sa.update(BackupEntryRow)
        .where(BackupEntryRow.id.in_(list(entry_ids)), BackupEntryRow.superseded_at.is_(None))
        .values(superseded_at=at, updated_at=sa.func.now())
    )
    session.execute(
        sa.update(AlertRow)
        .where(
            AlertRow.entry_id.in_(list(entry_ids)),
            AlertRow.dispatched_at.is_(None),
            AlertRow.held_by.is_(None),
        )
        .values(held_by=SUPERSEDED)
    )


SUPERSEDED = "superseded: the cycle is no longer in the backup's schedule"


def successes() -> sa.BindParameter[Any]:
    """The successful statuses as an expanding bind: PostgreSQL sees the same `IN (...)` list as the
    predicate of ix_entry_job_success, so the partial index serves these queries."""
    return sa.bindparam("successes", sorted(SUCCESS_STATUSES), expanding=True)


def previous_successes(
    session: Session, job_ids: Sequence[int], before: datetime
) -> dict[int, PreviousSuccess]:
    """Each expected backup's last successful cycle (SUCCESS or HASH_MISMATCH) before `before`.

    One short descent of ix_entry_job_success per job, so the cost does not grow with history.
    """
    if not job_ids:
        return {}
    statement = sa.text(
        """
        SELECT j.job_id, p.cycle_expected_at, p.server_calculated_staged_hash, p.server_content_fingerprint
        FROM unnest(CAST(:ids AS integer[])) AS j(job_id)
        CROSS JOIN LATERAL (
            SELECT e.cycle_expected_at, e.server_calculated_staged_hash, e.server_content_fingerprint
            FROM backup_entries e
            WHERE e.job_id = j.job_id
              AND e.status IN :successes
              AND e.superseded_at IS NULL
              AND e.cycle_expected_at < :before
            ORDER BY e.cycle_expected_at DESC
            LIMIT 1
        ) p
        """
    ).bindparams(successes())
    rows = session.execute(statement, {"ids": list(job_ids), "before": before})
    return {
        job_id: PreviousSuccess(cycle, staged, fingerprint) for job_id, cycle, staged, fingerprint in rows
    }


def upsert_entries(session: Session, rows: Sequence[dict[str, Any]]) -> dict[CycleKey, int]:
    """Write entries, one per (job, cycle), updating in place (a superseded one counts again: its
    instant is back in the schedule); {(job, cycle): entry id}."""
    if not rows:
        return {}
    # One compiled statement executed over all rows ("insertmanyvalues" batches), not one giant
    # VALUES clause: SQLAlchemy compiles it once and psycopg2 sends pages of 1,000 rows.
    statement = insert(BackupEntryRow)
    columns = [c for c in rows[0] if c not in ("job_id", "cycle_expected_at")]
    statement = statement.on_conflict_do_update(
        constraint="uq_entry_cycle",
        set_={c: statement.excluded[c] for c in columns}
        | {"updated_at": sa.func.now(), "superseded_at": None},
    ).returning(
        BackupEntryRow.job_id,
        BackupEntryRow.cycle_expected_at,
        BackupEntryRow.id,
        sort_by_parameter_order=True,
    )
    result = session.execute(statement, list(rows))
    return {(job_id, cycle): entry_id for job_id, cycle, entry_id in result}


def refresh_backup_state(session: Session, job_ids: Sequence[int], checked_at: datetime) -> None:
    """An expected backup's state follows its latest cycle's entry (whatever order cycles were
    evaluated in)."""
    if not job_ids:
        return
    session.execute(
        sa.text(
            """
            UPDATE expected_jobs j SET
                last_checked_timestamp = :checked_at,
                current_status = COALESCE(
                    CASE WHEN latest.status IN :successes THEN :ok ELSE latest.status END, :unknown),
                last_successful_backup_timestamp = success.at,
                previous_successful_hash_global = success.staged_hash,
                previous_successful_content_fingerprint = success.fingerprint,
                updated_at = now()
            FROM unnest(CAST(:ids AS integer[])) AS ids(id)
            LEFT JOIN LATERAL (
                SELECT e.status FROM backup_entries e WHERE e.job_id = ids.id AND e.superseded_at IS NULL
                ORDER BY e.cycle_expected_at DESC LIMIT 1
            ) latest ON true
            LEFT JOIN LATERAL (
                SELECT COALESCE(e.agent_operation_end_time, e.cycle_expected_at) AS at,
                       e.server_calculated_staged_hash AS staged_hash,
                       e.server_content_fingerprint AS fingerprint
                FROM backup_entries e
                WHERE e.job_id = ids.id AND e.status IN :successes AND e.superseded_at IS NULL
                ORDER BY e.cycle_expected_at DESC LIMIT 1
            ) success ON true
            WHERE j.id = ids.id
            """
        ).bindparams(successes()),
        {
            "ids": list(job_ids),
            "checked_at": checked_at,
            "ok": BackupStatus.OK.value,
            "unknown": BackupStatus.UNKNOWN.value,
        },
    )


@dataclass(frozen=True)
class EntryFilter:
    agent_id: str | None = None
    database_name: str | None = None
    since: date | None = None


def list_entries(session: Session, filters: EntryFilter) -> list[tuple[BackupEntryRow, ExpectedBackupRow]]:
    query = sa.select(BackupEntryRow, ExpectedBackupRow).join(
        ExpectedBackupRow, BackupEntryRow.job_id == ExpectedBackupRow.id
    )
    if filters.agent_id:
        query = query.where(ExpectedBackupRow.agent_id_responsible == filters.agent_id)
    if filters.database_name:
        query = query.where(ExpectedBackupRow.database_name == filters.database_name)
    if filters.since:
        start = datetime.combine(filters.since, datetime.min.time()).replace(tzinfo=UTC)
        query = query.where(BackupEntryRow.cycle_expected_at >= start)
    query = query.order_by(
        BackupEntryRow.cycle_expected_at,
        ExpectedBackupRow.agent_id_responsible,
        ExpectedBackupRow.database_name,
    )
    return [(entry, job) for entry, job in session.execute(query).tuples()]


def day_entries_of_agents(
    session: Session, agents: Sequence[str], first: datetime, last: datetime
) -> list[Any]:
    """The agents' entries of a day, as rows of the few columns a day's summary reads (`job_id`,
    `agent_id`, `database_name`, `name`, `cycle_expected_at`, `status`, `message`, `size`,
    `size_anomaly`, `size_median`): whole ORM objects cost ten times as much to load for a large
    fleet's scan."""
    query = (
        sa.select(
            BackupEntryRow.job_id,
            ExpectedBackupRow.agent_id_responsible.label("agent_id"),
            ExpectedBackupRow.database_name,
            ExpectedBackupRow.name,
            BackupEntryRow.cycle_expected_at,
            BackupEntryRow.status,
            BackupEntryRow.message,
            BackupEntryRow.server_calculated_staged_size.label("size"),
            BackupEntryRow.size_anomaly,
            BackupEntryRow.size_median,
        )
        .join(ExpectedBackupRow, BackupEntryRow.job_id == ExpectedBackupRow.id)
        .where(
            ExpectedBackupRow.agent_id_responsible.in_(list(agents)),
            BackupEntryRow.cycle_expected_at >= first,
            BackupEntryRow.cycle_expected_at < last,
            BackupEntryRow.superseded_at.is_(None),
        )
        .order_by(ExpectedBackupRow.agent_id_responsible, ExpectedBackupRow.database_name)
    )
    return list(session.execute(query))


def latest_entries_of_agent(session: Session, agent: str) -> list[tuple[BackupEntryRow, ExpectedBackupRow]]:
    query = (
        sa.select(BackupEntryRow, ExpectedBackupRow)
        .join(ExpectedBackupRow, BackupEntryRow.job_id == ExpectedBackupRow.id)
        .where(
            ExpectedBackupRow.agent_id_responsible == agent,
            ExpectedBackupRow.is_active,
            BackupEntryRow.superseded_at.is_(None),
        )
        .distinct(BackupEntryRow.job_id)
        .order_by(BackupEntryRow.job_id, BackupEntryRow.cycle_expected_at.desc())
    )
    return [(entry, job) for entry, job in session.execute(query).tuples()]


def status_counts(session: Session, start: datetime, end: datetime) -> dict[str, int]:
    """Entries per status with a cycle in [start, end) (superseded ones left out)."""
    query = (
        sa.select(BackupEntryRow.status, sa.func.count())
        .where(
            BackupEntryRow.cycle_expected_at >= start,
            BackupEntryRow.cycle_expected_at < end,
            BackupEntryRow.superseded_at.is_(None),
        )
        .group_by(BackupEntryRow.status)
    )
    return {status: count for status, count in session.execute(query)}
