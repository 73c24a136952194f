"""What every phase of a scan shares: settings, storage, the evaluation instant and the run's intent."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel

from backup_pipeline.adapters.staged_files import ExpansionLimits
from backup_pipeline.config.settings import Settings
from backup_pipeline.storage.database import Database


class Summary(BaseModel):
    """Base of the small summaries passed between Dagster steps (ids and counts, never payloads)."""


class ScanRequest(Summary):
    """What a scan run was asked, fixed by its first step and passed down to the others."""

    as_of: datetime  # the instant the evaluation is "as of" (UTC)
    rehash: bool = False  # measure staged files again instead of reusing stored measurements
    # Automatic scans (schedule, sensor, CLI without --partition) only evaluate what is new and never
    # cycles owed before an expected backup existed; explicit partitions and backfills re-evaluate
    # everything asked.
    automatic: bool = False


@dataclass(frozen=True)
class ScanContext:
    settings: Settings
    database: Database
    request: ScanRequest
    run_id: str | None = None

    @property
    def as_of(self) -> datetime:
        return self.request.as_of

    @property
    def rehash(self) -> bool:
        return self.request.rehash

    @property
    def automatic(self) -> bool:
        return self.request.automatic

    @property
    def expansion_limits(self) -> ExpansionLimits:
        """How far staged archives may decompress (BACKUP_PIPELINE_MAX_EXPANSION_RATIO and
        BACKUP_PIPELINE_MAX_DECOMPRESSED_BYTES)."""
        return ExpansionLimits(self.settings.max_expansion_ratio, self.settings.max_decompressed_bytes)
