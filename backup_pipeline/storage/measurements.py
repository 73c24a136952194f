"""Staged-file measurements taken by a scan's measurement steps, waiting for the evaluation of their
cycles: keyed by the report and the staged file it names (what the evaluation would measure)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from backup_pipeline.core.domain import StagedFileCheck
from backup_pipeline.storage.orm import StagedFileMeasurementRow

Key = tuple[int, str]  # (report id, staged file name)


def store(
    session: Session,
    measured: Sequence[tuple[Key, StagedFileCheck, frozenset[str]]],
    at: datetime,
    run_id: str | None,
) -> None:
    """Record measurements (each with the fingerprint algorithms it was asked for besides the
    current one), replacing an older one of the same file (a re-hash)."""
    if not measured:
        return
    rows = [
        {
            "report_id": report_id,
            "staged_file_name": name,
            "sha256": check.sha256,
            "size": check.size,
            "content_fingerprint": check.content_fingerprint,
            "problem": check.problem,
            "archive_problem": check.archive_problem,
            "measured_at": at,
            "run_id": run_id,
            "also": " ".join(sorted(also)),
        }
        for (report_id, name), check, also in measured
    ]
    statement = insert(StagedFileMeasurementRow)
    columns = [c for c in rows[0] if c not in ("report_id", "staged_file_name")]
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["report_id", "staged_file_name"],
            set_={c: statement.excluded[c] for c in columns},
        ),
        rows,
    )


def stored(
    session: Session, keys: Iterable[Key], *, run_id: str | None = None
) -> dict[Key, tuple[StagedFileCheck, datetime, frozenset[str]]]:
    """The stored measurements of these files (only those taken by `run_id` when given), with when
    and the algorithms asked for besides the current one."""
    wanted = set(keys)
    if not wanted:
        return {}
    query = sa.select(StagedFileMeasurementRow).where(
        StagedFileMeasurementRow.report_id.in_({report_id for report_id, _ in wanted})
    )
    if run_id is not None:
        query = query.where(StagedFileMeasurementRow.run_id == run_id)
    found: dict[Key, tuple[StagedFileCheck, datetime, frozenset[str]]] = {}
    for row in session.scalars(query):
        key = (row.report_id, row.staged_file_name)
        if key in wanted:
            check = StagedFileCheck(
                file_name=row.staged_file_name,
                problem=row.problem,
                sha256=row.sha256,
                size=row.size,
                content_fingerprint=row.content_fingerprint,
                archive_problem=row.archive_problem,
            )
            found[key] = (check, row.measured_at, frozenset(row.also.split()))
    return found


def known(session: Session, keys: Iterable[Key]) -> set[Key]:
    """Which of these files already have a stored measurement."""
    return set(stored(session, keys))


def forget(session: Session, keys: Iterable[Key]) -> None:
    """Remove measurements their entries now hold."""
    pairs = list(set(keys))
    if pairs:
        session.execute(
            sa.delete(StagedFileMeasurementRow).where(
                sa.tuple_(StagedFileMeasurementRow.report_id, StagedFileMeasurementRow.staged_file_name).in_(
                    pairs
                )
            )
        )


# A size the agent claims for a staged file: digits only (anything else claims nothing).
_CLAIMED_BYTES = sa.text(
    """
    SELECT coalesce(sum((d.value #>> '{steps,COMPRESS,size}')::numeric), 0)
    FROM status_reports r CROSS JOIN LATERAL jsonb_each(r.payload -> 'databases') AS d
    WHERE r.agent_id = ANY(:agents) AND r.accepted AND r.operation_end_time BETWEEN :first AND :last
      AND (d.value #>> '{steps,COMPRESS,size}') ~ '^[0-9]{1,18}$'
    """
)


def claimed_staged_bytes(session: Session, agent_ids: Sequence[str], first: datetime, last: datetime) -> int:
    """What the accepted reports of these agents that ended within [first, last] claim their staged
    files weigh, in all: the agents' word, for deciding whether measuring is worth spreading, never
    for a verdict (a report that lies only changes how the work is split)."""
    if not agent_ids:
        return 0
    params = {"agents": list(agent_ids), "first": first, "last": last}
    return int(session.execute(_CLAIMED_BYTES, params).scalar_one())
