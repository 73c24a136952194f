"""Cycle arithmetic: when a backup is expected, which reports belong to which cycle, and when it is late.

A cycle is one expected occurrence of a backup: an instant T of its schedule (`core.schedules`), in
UTC. Its window is [T - early, T + grace] and its deadline T + grace, so a window may straddle
midnight. A UTC day holds the cycles whose T falls on it: none for a weekly backup on most days.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from backup_pipeline.core.domain import ExpectedBackup

# Agents write naive local times, read in their zone: an instant named in a file or a report can be
# up to 14 hours away from UTC, and nothing known before the zone is looked up narrows that.
ZONE_SLACK = timedelta(hours=14)
MAX_WINDOW = timedelta(minutes=720)  # the widest side of a window (early or grace) the jobs file accepts
# How far from a day a report can end and still bear on one of its cycles, whatever the backup.
REPORT_REACH = MAX_WINDOW + ZONE_SLACK


def parse_instant(text: str) -> datetime:
    """An ISO-8601 instant as people and run configs write it (naive means UTC, `Z` allowed), in
    UTC; ValueError when it is not one."""
    parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


# How far after the real clock an instant a person gives may be: the clocks of two machines, not a
# time to come (an evaluation as of the future records cycles that have not happened as MISSING,
# reports as too old, and expected backups created then, which automatic scans never reach).
AHEAD_OF_NOW = timedelta(minutes=5)


def instant_problem(instant: datetime, *, first_day: date, now: datetime) -> str | None:
    """Why `instant` cannot be what a scan, a sync or a drill is as of, or None: it must fall between
    the fleet's first day and a few minutes after `now`."""
    shown = instant.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if instant.astimezone(UTC).date() < first_day:
        return f"{shown} is before the fleet's start date {first_day} (BACKUP_PIPELINE_START_DATE)"
    if instant > now + AHEAD_OF_NOW:
        minutes = int(AHEAD_OF_NOW.total_seconds() // 60)
        return (
            f"{shown} is after now ({now.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}; {minutes} minutes of clock "
            "difference are allowed): what has not happened yet cannot be evaluated"
        )
    return None


@dataclass(frozen=True)
class Cycle:
    backup: ExpectedBackup
    expected_at: datetime  # T, UTC

    @property
    def opens_at(self) -> datetime:
        return self.expected_at - timedelta(minutes=self.backup.early_minutes)

    @property
    def deadline(self) -> datetime:
        return self.expected_at + timedelta(minutes=self.backup.grace_minutes)

    def contains(self, instant: datetime) -> bool:
        return self.opens_at <= instant <= self.deadline

    def is_due(self, as_of: datetime) -> bool:
        """After the deadline a cycle with no report is MISSING."""
        return as_of > self.deadline

    @property
    def label(self) -> str:
        return f"{self.expected_at:%Y-%m-%dT%H:%MZ}"


def cycles_on(backup: ExpectedBackup, day: date) -> list[Cycle]:
    """The backup's cycles on a UTC day, in order (none on a day its schedule skips)."""
    return [Cycle(backup=backup, expected_at=at) for at in backup.schedule.instants_on(day)]


def days_touched(instant: datetime, window: timedelta) -> list[date]:
    """UTC days whose cycles (window W) could be relevant to something that ended at `instant`."""
    first, last = (instant - window).date(), (instant + window).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0, 0), tzinfo=UTC)
    return start, start + timedelta(days=1)


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def days_touched_in_any_zone(named_at: datetime, window: timedelta) -> list[date]:
    """UTC days a report can bear on when its time was read without knowing the agent's zone."""
    return days_touched(named_at, window + ZONE_SLACK)
