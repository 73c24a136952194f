"""What every phase of a scan shares: settings, storage, the evaluation instant and the run's intent."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel

from backup_pipeline.settings import Settings
from backup_pipeline.storage.database import Database, open_database


@dataclass(frozen=True)
class ScanContext:
    settings: Settings
    database: Database
    now: datetime  # the instant the evaluation is "as of" (UTC)
    run_id: str | None = None
    rehash: bool = False  # measure staged files again instead of reusing stored measurements
    # Automatic scans (schedule, sensor, CLI without --partition) only evaluate what is new and never
    # cycles owed before a job existed; explicit partitions and backfills re-evaluate everything asked.
    automatic: bool = False


def parse_instant(text: str | None) -> datetime:
    """An ISO-8601 instant (naive means UTC), or the real clock when None."""
    if not text:
        return datetime.now(UTC)
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def make_context(
    settings: Settings,
    *,
    at: str | None = None,
    run_id: str | None = None,
    rehash: bool = False,
    automatic: bool = False,
) -> ScanContext:
    return ScanContext(
        settings=settings,
        database=open_database(settings),
        now=parse_instant(at),
        run_id=run_id,
        rehash=rehash,
        automatic=automatic,
    )


class Summary(BaseModel):
    """Base of the small summaries passed between Dagster steps (ids and counts, never payloads)."""
