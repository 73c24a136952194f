"""Expected backups in PostgreSQL: syncing the jobs file, the fleet's state, and the light
projections a scan plans with (a scan costs its new work, not the size of the fleet)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from backup_pipeline.config.jobs_file import DeclaredBackup
from backup_pipeline.core.domain import BackupStatus
from backup_pipeline.storage.orm import ExpectedBackupRow, FleetStateRow, JobsFileSyncRow


@dataclass(frozen=True)
class SyncSummary:
    active: int
    added: int
    deactivated: int
    updated: int = 0  # existing backups whose configuration changed, or active again

    @property
    def changed(self) -> bool:
        """Whether the synced fleet differs from before (what Dagster shows of it too)."""
        return bool(self.added or self.deactivated or self.updated)


def sync_backups(
    session: Session,
    backups: Sequence[DeclaredBackup],
    as_of: datetime,
    *,
    digest: str | None = None,
    path: Path | None = None,
) -> SyncSummary:
    """Upsert the declared expected backups; those no longer declared become inactive, never deleted.

    Only differences are written, so syncing an unchanged file of 20,000 backups costs one read. The
    file's digest is recorded with the backups it produced (see `synced_jobs_file`), and under its
    path (see `jobs_file_changed_since_sync`).
    """
    columns = (
        ExpectedBackupRow.id,
        ExpectedBackupRow.agent_id_responsible,
        ExpectedBackupRow.database_name,
        ExpectedBackupRow.name,
        ExpectedBackupRow.is_active,
        *(getattr(ExpectedBackupRow, c) for c in _CONFIG_FIELDS),
    )
    existing = {(r[1], r[2], r[3]): r for r in session.execute(sa.select(*columns))}
    changed = [
        _backup_values(backup, as_of)
        for backup in backups
        if (row := existing.get(backup.key)) is None or not row.is_active or _config_differs(row, backup)
    ]
    if changed:
        statement = insert(ExpectedBackupRow)
        updated = {c: statement.excluded[c] for c in _CONFIG_FIELDS} | {
            "is_active": sa.true(),
            "updated_at": sa.func.now(),
        }
        session.execute(statement.on_conflict_do_update(constraint="uq_job", set_=updated), changed)
    declared = {backup.key for backup in backups}
    stale = [row.id for key, row in existing.items() if key not in declared and row.is_active]
    if stale:
        session.execute(
            sa.update(ExpectedBackupRow)
            .where(ExpectedBackupRow.id.in_(stale))
            .values(is_active=False, updated_at=sa.func.now())
        )
    _record_sync(session, digest, len(backups), path)
    session.commit()
    added = len(declared - set(existing))
    return SyncSummary(active=len(backups), added=added, deactivated=len(stale), updated=len(changed) - added)


def synced_jobs_file(session: Session, digest: str) -> int | None:
    """The active backup count when the expected backups already reflect the file with this digest.

    Only `sync_backups` writes their configuration, and it records the digest in the same transaction, so
    a matching digest means syncing again would change nothing.
    """
    row = session.get(FleetStateRow, FLEET_STATE_ID)
    return row.active_jobs if row is not None and row.jobs_file_digest == digest else None


def ever_synced(session: Session) -> bool:
    """Whether a jobs file was ever synced into this database."""
    return session.get(FleetStateRow, FLEET_STATE_ID) is not None


def _record_sync(session: Session, digest: str | None, active: int, path: Path | None) -> None:
    values = {"id": FLEET_STATE_ID, "jobs_file_digest": digest, "active_jobs": active}
    statement = insert(FleetStateRow).values(values | {"jobs_synced_at": sa.func.now()})
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["id"],
            set_={
                "jobs_file_digest": digest,
                "active_jobs": active,
                "jobs_synced_at": statement.excluded.jobs_synced_at,
            },
        )
    )
    if path is not None and digest is not None:
        remember_jobs_file(session, path, digest)


def remember_jobs_file(session: Session, path: Path, digest: str) -> None:
    """Record that the file at `path` held `digest` when the expected backups were last set."""
    synced = insert(JobsFileSyncRow).values(path=str(path), digest=digest, synced_at=sa.func.now())
    session.execute(
        synced.on_conflict_do_update(
            index_elements=["path"],
            set_={"digest": synced.excluded.digest, "synced_at": synced.excluded.synced_at},
        )
    )


def jobs_file_changed_since_sync(session: Session, path: Path, digest: str) -> bool:
    """Whether the file at `path` holds something else than when the expected backups were last set
    (or was never seen then)."""
    row = session.get(JobsFileSyncRow, str(path))
    return row is None or row.digest != digest


def record_fleet_check(session: Session, checked_at: datetime) -> None:
    """Every active expected backup was looked at by a scan as of `checked_at` (one row, not one per
    backup)."""
    statement = insert(FleetStateRow).values(id=FLEET_STATE_ID, checked_at=checked_at)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["id"],
            set_={"checked_at": sa.func.greatest(FleetStateRow.checked_at, statement.excluded.checked_at)},
        )
    )


def fleet_checked_at(session: Session) -> datetime | None:
    row = session.get(FleetStateRow, FLEET_STATE_ID)
    return row.checked_at if row is not None else None


def last_checked(backup: Any, fleet_checked: datetime | None) -> datetime | None:
    """When a scan last looked at this expected backup (a row with `is_active`, `created_at` and
    `last_checked_timestamp`). A scan records its evaluations on the expected backups it wrote, and
    once for the fleet that it looked at every active one (an idle scan does not rewrite every row)."""
    times = [backup.last_checked_timestamp]
    if backup.is_active and fleet_checked is not None and fleet_checked >= backup.created_at:
        times.append(fleet_checked)
    return max((t for t in times if t is not None), default=None)


FLEET_STATE_ID = 1


def _config_differs(row: Any, backup: DeclaredBackup) -> bool:
    wanted = _config_values(backup)
    return any(getattr(row, field) != value for field, value in wanted.items())


def _config_values(backup: DeclaredBackup) -> dict[str, Any]:
    """What a sync may change on an existing expected backup: everything but its identity (agent,
    database, name) — its schedule too, so a named backup keeps its history across a change."""
    return {
        "expected_hour_utc": backup.expected_hour_utc,
        "expected_minute_utc": backup.expected_minute_utc,
        "schedule": backup.schedule,
        "early_minutes": backup.early_minutes,
        "grace_minutes": backup.grace_minutes,
        "timezone": backup.timezone,
        "staged_file_name": backup.staged_file_name,
        "content_change": backup.content_change.value,
        "alerting": backup.alerting.stored(),
        "restore_drill": backup.restore_drill.stored(),
    }


_CONFIG_FIELDS = (
    "expected_hour_utc",
    "expected_minute_utc",
    "schedule",
    "early_minutes",
    "grace_minutes",
    "timezone",
    "staged_file_name",
    "content_change",
    "alerting",
    "restore_drill",
)


def _backup_values(backup: DeclaredBackup, as_of: datetime) -> dict[str, Any]:
    parts = backup.agent_id.split("_")
    return {
        "agent_id_responsible": backup.agent_id,
        "database_name": backup.database_name,
        "name": backup.name,
        **_config_values(backup),
        "company_name": parts[0],
        "city": parts[1],
        "neighborhood": "_".join(parts[2:]),
        "is_active": True,
        "current_status": BackupStatus.UNKNOWN.value,
        "created_at": as_of,
    }


def active_backups(session: Session, ids: Iterable[int] | None = None) -> list[ExpectedBackupRow]:
    query = sa.select(ExpectedBackupRow).where(ExpectedBackupRow.is_active)
    if ids is not None:
        query = query.where(ExpectedBackupRow.id.in_(list(ids)))
    return list(session.execute(query.order_by(ExpectedBackupRow.id)).scalars())


def backup_timings(
    session: Session, ids: Iterable[int] | None = None, *, agents: Iterable[str] | None = None
) -> list[Any]:
    """Active expected backups' (all, these, or these agents') identity, timing and policy columns
    only: rows with attribute access, named as `config.jobs_file.to_expected_backup` reads them."""
    query = sa.select(
        ExpectedBackupRow.id,
        ExpectedBackupRow.agent_id_responsible.label("agent_id"),
        ExpectedBackupRow.database_name,
        ExpectedBackupRow.name,
        ExpectedBackupRow.expected_hour_utc,
        ExpectedBackupRow.expected_minute_utc,
        ExpectedBackupRow.schedule,
        ExpectedBackupRow.early_minutes,
        ExpectedBackupRow.grace_minutes,
        ExpectedBackupRow.timezone,
        ExpectedBackupRow.staged_file_name,
        ExpectedBackupRow.content_change,
        ExpectedBackupRow.created_at,
    ).where(ExpectedBackupRow.is_active)
    if ids is not None:
        query = query.where(ExpectedBackupRow.id.in_(list(ids)))
    if agents is not None:
        query = query.where(ExpectedBackupRow.agent_id_responsible.in_(list(agents)))
    return list(session.execute(query.order_by(ExpectedBackupRow.id)))


def active_backup_agents(session: Session) -> list[tuple[int, str]]:
    query = sa.select(ExpectedBackupRow.id, ExpectedBackupRow.agent_id_responsible).where(
        ExpectedBackupRow.is_active
    )
    return [(backup_id, agent) for backup_id, agent in session.execute(query)]


def all_backups(session: Session) -> list[ExpectedBackupRow]:
    query = sa.select(ExpectedBackupRow).order_by(
        ExpectedBackupRow.agent_id_responsible,
        ExpectedBackupRow.database_name,
        ExpectedBackupRow.name,
    )
    return list(session.execute(query).scalars())


def agent_timezones(session: Session, agent_ids: Sequence[str] | None = None) -> dict[str, str]:
    """The zone each agent's (every agent's, or these) naive timestamps are read in, when all its
    active expected backups agree on one."""
    query = sa.select(
        ExpectedBackupRow.agent_id_responsible,
        sa.func.min(ExpectedBackupRow.timezone),
        sa.func.count(sa.distinct(ExpectedBackupRow.timezone)),
    ).where(ExpectedBackupRow.is_active)
    if agent_ids is not None:
        query = query.where(ExpectedBackupRow.agent_id_responsible.in_(list(agent_ids)))
    rows = session.execute(query.group_by(ExpectedBackupRow.agent_id_responsible))
    return {agent: zone for agent, zone, zones in rows if zones == 1}


def agent_windows(session: Session, agent_ids: Sequence[str] | None = None) -> dict[str, int]:
    """The widest side (early or grace) of each agent's (every agent's, or these) active expected
    backups' windows."""
    query = sa.select(
        ExpectedBackupRow.agent_id_responsible,
        sa.func.max(sa.func.greatest(ExpectedBackupRow.early_minutes, ExpectedBackupRow.grace_minutes)),
    ).where(ExpectedBackupRow.is_active)
    if agent_ids is not None:
        query = query.where(ExpectedBackupRow.agent_id_responsible.in_(list(agent_ids)))
    rows = session.execute(query.group_by(ExpectedBackupRow.agent_id_responsible))
    return {agent: window for agent, window in rows}


def open_days(
    session: Session, cycles: Sequence[ScheduledCycles], *, past_deadline_at: datetime | None = None
) -> list[date]:
    """The UTC days of these cycles that some backup of their group owes without an entry yet (only
    cycles whose deadline is before `past_deadline_at`, when given).

    Each group is the active backups sharing a schedule and its expected instants over the days
    looked at (computed by the caller from the schedule); PostgreSQL pairs them. Cycles whose
    deadline precedes the backup's creation are not owed: adding one does not flood history with
    MISSING.
    """
    groups = [(index, at) for index, group in enumerate(cycles) for at in group.instants]
    members = [(index, job_id) for index, group in enumerate(cycles) for job_id in group.job_ids]
    if not groups or not members:
        return []
    days = sorted({at.date() for _, at in groups})
    # Per day, EXISTS stops at the first owed cycle; a day with all its entries costs one index probe
    # per cycle.
    statement = sa.text(
        """
        WITH c AS (
            SELECT g, t, (t AT TIME ZONE 'UTC')::date AS day
            FROM unnest(CAST(:group_of_instant AS integer[]), CAST(:instants AS timestamptz[])) AS c(g, t)
        ), m AS (
            SELECT g, job_id
            FROM unnest(CAST(:group_of_job AS integer[]), CAST(:job_ids AS integer[])) AS m(g, job_id)
        )
        SELECT d.day FROM unnest(CAST(:days AS date[])) AS d(day)
        WHERE EXISTS (
            SELECT 1 FROM c
            JOIN m ON m.g = c.g
            JOIN expected_jobs j ON j.id = m.job_id
            WHERE c.day = d.day
              AND j.is_active
              AND c.t + make_interval(mins => j.grace_minutes) >= j.created_at
              AND (CAST(:past_deadline_at AS timestamptz) IS NULL
                   OR c.t + make_interval(mins => j.grace_minutes) < CAST(:past_deadline_at AS timestamptz))
              AND NOT EXISTS (
                  SELECT 1 FROM backup_entries e WHERE e.job_id = j.id AND e.cycle_expected_at = c.t
              )
        )
        ORDER BY d.day
        """
    )
    rows = session.execute(
        statement,
        {
            "group_of_instant": [g for g, _ in groups],
            "instants": [at for _, at in groups],
            "group_of_job": [g for g, _ in members],
            "job_ids": [job_id for _, job_id in members],
            "days": days,
            "past_deadline_at": past_deadline_at,
        },
    )
    return [row.day for row in rows]


def schedule_groups(session: Session) -> list[Any]:
    """The active expected backups grouped by the columns that say when they are expected (a fleet
    has few such groups): schedule, expected_hour_utc, expected_minute_utc, timezone and ids."""
    statement = sa.select(
        ExpectedBackupRow.schedule,
        ExpectedBackupRow.expected_hour_utc,
        ExpectedBackupRow.expected_minute_utc,
        ExpectedBackupRow.timezone,
        sa.func.array_agg(ExpectedBackupRow.id).label("ids"),
    ).where(ExpectedBackupRow.is_active)
    statement = statement.group_by(
        ExpectedBackupRow.schedule,
        ExpectedBackupRow.expected_hour_utc,
        ExpectedBackupRow.expected_minute_utc,
        ExpectedBackupRow.timezone,
    )
    return list(session.execute(statement))


@dataclass(frozen=True)
class ScheduledCycles:
    """Active expected backups sharing one schedule, and its instants over some days."""

    job_ids: list[int]
    instants: list[datetime]


def earliest_backup_creation(session: Session) -> datetime | None:
    return session.execute(
        sa.select(sa.func.min(ExpectedBackupRow.created_at)).where(ExpectedBackupRow.is_active)
    ).scalar()
