"""Cycle arithmetic: when a job is expected, which reports belong to which cycle, and when it is late.

A cycle is one expected occurrence of a job: the instant T = a day at HH:MM UTC. Its window is
[T - W, T + W] and its deadline T + W, so a window may straddle midnight.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from backup_pipeline.core.domain import ExpectedJob


@dataclass(frozen=True)
class Cycle:
    job: ExpectedJob
    expected_at: datetime  # T, UTC

    @property
    def window(self) -> timedelta:
        return timedelta(minutes=self.job.window_minutes)

    @property
    def opens_at(self) -> datetime:
        return self.expected_at - self.window

    @property
    def deadline(self) -> datetime:
        return self.expected_at + self.window

    def contains(self, instant: datetime) -> bool:
        return self.opens_at <= instant <= self.deadline

    def is_due(self, now: datetime) -> bool:
        """After the deadline a cycle with no report is MISSING."""
        return now > self.deadline

    @property
    def label(self) -> str:
        return f"{self.expected_at:%Y-%m-%dT%H:%MZ}"


def cycle_on(job: ExpectedJob, day: date) -> Cycle:
    """The job's cycle on a UTC day."""
    at = datetime.combine(day, time(job.expected_hour_utc, job.expected_minute_utc), tzinfo=UTC)
    return Cycle(job=job, expected_at=at)


def days_touched(instant: datetime, window_minutes: int) -> list[date]:
    """UTC days whose cycles (window W) could be relevant to something that ended at `instant`."""
    window = timedelta(minutes=window_minutes)
    first, last = (instant - window).date(), (instant + window).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0, 0), tzinfo=UTC)
    return start, start + timedelta(days=1)


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def days_with_open_cycles(
    schedule: list[tuple[int, int, int]], now: datetime, lookback: timedelta
) -> list[date]:
    """UTC days that a periodic scan at `now` must evaluate.

    `schedule` holds (hour, minute, window minutes) per job. Today always counts; yesterday counts
    while one of its cycles is still inside its window, or closed less than `lookback` ago (the
    scan interval), so that the scan right after a deadline records MISSING on time.
    """
    today = now.date()
    yesterday = today - timedelta(days=1)
    days = [today] if schedule else []
    for hour, minute, window in schedule:
        deadline = datetime.combine(yesterday, time(hour, minute), tzinfo=UTC) + timedelta(minutes=window)
        if deadline >= now - lookback:
            days.insert(0, yesterday)
            break
    return days
