"""Scan records in PostgreSQL: one row per scan run, written when it starts and when it ends, so the
exporter can say when scans last ended, how long they took and how they ended."""

from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from backup_pipeline.storage.orm import ScanRecordRow


class ScanOutcome(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


def record_scan_start(
    session: Session, run_id: str, day: date | None, automatic: bool | None, started_at: datetime
) -> None:
    """A scan run started (a retried first step starts it again: the later start wins)."""
    statement = insert(ScanRecordRow).values(
        dagster_run_id=run_id,
        day=day,
        automatic=automatic,
        started_at=started_at,
        outcome=ScanOutcome.RUNNING.value,
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["dagster_run_id"],
            set_={"started_at": started_at, "ended_at": None, "outcome": ScanOutcome.RUNNING.value},
        )
    )
    session.commit()


def record_scan_end(session: Session, run_id: str, outcome: ScanOutcome, ended_at: datetime) -> None:
    """A scan run ended. A run that failed before its first step recorded a start is recorded as having
    started when it ended."""
    statement = insert(ScanRecordRow).values(
        dagster_run_id=run_id, started_at=ended_at, ended_at=ended_at, outcome=outcome.value
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["dagster_run_id"],
            set_={"ended_at": ended_at, "outcome": outcome.value},
            # The first failed step decides: a later step's failure does not move the end.
            where=ScanRecordRow.outcome == ScanOutcome.RUNNING.value,
        )
    )
    session.commit()
