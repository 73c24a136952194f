"""When an expected backup is expected: wall-clock times in a time zone, turned into UTC instants.

A schedule is a `WallClock` (the local times it fires at, as naive datetimes) read in a zone. The
core stays pure: cron expressions are expanded by a library behind the `WallClock` protocol in the
configuration layer (`config.schedules.CronClock`); the daily-UTC form of the jobs file
(`expected_hour_utc`/`expected_minute_utc`) is `DailyAt` here.

Local times become instants by one rule, whatever the library would do: a local time that does not
exist (spring forward) is expected at the first valid instant after it, the transition itself; a
local time that occurs twice (fall back) is expected once, at its first occurrence. Several local
times landing on one instant are one cycle.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from itertools import islice
from typing import Protocol

# A local time is at most 14 hours from its instant (UTC-12 to UTC+14): the local times that can
# land in a span of instants lie within that reach of it.
LOCAL_REACH = timedelta(hours=14)
DAY = timedelta(days=1)


class WallClock(Protocol):
    """The local wall-clock times a schedule fires at."""

    def times_between(self, first: datetime, last: datetime) -> Iterator[datetime]:
        """Naive local times `first <= t < last`, increasing."""
        ...

    def describe(self) -> str:
        """The times in words, e.g. "At 02:30 on Sunday"."""
        ...


@dataclass(frozen=True)
class DailyAt:
    """Every day at HH:MM (the jobs file's `expected_hour_utc`/`expected_minute_utc`, read in UTC)."""

    hour: int
    minute: int

    def times_between(self, first: datetime, last: datetime) -> Iterator[datetime]:
        at = datetime.combine(first.date(), time(self.hour, self.minute))
        at = at if at >= first else at + DAY
        while at < last:
            yield at
            at += DAY

    def describe(self) -> str:
        return f"daily at {self.hour:02d}:{self.minute:02d}"


@dataclass(frozen=True)
class Schedule:
    """A wall clock read in a zone: the expected instants of an expected backup."""

    clock: WallClock
    zone: tzinfo = UTC

    @classmethod
    def daily_utc(cls, hour: int, minute: int) -> Schedule:
        return _daily_utc(hour, minute)

    @property
    def zone_name(self) -> str:
        return getattr(self.zone, "key", None) or str(self.zone)

    @property
    def text(self) -> str:
        """Readable, e.g. "At 02:30 on Sunday (Europe/Paris)" or "daily at 13:00 (UTC)"."""
        return f"{self.clock.describe()} ({self.zone_name})"

    def instants(self, start: datetime, end: datetime) -> tuple[datetime, ...]:
        """The expected instants in [start, end), in UTC, strictly increasing."""
        return _instants(self, start.astimezone(UTC), end.astimezone(UTC))

    def instants_on(self, day: date) -> tuple[datetime, ...]:
        """The expected instants falling on a UTC day (none: the day owes nothing)."""
        return _instants_on(self, day)


@lru_cache(maxsize=1440)
def _daily_utc(hour: int, minute: int) -> Schedule:
    return Schedule(DailyAt(hour, minute), UTC)


@lru_cache(maxsize=65536)  # a scan asks for the same day of the same few schedules 20,000 times
def _instants_on(schedule: Schedule, day: date) -> tuple[datetime, ...]:
    start = datetime.combine(day, time(0), tzinfo=UTC)
    return schedule.instants(start, start + DAY)


@lru_cache(maxsize=65536)
def _instants(schedule: Schedule, start: datetime, end: datetime) -> tuple[datetime, ...]:
    first = (start - LOCAL_REACH).replace(tzinfo=None)
    last = (end + LOCAL_REACH).replace(tzinfo=None)
    found: set[datetime] = set()
    for local in schedule.clock.times_between(first, last):
        instant = to_instant(local, schedule.zone)
        if start <= instant < end:
            found.add(instant)
    return tuple(sorted(found))


def to_instant(local: datetime, zone: tzinfo) -> datetime:
    """The instant a naive local time stands for in `zone`, by the rules above."""
    earlier = local.replace(tzinfo=zone, fold=0)
    later = local.replace(tzinfo=zone, fold=1)
    first = earlier.astimezone(UTC)
    if earlier.utcoffset() == later.utcoffset():
        return first
    if first.astimezone(zone).replace(tzinfo=None) == local:
        return first  # it occurs twice: its first occurrence
    # It does not exist: fold=1 reads it with the offset after the jump (an instant before the
    # transition), fold=0 with the one before (an instant after it). The transition lies between.
    return _transition(zone, later.astimezone(UTC), first)


def _transition(zone: tzinfo, before: datetime, after: datetime) -> datetime:
    """The first instant in (before, after] with `after`'s offset (transitions fall on whole seconds)."""
    offset = after.astimezone(zone).utcoffset()
    low, high = before, after
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        middle = middle.replace(microsecond=0)
        if middle <= low:
            middle = low + timedelta(seconds=1)
        if middle.astimezone(zone).utcoffset() == offset:
            high = middle
        else:
            low = middle
    return high


def first_times(clock: WallClock, first: datetime, last: datetime, limit: int) -> list[datetime]:
    """At most `limit` of the clock's local times in [first, last)."""
    return list(islice(clock.times_between(first, last), limit))


def times_of_day(clock: WallClock, search_from: date, search_days: int) -> list[time]:
    """The local times of day of the clock's first firing day on or after `search_from` (within
    `search_days`): a 5-field cron's hours and minutes do not depend on the date."""
    start = datetime.combine(search_from, time(0))
    found = first_times(clock, start, start + timedelta(days=search_days), 1)
    if not found:
        return []
    day = datetime.combine(found[0].date(), time(0))
    return [t.time() for t in clock.times_between(day, day + DAY)]


@lru_cache(maxsize=1024)
def zone_offsets(zone: tzinfo, year: int) -> frozenset[timedelta]:
    """The UTC offsets a zone takes during a year (sampled daily at noon UTC)."""
    start = datetime(year, 1, 1, 12, tzinfo=UTC)
    return frozenset(
        offset
        for day in range(366)
        if (offset := (start + day * DAY).astimezone(zone).utcoffset()) is not None
    )


def latest_time_of_day(schedule: Schedule, reference: date) -> timedelta | None:
    """An upper bound of how late in its UTC day an instant of the schedule falls (None when it never
    fires within a year of `reference`): each local time of day read at each offset the zone takes."""
    local = times_of_day(schedule.clock, reference, 366)
    if not local:
        return None
    offsets = zone_offsets(schedule.zone, reference.year)
    seconds = [
        ((t.hour * 3600 + t.minute * 60 + t.second) - int(o.total_seconds())) % 86400
        for t in local
        for o in offsets
    ]
    return timedelta(seconds=max(seconds))


def transitions(zone: tzinfo, first: date, last: date) -> list[datetime]:
    """The instants in [first, last) where the zone's offset changes."""
    found = []
    at = datetime.combine(first, time(0), tzinfo=UTC)
    end = datetime.combine(last, time(0), tzinfo=UTC)
    offset = at.astimezone(zone).utcoffset()
    while at < end:
        following = at + DAY
        following_offset = following.astimezone(zone).utcoffset()
        if following_offset != offset:
            found.append(_transition(zone, at, following))
            offset = following_offset
        at = following
    return found
