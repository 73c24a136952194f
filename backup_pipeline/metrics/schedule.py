"""An expected backup's schedule as the exporter shows it: the `schedule` label that tells apart the
several expected backups of one database, and the longest time between two of its cycles.

Both follow the expected backup's schedule definition: they are the only place the exporter reads it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import pairwise

from backup_pipeline.config.jobs_file import schedule_of
from backup_pipeline.storage.metrics import BackupState, DrillState

DAY_SECONDS = 24 * 3600
# Long enough to see every gap of a schedule: yearly dates (a February 29th) aside, a year.
_SPAN = timedelta(days=366)


def schedule_label(backup: BackupState | DrillState) -> str:
    """The schedule's identity: `13:00 UTC` for the daily-UTC form, else the backup's name, or its
    cron expression and zone when it has none (one unnamed cron backup per database at most)."""
    if backup.schedule is None:
        return f"{backup.expected_hour_utc:02d}:{backup.expected_minute_utc:02d} UTC"
    return backup.name or f"{backup.schedule} {backup.timezone}"


def period_seconds(backup: BackupState) -> int:
    """The longest time between two consecutive cycles (a daily schedule: one day)."""
    if backup.schedule is None:
        return DAY_SECONDS
    return _longest_gap(backup.schedule, backup.timezone)


@lru_cache(maxsize=1024)
def _longest_gap(expression: str, zone: str) -> int:
    """Computed once per distinct schedule: a fleet shares a handful, a scrape asks thousands of times."""
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    instants = schedule_of(_Declared(expression, zone)).instants(start, start + _SPAN)
    gaps = [later - earlier for earlier, later in pairwise(instants)]
    return int(max(gaps, default=_SPAN).total_seconds())


class _Declared:
    """The two fields `schedule_of` reads of a cron-scheduled backup."""

    def __init__(self, schedule: str, timezone: str) -> None:
        self.schedule, self.timezone = schedule, timezone
