"""Cron schedules of the jobs file: expanded by cronsim behind the core's `WallClock`, and checked
when the file is loaded (valid expression, a schedule that fires, windows that never overlap).

cronsim (the library Healthchecks uses) reads standard 5-field expressions: numbers, names
(`jan`, `sun`), `*`, ranges, lists and steps, with Debian cron's rule that day-of-month and
day-of-week are OR-ed when neither starts with `*`; `L` (last day of the month), `LW` (last
weekday of the month), `5L` (last Friday) and `MON#2` (second Monday). It is given naive local
times only, so the DST rules are the core's (`core.schedules.to_instant`), not its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from itertools import pairwise
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

from backup_pipeline.core.schedules import DAY, Schedule, transitions

FIELDS = 5
# Overlaps and firing days are checked over this span: every weekday of every date and several
# years of each zone's transitions.
CHECK_SPAN = (date(2020, 1, 1), date(2036, 1, 1))
_START = timedelta(seconds=1)  # cronsim yields matches strictly after its start


@dataclass(frozen=True)
class CronClock:
    """A cron expression's local times (naive: cronsim then applies no DST rule of its own)."""

    expression: str

    def times_between(self, first: datetime, last: datetime) -> Iterator[datetime]:
        for at in CronSim(self.expression, first - _START):
            if at >= last:
                return
            if at >= first:
                yield at

    def describe(self) -> str:
        return _explain(self.expression)


@lru_cache(maxsize=4096)
def _explain(expression: str) -> str:
    try:
        return CronSim(expression, datetime(2000, 1, 1)).explain()
    except Exception:  # explain() is cosmetic: an odd expression is shown as written
        return f"cron {expression!r}"


def check_cron(expression: str) -> str:
    """A 5-field cron expression that fires, normalised (single spaces); ValueError saying what is
    wrong."""
    text = " ".join(expression.split())
    if len(text.split()) != FIELDS:
        raise ValueError(
            "must be a 5-field cron expression (minute hour day-of-month month day-of-week), "
            f'e.g. "30 2 * * 0"; got {expression!r}'
        )
    try:
        CronSim(text, datetime(2000, 1, 1))
    except CronSimError as exc:
        raise ValueError(f"invalid cron expression {text!r}: {exc}") from None
    if not fires(_day_fields(text)):
        first, last = CHECK_SPAN
        raise ValueError(
            f"cron expression {text!r} never fires (no day from {first.year} to {last.year - 1})"
        )
    return text


@lru_cache(maxsize=4096)
def cron_schedule(expression: str, zone: str) -> Schedule:
    """A checked cron expression read in an IANA zone (ValueError when it is not one)."""
    return Schedule(CronClock(check_cron(expression)), ZoneInfo(zone))


def _day_fields(expression: str) -> str:
    return " ".join(expression.split()[2:])


@lru_cache(maxsize=1024)
def fires(day_fields: str) -> bool:
    """Whether a cron expression's day-of-month, month and day-of-week fields let it fire on a day of
    CHECK_SPAN: its first such day, found without listing the others (a daily expression has 5,844)."""
    first, last = (datetime.combine(d, datetime.min.time()) for d in CHECK_SPAN)
    try:
        at = next(iter(CronSim(f"0 0 {day_fields}", first - _START)), None)
    except CronSimError:
        return False
    return at is not None and at < last


@lru_cache(maxsize=1024)
def firing_days(day_fields: str) -> tuple[date, ...]:
    """The days of CHECK_SPAN that a cron expression's day-of-month, month and day-of-week fields
    let it fire on (its hours and minutes do not depend on the date)."""
    first, last = (datetime.combine(d, datetime.min.time()) for d in CHECK_SPAN)
    days = []
    try:
        for at in CronSim(f"0 0 {day_fields}", first - _START):
            if at >= last:
                break
            days.append(at.date())
    except CronSimError:
        return ()
    return tuple(days)


@lru_cache(maxsize=4096)
def overlap(schedule: Schedule, early_minutes: int, grace_minutes: int) -> str | None:
    """Why two consecutive cycles' windows [T - early, T + grace] would overlap, or None.

    Windows are at most 12 hours on each side, so only instants less than a day apart can overlap:
    those of one firing day, of two consecutive firing days, and around the zone's transitions
    (where a day is 23 hours long). Those days are enough to find the shortest gap."""
    assert isinstance(schedule.clock, CronClock)
    days = firing_days(_day_fields(schedule.clock.expression))
    reach = timedelta(minutes=early_minutes + grace_minutes)
    for first, last in _probes(days, schedule):
        start = datetime.combine(first - DAY, datetime.min.time(), tzinfo=UTC)
        instants = schedule.instants(start, start + (last - first).days * DAY + 3 * DAY)
        for earlier, later in pairwise(instants):
            if later - earlier < reach:
                minutes = int((later - earlier).total_seconds() // 60)
                return (
                    f"consecutive expected instants {earlier:%Y-%m-%d %H:%M} and {later:%Y-%m-%d %H:%M} UTC "
                    f"are {minutes} min apart: with early_minutes {early_minutes} and grace_minutes "
                    f"{grace_minutes} their windows overlap (a report would count for two cycles)"
                )
    return None


def _probes(days: tuple[date, ...], schedule: Schedule) -> list[tuple[date, date]]:
    probes = [(days[0], days[0])] if days else []
    pair = next((d for d, e in pairwise(days) if e - d == DAY), None)
    if pair is not None:
        probes.append((pair, pair + DAY))
    probes += [(t.date() - DAY, t.date() + DAY) for t in _transitions(schedule.zone)]
    return probes


@lru_cache(maxsize=512)
def _transitions(zone: ZoneInfo) -> list[datetime]:
    return transitions(zone, *CHECK_SPAN)


def deadline_cron(expression: str, grace_minutes: int) -> str | None:
    """A cron expression firing `grace_minutes` after each time `expression` fires (same zone), or
    None when no single 5-field expression says it: shifted minutes and hours that no longer form a
    grid, or a shift past midnight on a schedule whose days are restricted by date or month (only
    weekdays move along). Dagster's cron freshness policies take one such expression."""
    text = check_cron(expression)
    parsed = CronSim(text, datetime(2000, 1, 1))
    shifted = {h * 60 + m + grace_minutes for h in parsed.hours for m in parsed.minutes}
    days_later = {t // (24 * 60) for t in shifted}
    if len(days_later) != 1:
        return None
    later = days_later.pop()
    minutes = sorted({t % 60 for t in shifted})
    hours = sorted({t // 60 % 24 for t in shifted})
    if len(minutes) * len(hours) != len(shifted):
        return None
    _, _, dom, month, dow = text.split()
    if later:
        if dom != "*" or month != "*":
            return None
        if dow != "*":
            if "#" in dow or "L" in dow.upper():  # the nth or last weekday of a month
                return None
            dow = ",".join(str(d) for d in sorted({(d + later) % 7 for d in parsed.weekdays}))
    return f"{','.join(map(str, minutes))} {','.join(map(str, hours))} {dom} {month} {dow}"
