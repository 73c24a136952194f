"""The queries the product needs, in bulk: a scan costs its new work, not the size of the history."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from backup_pipeline.core.domain import (
    EntryStatus,
    PreviousSuccess,
    RecordedReport,
    RejectedReport,
    ReportRef,
)
from backup_pipeline.core.reports import report_from_payload
from backup_pipeline.jobs_file import ResolvedJob
from backup_pipeline.storage.orm import (
    BackupEntryRow,
    CycleWatchRow,
    ExpectedJobRow,
    FleetStateRow,
    StatusReportRow,
)

SUCCESS_STATUSES = (EntryStatus.SUCCESS.value, EntryStatus.HASH_MISMATCH.value)


# ---------------------------------------------------------------- jobs


@dataclass(frozen=True)
class SyncSummary:
    active: int
    added: int
    deactivated: int


def sync_jobs(
    session: Session, jobs: Sequence[ResolvedJob], now: datetime, *, digest: str | None = None
) -> SyncSummary:
    """Upsert the declared jobs; jobs no longer declared become inactive, never deleted.

    Only differences are written, so syncing an unchanged file of 20,000 jobs costs one read. The
    file's digest is recorded with the jobs it produced (see `synced_jobs_file`).
    """
    columns = (
        ExpectedJobRow.id,
        ExpectedJobRow.agent_id_responsible,
        ExpectedJobRow.database_name,
        ExpectedJobRow.expected_hour_utc,
        ExpectedJobRow.expected_minute_utc,
        ExpectedJobRow.is_active,
        *(getattr(ExpectedJobRow, c) for c in _JOB_CONFIG_FIELDS),
    )
    existing = {(r[1], r[2], r[3], r[4]): r for r in session.execute(sa.select(*columns))}
    changed = [
        _job_values(job, now)
        for job in jobs
        if (row := existing.get(job.key)) is None or not row.is_active or _config_differs(row, job)
    ]
    if changed:
        statement = insert(ExpectedJobRow)
        updated = {c: statement.excluded[c] for c in _JOB_CONFIG_FIELDS} | {
            "is_active": sa.true(),
            "updated_at": sa.func.now(),
        }
        session.execute(statement.on_conflict_do_update(constraint="uq_job", set_=updated), changed)
    declared = {job.key for job in jobs}
    stale = [row.id for key, row in existing.items() if key not in declared and row.is_active]
    if stale:
        session.execute(
            sa.update(ExpectedJobRow)
            .where(ExpectedJobRow.id.in_(stale))
            .values(is_active=False, updated_at=sa.func.now())
        )
    _record_sync(session, digest, len(jobs))
    session.commit()
    return SyncSummary(active=len(jobs), added=len(declared - set(existing)), deactivated=len(stale))


def synced_jobs_file(session: Session, digest: str) -> int | None:
    """The active job count when the jobs table already reflects the file with this digest.

    Only `sync_jobs` writes job configuration, and it records the digest in the same transaction, so
    a matching digest means syncing again would change nothing.
    """
    row = session.get(FleetStateRow, FLEET_STATE_ID)
    return row.active_jobs if row is not None and row.jobs_file_digest == digest else None


def _record_sync(session: Session, digest: str | None, active: int) -> None:
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


def record_fleet_check(session: Session, checked_at: datetime) -> None:
    """Every active job was looked at by a scan as of `checked_at` (one row, not one per job)."""
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


FLEET_STATE_ID = 1


def _config_differs(row: Any, job: ResolvedJob) -> bool:
    wanted = {
        "window_minutes": job.window_minutes,
        "timezone": job.timezone,
        "staged_file_name": job.staged_file_name,
        "content_change": job.content_change.value,
        "alerting": job.alerting.stored(),
    }
    return any(getattr(row, field) != value for field, value in wanted.items())


_JOB_CONFIG_FIELDS = ("window_minutes", "timezone", "staged_file_name", "content_change", "alerting")


def _job_values(job: ResolvedJob, now: datetime) -> dict[str, Any]:
    parts = job.agent_id.split("_")
    return {
        "agent_id_responsible": job.agent_id,
        "database_name": job.database_name,
        "expected_hour_utc": job.expected_hour_utc,
        "expected_minute_utc": job.expected_minute_utc,
        "window_minutes": job.window_minutes,
        "timezone": job.timezone,
        "staged_file_name": job.staged_file_name,
        "content_change": job.content_change.value,
        "alerting": job.alerting.stored(),
        "company_name": parts[0],
        "city": parts[1],
        "neighborhood": "_".join(parts[2:]),
        "is_active": True,
        "current_status": "UNKNOWN",
        "created_at": now,
    }


def active_jobs(session: Session, job_ids: Iterable[int] | None = None) -> list[ExpectedJobRow]:
    query = sa.select(ExpectedJobRow).where(ExpectedJobRow.is_active)
    if job_ids is not None:
        query = query.where(ExpectedJobRow.id.in_(list(job_ids)))
    return list(session.execute(query.order_by(ExpectedJobRow.id)).scalars())


def job_timings(session: Session, job_ids: Iterable[int] | None = None) -> list[Any]:
    """Active jobs' (all, or these) identity and timing columns only (rows with attribute access)."""
    query = sa.select(
        ExpectedJobRow.id,
        ExpectedJobRow.agent_id_responsible,
        ExpectedJobRow.database_name,
        ExpectedJobRow.expected_hour_utc,
        ExpectedJobRow.expected_minute_utc,
        ExpectedJobRow.window_minutes,
        ExpectedJobRow.timezone,
        ExpectedJobRow.created_at,
    ).where(ExpectedJobRow.is_active)
    if job_ids is not None:
        query = query.where(ExpectedJobRow.id.in_(list(job_ids)))
    return list(session.execute(query.order_by(ExpectedJobRow.id)))


def entry_stamps(
    session: Session, job_ids: Sequence[int] | None, first: datetime, last: datetime
) -> dict[int, datetime]:
    """When each job's (every job's, or these) entry with a cycle in [first, last) was last written."""
    query = sa.select(BackupEntryRow.job_id, BackupEntryRow.updated_at).where(
        BackupEntryRow.cycle_expected_at >= first,
        BackupEntryRow.cycle_expected_at < last,
    )
    if job_ids is not None:
        query = query.where(BackupEntryRow.job_id.in_(list(job_ids)))
    return {job_id: at for job_id, at in session.execute(query)}


def active_job_agents(session: Session) -> list[tuple[int, str]]:
    query = sa.select(ExpectedJobRow.id, ExpectedJobRow.agent_id_responsible).where(ExpectedJobRow.is_active)
    return [(job_id, agent) for job_id, agent in session.execute(query)]


def all_jobs(session: Session) -> list[ExpectedJobRow]:
    query = sa.select(ExpectedJobRow).order_by(
        ExpectedJobRow.agent_id_responsible, ExpectedJobRow.database_name, ExpectedJobRow.expected_hour_utc
    )
    return list(session.execute(query).scalars())


def agent_timezones(session: Session, agent_ids: Sequence[str] | None = None) -> dict[str, str]:
    """The zone each agent's (every agent's, or these) naive timestamps are read in, when all its
    active jobs agree on one."""
    query = sa.select(
        ExpectedJobRow.agent_id_responsible,
        sa.func.min(ExpectedJobRow.timezone),
        sa.func.count(sa.distinct(ExpectedJobRow.timezone)),
    ).where(ExpectedJobRow.is_active)
    if agent_ids is not None:
        query = query.where(ExpectedJobRow.agent_id_responsible.in_(list(agent_ids)))
    rows = session.execute(query.group_by(ExpectedJobRow.agent_id_responsible))
    return {agent: zone for agent, zone, zones in rows if zones == 1}


def agent_windows(session: Session, agent_ids: Sequence[str] | None = None) -> dict[str, int]:
    """The widest window of each agent's (every agent's, or these) active jobs."""
    query = sa.select(ExpectedJobRow.agent_id_responsible, sa.func.max(ExpectedJobRow.window_minutes)).where(
        ExpectedJobRow.is_active
    )
    if agent_ids is not None:
        query = query.where(ExpectedJobRow.agent_id_responsible.in_(list(agent_ids)))
    rows = session.execute(query.group_by(ExpectedJobRow.agent_id_responsible))
    return {agent: window for agent, window in rows}


def open_days(session: Session, first: date, last: date) -> list[date]:
    """Days in [first, last] with an active job's cycle that has no entry yet.

    Cycles whose deadline precedes the job's creation are not owed: adding a job does not
    flood history with MISSING.
    """
    statement = sa.text(
        """
        SELECT d::date AS day
        FROM generate_series(CAST(:first AS date), CAST(:last AS date), interval '1 day') AS d
        WHERE EXISTS (
            SELECT 1 FROM expected_jobs j
            CROSS JOIN LATERAL (
                SELECT (d::timestamp AT TIME ZONE 'UTC')
                       + make_interval(hours => j.expected_hour_utc, mins => j.expected_minute_utc) AS t
            ) c
            WHERE j.is_active
              AND c.t + make_interval(mins => j.window_minutes) >= j.created_at
              AND NOT EXISTS (
                  SELECT 1 FROM backup_entries e WHERE e.job_id = j.id AND e.cycle_expected_at = c.t
              )
        )
        ORDER BY day
        """
    )
    return [row.day for row in session.execute(statement, {"first": first, "last": last})]


def earliest_job_creation(session: Session) -> datetime | None:
    return session.execute(
        sa.select(sa.func.min(ExpectedJobRow.created_at)).where(ExpectedJobRow.is_active)
    ).scalar()


# ---------------------------------------------------------------- reports


def known_report_keys(session: Session, agent_ids: Sequence[str]) -> set[tuple[str, str, str]]:
    """(agent, file name, content hash) of recorded reports still waiting in log/."""
    rows = session.execute(
        sa.select(StatusReportRow.agent_id, StatusReportRow.file_name, StatusReportRow.content_sha256).where(
            StatusReportRow.agent_id.in_(agent_ids), StatusReportRow.archived_path.is_(None)
        )
    )
    return {tuple(row) for row in rows}  # type: ignore[misc]


def record_reports(session: Session, rows: Sequence[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """Insert report records idempotently; the (agent, file name, hash) keys that were new.

    A file already recorded and archived that shows up again in log/ (re-sent unchanged) is the same
    report: its record is re-armed for archiving instead of being duplicated.
    """
    if not rows:
        return set()
    statement = insert(StatusReportRow)
    statement = statement.on_conflict_do_update(
        constraint="uq_report_file",
        set_={"archived_path": None},
        where=StatusReportRow.archived_path.is_not(None),
    ).returning(
        StatusReportRow.agent_id,
        StatusReportRow.file_name,
        StatusReportRow.content_sha256,
        sa.literal_column("(xmax = 0)").label("inserted"),
        sort_by_parameter_order=True,
    )
    result = session.execute(statement, list(rows))
    keys = {(agent, name, digest) for agent, name, digest, inserted in result if inserted}
    session.commit()
    return keys


def unarchived_reports(session: Session) -> list[StatusReportRow]:
    query = (
        sa.select(StatusReportRow).where(StatusReportRow.archived_path.is_(None)).order_by(StatusReportRow.id)
    )
    return list(session.execute(query).scalars())


def mark_archived(session: Session, archived: dict[int, str]) -> None:
    if not archived:
        return
    session.execute(
        sa.update(StatusReportRow),
        [{"id": report_id, "archived_path": path} for report_id, path in archived.items()],
    )
    session.commit()


def list_reports(session: Session) -> list[StatusReportRow]:
    query = sa.select(StatusReportRow).order_by(
        StatusReportRow.agent_id, StatusReportRow.file_name, StatusReportRow.id
    )
    return list(session.execute(query).scalars())


@dataclass(frozen=True)
class AgentReports:
    accepted: list[tuple[RecordedReport, datetime]]  # with ingestion time
    rejected: list[tuple[RejectedReport, datetime]]


def reports_around(
    session: Session, agent_ids: Sequence[str], first: datetime, last: datetime
) -> dict[str, AgentReports]:
    """Accepted reports that ended, and rejected reports named, within [first, last], per agent."""
    result: dict[str, AgentReports] = {a: AgentReports([], []) for a in agent_ids}
    accepted = session.execute(
        sa.select(
            StatusReportRow.id,
            StatusReportRow.agent_id,
            StatusReportRow.file_name,
            StatusReportRow.payload,
            StatusReportRow.ingested_at,
        ).where(
            StatusReportRow.agent_id.in_(agent_ids),
            StatusReportRow.accepted,
            StatusReportRow.operation_end_time.between(first, last),
        )
    )
    for report_id, agent, file_name, payload, ingested_at in accepted:
        recorded = RecordedReport(ReportRef(report_id, file_name), report_from_payload(payload))
        result[agent].accepted.append((recorded, ingested_at))
    rejected = session.execute(
        sa.select(
            StatusReportRow.id,
            StatusReportRow.agent_id,
            StatusReportRow.file_name,
            StatusReportRow.file_name_time,
            StatusReportRow.reason,
            StatusReportRow.ingested_at,
        ).where(
            StatusReportRow.agent_id.in_(agent_ids),
            sa.not_(StatusReportRow.accepted),
            StatusReportRow.file_name_time.between(first.replace(tzinfo=None), last.replace(tzinfo=None)),
        )
    )
    for report_id, agent, file_name, named_at, reason, ingested_at in rejected:
        result[agent].rejected.append(
            (RejectedReport(ReportRef(report_id, file_name), named_at, reason or ""), ingested_at)
        )
    return result


def latest_recording(
    session: Session, agent_ids: Sequence[str], first: datetime, last: datetime
) -> dict[str, int]:
    """The latest transaction that recorded a report of each agent that could bear on cycles in
    [first, last]."""
    in_range = sa.or_(
        StatusReportRow.operation_end_time.between(first, last),
        StatusReportRow.file_name_time.between(first.replace(tzinfo=None), last.replace(tzinfo=None)),
    )
    query = (
        sa.select(StatusReportRow.agent_id, sa.func.max(StatusReportRow.recorded_xid))
        .where(StatusReportRow.agent_id.in_(list(agent_ids)), in_range)
        .group_by(StatusReportRow.agent_id)
    )
    return {agent: xid for agent, xid in session.execute(query)}


def accepted_report_ends(
    session: Session, agent_ids: Sequence[str], first: datetime, last: datetime
) -> list[tuple[str, str, int]]:
    """(agent, end time as the agent wrote it, recording transaction) of accepted reports that ended
    within [first, last]: the payload's one field, not the payload."""
    end_time = StatusReportRow.payload["operation_end_time"].astext
    query = sa.select(StatusReportRow.agent_id, end_time, StatusReportRow.recorded_xid).where(
        StatusReportRow.agent_id.in_(list(agent_ids)),
        StatusReportRow.accepted,
        StatusReportRow.operation_end_time.between(first, last),
    )
    return [(agent, end, at) for agent, end, at in session.execute(query)]


def snapshot_horizon(session: Session) -> int:
    """Every transaction below this id had finished when the current statement's snapshot was taken,
    so what it recorded is visible to this and every later statement of the session."""
    return int(
        session.execute(sa.text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")).scalar_one()
    )


def watch_marks(session: Session, agent_ids: Sequence[str], day: date) -> dict[str, int]:
    """Per agent, the transaction horizon below which every report was seen by the last scan that
    looked at its cycles of `day`."""
    query = sa.select(CycleWatchRow.agent_id, CycleWatchRow.visible_below).where(
        CycleWatchRow.agent_id.in_(list(agent_ids)), CycleWatchRow.day == day
    )
    return {agent: horizon for agent, horizon in session.execute(query)}


def mark_watched(session: Session, agent_ids: Sequence[str], day: date, visible_below: int) -> None:
    """Record that these agents' cycles of `day` were looked at with every report recorded below
    `visible_below` in view. Written with the entries: the last writer's mark goes with its entries."""
    if not agent_ids:
        return
    session.execute(
        sa.text(
            """
            INSERT INTO cycle_watch (agent_id, day, looked_at, visible_below)
            SELECT agent, CAST(:day AS date), now(), :horizon FROM unnest(CAST(:agents AS text[])) AS agent
            ON CONFLICT (agent_id, day) DO UPDATE
                SET looked_at = excluded.looked_at, visible_below = excluded.visible_below
            """
        ),
        {"agents": list(agent_ids), "day": day, "horizon": visible_below},
    )


# ---------------------------------------------------------------- entries


def entries_for_cycles(
    session: Session, job_ids: Sequence[int], first: datetime, last: datetime
) -> dict[int, BackupEntryRow]:
    """Existing entries of these jobs with a cycle in [first, last), keyed by job (one cycle a day)."""
    rows = session.execute(
        sa.select(BackupEntryRow).where(
            BackupEntryRow.job_id.in_(job_ids),
            BackupEntryRow.cycle_expected_at >= first,
            BackupEntryRow.cycle_expected_at < last,
        )
    ).scalars()
    return {row.job_id: row for row in rows}


def previous_successes(
    session: Session, job_ids: Sequence[int], before: datetime
) -> dict[int, PreviousSuccess]:
    """Each job's last SUCCESS or HASH_MISMATCH cycle before `before`.

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
              AND e.status IN ('SUCCESS', 'HASH_MISMATCH')
              AND e.cycle_expected_at < :before
            ORDER BY e.cycle_expected_at DESC
            LIMIT 1
        ) p
        """
    )
    rows = session.execute(statement, {"ids": list(job_ids), "before": before})
    return {
        job_id: PreviousSuccess(cycle, staged, fingerprint) for job_id, cycle, staged, fingerprint in rows
    }


def upsert_entries(session: Session, rows: Sequence[dict[str, Any]]) -> dict[int, int]:
    """Write entries, one per (job, cycle), updating in place; {job_id: entry id}."""
    if not rows:
        return {}
    # One compiled statement executed over all rows ("insertmanyvalues" batches), not one giant
    # VALUES clause: SQLAlchemy compiles it once and psycopg2 sends pages of 1,000 rows.
    statement = insert(BackupEntryRow)
    columns = [c for c in rows[0] if c not in ("job_id", "cycle_expected_at")]
    statement = statement.on_conflict_do_update(
        constraint="uq_entry_cycle",
        set_={c: statement.excluded[c] for c in columns} | {"updated_at": sa.func.now()},
    ).returning(BackupEntryRow.job_id, BackupEntryRow.id, sort_by_parameter_order=True)
    result = session.execute(statement, list(rows))
    return {job_id: entry_id for job_id, entry_id in result}


def refresh_job_state(session: Session, job_ids: Sequence[int], checked_at: datetime) -> None:
    """Job state follows its latest cycle's entry (whatever order cycles were evaluated in)."""
    if not job_ids:
        return
    session.execute(
        sa.text(
            """
            UPDATE expected_jobs j SET
                last_checked_timestamp = :checked_at,
                current_status = COALESCE(
                    CASE WHEN latest.status IN ('SUCCESS', 'HASH_MISMATCH') THEN 'OK' ELSE latest.status END,
                    'UNKNOWN'),
                last_successful_backup_timestamp = success.at,
                previous_successful_hash_global = success.staged_hash,
                previous_successful_content_fingerprint = success.fingerprint,
                updated_at = now()
            FROM unnest(CAST(:ids AS integer[])) AS ids(id)
            LEFT JOIN LATERAL (
                SELECT e.status FROM backup_entries e WHERE e.job_id = ids.id
                ORDER BY e.cycle_expected_at DESC LIMIT 1
            ) latest ON true
            LEFT JOIN LATERAL (
                SELECT COALESCE(e.agent_operation_end_time, e.cycle_expected_at) AS at,
                       e.server_calculated_staged_hash AS staged_hash,
                       e.server_content_fingerprint AS fingerprint
                FROM backup_entries e
                WHERE e.job_id = ids.id AND e.status IN ('SUCCESS', 'HASH_MISMATCH')
                ORDER BY e.cycle_expected_at DESC LIMIT 1
            ) success ON true
            WHERE j.id = ids.id
            """
        ),
        {"ids": list(job_ids), "checked_at": checked_at},
    )


@dataclass(frozen=True)
class EntryFilter:
    agent_id: str | None = None
    database_name: str | None = None
    since: date | None = None


def list_entries(session: Session, filters: EntryFilter) -> list[tuple[BackupEntryRow, ExpectedJobRow]]:
    query = sa.select(BackupEntryRow, ExpectedJobRow).join(
        ExpectedJobRow, BackupEntryRow.job_id == ExpectedJobRow.id
    )
    if filters.agent_id:
        query = query.where(ExpectedJobRow.agent_id_responsible == filters.agent_id)
    if filters.database_name:
        query = query.where(ExpectedJobRow.database_name == filters.database_name)
    if filters.since:
        start = datetime.combine(filters.since, datetime.min.time()).replace(tzinfo=UTC)
        query = query.where(BackupEntryRow.cycle_expected_at >= start)
    query = query.order_by(
        BackupEntryRow.cycle_expected_at, ExpectedJobRow.agent_id_responsible, ExpectedJobRow.database_name
    )
    return [(entry, job) for entry, job in session.execute(query).tuples()]


def day_entries_of_agents(
    session: Session, agents: Sequence[str], first: datetime, last: datetime
) -> list[tuple[BackupEntryRow, ExpectedJobRow]]:
    query = (
        sa.select(BackupEntryRow, ExpectedJobRow)
        .join(ExpectedJobRow, BackupEntryRow.job_id == ExpectedJobRow.id)
        .where(
            ExpectedJobRow.agent_id_responsible.in_(list(agents)),
            BackupEntryRow.cycle_expected_at >= first,
            BackupEntryRow.cycle_expected_at < last,
        )
        .order_by(ExpectedJobRow.agent_id_responsible, ExpectedJobRow.database_name)
    )
    return [(entry, job) for entry, job in session.execute(query).tuples()]


def latest_entries_of_agent(session: Session, agent: str) -> list[tuple[BackupEntryRow, ExpectedJobRow]]:
    query = (
        sa.select(BackupEntryRow, ExpectedJobRow)
        .join(ExpectedJobRow, BackupEntryRow.job_id == ExpectedJobRow.id)
        .where(ExpectedJobRow.agent_id_responsible == agent, ExpectedJobRow.is_active)
        .distinct(BackupEntryRow.job_id)
        .order_by(BackupEntryRow.job_id, BackupEntryRow.cycle_expected_at.desc())
    )
    return [(entry, job) for entry, job in session.execute(query).tuples()]
