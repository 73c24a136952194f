"""Status reports in PostgreSQL: every report file recorded (accepted or rejected), their archiving,
the reports a batch evaluates with, and the watch marks that tell a scan what it already saw."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from backup_pipeline.core.domain import RecordedReport, RejectedReport, ReportRef
from backup_pipeline.core.reports import report_from_payload
from backup_pipeline.storage.orm import CycleWatchRow, StatusReportRow


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
