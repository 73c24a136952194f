"""Cycle arithmetic: when a backup is expected, which reports belong to which cycle, and when it is late.

A cycle is one expected occurrence of a backup: the instant T = a day at HH:MM UTC. Its window is
[T - W, T + W] and its deadline T + W, so a window may straddle midnight.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from backup_pipeline.core.domain import ExpectedBackup

# Agents write naive local times, read in their zone: an instant named in a file or a report can be
# up to 14 hours away from UTC, and nothing known before the zone is looked up narrows that.
ZONE_SLACK = timedelta(hours=14)
MAX_WINDOW = timedelta(minutes=720)  # the widest window the jobs file accepts
# How far from a day a report can end and still bear on one of its cycles, whatever the backup.
REPORT_REACH = MAX_WINDOW + ZONE_SLACK


def parse_instant(text: str) -> datetime:
    """An ISO-8601 instant as people and run configs write it (naive means UTC, `Z` allowed), in
    UTC; ValueError when it is not one."""
    parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@dataclass(frozen=True)
class Cycle:
    backup: ExpectedBackup
    expected_at: datetime  # T, UTC

    @property
    def window(self) -> timedelta:
        return timedelta(minutes=self.backup.window_minutes)

    @property
    def opens_at(self) -> datetime:
        return self.expected_at - self.window

    @property
    def deadline(self) -> datetime:
        return self.expected_at + self.window

    def contains(self, instant: datetime) -> bool:
        return self.opens_at <= instant <= self.deadline

    def is_due(self, as_of: datetime) -> bool:
        """After the deadline a cycle with no report is MISSING."""
        return as_of > self.deadline

    @property
    def label(self) -> str:
        return f"{self.expected_at:%Y-%m-%dT%H:%MZ}"


def cycle_on(backup: ExpectedBackup, day: date) -> Cycle:
    """The backup's cycle on a UTC day."""
    at = datetime.combine(day, time(backup.expected_hour_utc, backup.expected_minute_utc), tzinfo=UTC)
    return Cycle(backup=backup, expected_at=at)


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


def days_with_open_cycles(
    schedule: list[tuple[int, int, int]], as_of: datetime, lookback: timedelta
) -> list[date]:
    """UTC days that a periodic scan at `as_of` must evaluate.

    `schedule` holds (hour, minute, window minutes) per backup. Today always counts; yesterday counts
    while one of its cycles is still inside its window, or closed less than `lookback` ago (the
    scan interval), so that the scan right after a deadline records MISSING on time.
    """
    today = as_of.date()
    yesterday = today - timedelta(days=1)
    days = [today] if schedule else []
    for hour, minute, window in schedule:
        deadline = datetime.combine(yesterday, time(hour, minute), tzinfo=UTC) + timedelta(minutes=window)
        if deadline >= as_of - lookback:
            days.insert(0, yesterday)
            break
    return days
