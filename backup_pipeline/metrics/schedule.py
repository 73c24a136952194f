"""An expected backup's schedule as the exporter shows it: the `schedule` label that tells apart the
several expected backups of one database, and how long one cycle is apart from the next.

Both follow the expected backup's schedule definition: they are the only place the exporter reads it.
"""

from __future__ import annotations

from backup_pipeline.storage.metrics import BackupState

DAY_SECONDS = 24 * 3600


def schedule_label(backup: BackupState) -> str:
    """The schedule's identity, e.g. `13:00 UTC`."""
    return f"{backup.expected_hour_utc:02d}:{backup.expected_minute_utc:02d} UTC"


def period_seconds(backup: BackupState) -> int:
    """The longest time between two consecutive cycles (a daily schedule: one day)."""
    return DAY_SECONDS
