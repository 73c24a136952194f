"""Cycle arithmetic with schedules: expected instants in a zone, DST done right, cycles of a UTC day.

The cron clock is the configuration layer's (cronsim); the rules under test (local time → instant,
a day's cycles, windows) are the core's, so they hold whatever the library would do with DST.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backup_pipeline.config.schedules import CronClock, cron_schedule, overlap
from backup_pipeline.core.cycles import cycles_on
from backup_pipeline.core.domain import ExpectedBackup
from backup_pipeline.core.schedules import DailyAt, Schedule, latest_time_of_day, to_instant

PARIS, NEW_YORK = ZoneInfo("Europe/Paris"), ZoneInfo("America/New_York")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def instants_on(expression: str, zone: str, day: str) -> list[str]:
    schedule = cron_schedule(expression, zone)
    return [f"{t:%Y-%m-%dT%H:%MZ}" for t in schedule.instants_on(date.fromisoformat(day))]


# ---------------------------------------------------------------- DST, both transitions, two zones


@pytest.mark.parametrize(
    ("zone", "expression", "day", "expected"),
    [
        # Paris springs forward at 02:00 → 03:00 on 2025-03-30: 02:30 does not exist, the cycle is the
        # first valid instant after it (03:00 CEST = 01:00 UTC); the days around keep 02:30 local.
        ("Europe/Paris", "30 2 * * *", "2025-03-29", ["2025-03-29T01:30Z"]),
        ("Europe/Paris", "30 2 * * *", "2025-03-30", ["2025-03-30T01:00Z"]),
        ("Europe/Paris", "30 2 * * *", "2025-03-31", ["2025-03-31T00:30Z"]),
        # ... and falls back at 03:00 → 02:00 on 2025-10-26: 02:30 happens twice, expected once, first.
        ("Europe/Paris", "30 2 * * *", "2025-10-26", ["2025-10-26T00:30Z"]),
        ("Europe/Paris", "30 2 * * *", "2025-10-27", ["2025-10-27T01:30Z"]),
        # Every 30 minutes across the gap: 02:00 and 02:30 both land on 03:00 — one cycle, not three.
        # (The next night's 01:00 and 01:30 CEST are 23:00 and 23:30 UTC: this UTC day holds them.)
        (
            "Europe/Paris",
            "0,30 1-3 * * *",
            "2025-03-30",
            [
                "2025-03-30T00:00Z",
                "2025-03-30T00:30Z",
                "2025-03-30T01:00Z",
                "2025-03-30T01:30Z",
                "2025-03-30T23:00Z",
                "2025-03-30T23:30Z",
            ],
        ),
        # Hourly across the fall-back: 02:00 local is expected at its first occurrence only.
        ("Europe/Paris", "0 1-3 * * *", "2025-10-26", ["2025-10-26T00:00Z", "2025-10-26T02:00Z"]),
        # New York springs forward at 02:00 → 03:00 on 2025-03-09 and falls back 02:00 → 01:00 on
        # 2025-11-02 (01:30 happens twice).
        ("America/New_York", "30 2 * * *", "2025-03-09", ["2025-03-09T07:00Z"]),
        ("America/New_York", "30 2 * * *", "2025-03-10", ["2025-03-10T06:30Z"]),
        ("America/New_York", "30 1 * * *", "2025-11-02", ["2025-11-02T05:30Z"]),
        ("America/New_York", "30 1 * * *", "2025-11-03", ["2025-11-03T06:30Z"]),
    ],
)
def test_dst_transitions(zone: str, expression: str, day: str, expected: list[str]) -> None:
    assert instants_on(expression, zone, day) == expected


def test_the_hour_of_a_fall_back_before_its_utc_day_is_on_the_day_before() -> None:
    # 01:00 Paris on 2025-10-26 is 23:00 UTC on the 25th: that day holds it.
    assert instants_on("0 1-3 * * *", "Europe/Paris", "2025-10-25")[-1] == "2025-10-25T23:00Z"


@pytest.mark.parametrize(
    ("local", "zone", "instant"),
    [
        ("2025-03-30T02:00:00", PARIS, "2025-03-30T01:00:00"),  # start of the gap
        ("2025-03-30T02:59:00", PARIS, "2025-03-30T01:00:00"),  # end of the gap
        ("2025-03-30T03:00:00", PARIS, "2025-03-30T01:00:00"),  # first valid time: the same instant
        ("2025-10-26T02:00:00", PARIS, "2025-10-26T00:00:00"),  # repeated: first occurrence (CEST)
        ("2025-10-26T02:59:00", PARIS, "2025-10-26T00:59:00"),
        ("2025-10-26T03:00:00", PARIS, "2025-10-26T02:00:00"),
        ("2025-03-09T02:15:00", NEW_YORK, "2025-03-09T07:00:00"),
        ("2025-11-02T01:00:00", NEW_YORK, "2025-11-02T05:00:00"),
        ("2025-11-02T01:59:00", NEW_YORK, "2025-11-02T05:59:00"),
    ],
)
def test_local_times_become_instants_by_the_rules(local: str, zone: ZoneInfo, instant: str) -> None:
    assert to_instant(datetime.fromisoformat(local), zone) == at(instant)


def test_windows_and_deadlines_follow_the_instant_not_the_local_time() -> None:
    backup = ExpectedBackup(
        "SIRPACAM_DOUALA_NEWBELL",
        "compta_db",
        cron_schedule("30 2 * * *", "Europe/Paris"),
        early_minutes=10,
        grace_minutes=180,
    )
    (cycle,) = cycles_on(backup, date(2025, 3, 30))
    assert cycle.expected_at == at("2025-03-30T01:00:00")
    assert cycle.opens_at == at("2025-03-30T00:50:00")
    assert cycle.deadline == at("2025-03-30T04:00:00")
    assert not cycle.is_due(at("2025-03-30T04:00:00")) and cycle.is_due(at("2025-03-30T04:00:01"))


# ---------------------------------------------------------------- days, readable text


def test_a_weekly_schedule_has_cycles_on_its_day_only() -> None:
    schedule = cron_schedule("30 2 * * 0", "Europe/Paris")
    week = [date(2025, 11, 17) + timedelta(days=i) for i in range(7)]
    assert {d.isoformat(): len(schedule.instants_on(d)) for d in week} == {
        "2025-11-17": 0,
        "2025-11-18": 0,
        "2025-11-19": 0,
        "2025-11-20": 0,
        "2025-11-21": 0,
        "2025-11-22": 0,
        "2025-11-23": 1,
    }
    assert schedule.text == "At 02:30 on Sunday (Europe/Paris)"


def test_month_end_in_a_30_and_a_31_day_month() -> None:
    schedule = cron_schedule("0 22 L * *", "UTC")
    found = schedule.instants(at("2025-11-01T00:00:00"), at("2026-01-01T00:00:00"))
    assert found == (at("2025-11-30T22:00:00"), at("2025-12-31T22:00:00"))
    # In New York the last day's 22:00 is on the next UTC day: that partition holds the cycle.
    assert instants_on("0 22 L * *", "America/New_York", "2025-12-01") == ["2025-12-01T03:00Z"]


def test_the_daily_utc_form_is_a_schedule_too() -> None:
    schedule = Schedule.daily_utc(13, 0)
    assert schedule.instants_on(date(2025, 11, 21)) == (at("2025-11-21T13:00:00"),)
    assert schedule.text == "daily at 13:00 (UTC)"
    assert Schedule(DailyAt(13, 0)) == schedule  # equal timings share cached instants


def test_the_latest_time_of_day_reads_each_local_time_at_each_offset() -> None:
    # 23:30 in Paris is 22:30 UTC in winter and 21:30 in summer; the latest is 22:30.
    assert latest_time_of_day(cron_schedule("30 23 * * *", "Europe/Paris"), date(2025, 1, 1)) == timedelta(
        hours=22, minutes=30
    )
    # 00:30 in Paris is 23:30 UTC the day before (winter): late in its UTC day.
    assert latest_time_of_day(cron_schedule("30 0 * * 1", "Europe/Paris"), date(2025, 1, 1)) == timedelta(
        hours=23, minutes=30
    )


# ---------------------------------------------------------------- properties: any cron, any zone

MINUTES = st.one_of(
    st.just("*/15"),
    st.integers(0, 59).map(str),
    st.tuples(st.integers(0, 29), st.integers(30, 59)).map(lambda t: f"{t[0]},{t[1]}"),
    st.sampled_from(["0,30", "*/20", "5-10"]),
)
HOURS = st.one_of(
    st.just("*"),
    st.integers(0, 23).map(str),
    st.integers(2, 8).map(lambda k: f"*/{k}"),
    st.tuples(st.integers(0, 11), st.integers(12, 23)).map(lambda t: f"{t[0]}-{t[1]}"),
    st.sampled_from(["1,2,3", "2", "1-3"]),  # the hours DST transitions happen in
)
DAYS_OF_MONTH = st.one_of(
    st.just("*"), st.integers(1, 28).map(str), st.sampled_from(["L", "LW", "1,15", "*/2"])
)
MONTHS = st.one_of(st.just("*"), st.integers(1, 12).map(str), st.sampled_from(["3,10,11", "*/3"]))
DAYS_OF_WEEK = st.one_of(st.just("*"), st.sampled_from(["0", "1-5", "6,0", "MON#2", "5L", "sun"]))
CRONS = st.tuples(MINUTES, HOURS, DAYS_OF_MONTH, MONTHS, DAYS_OF_WEEK).map(" ".join)
ZONES = st.sampled_from(sorted(available_timezones() - {"Factory", "localtime"}))
DAYS = st.dates(date(2020, 1, 1), date(2035, 12, 31))


def _schedule(expression: str, zone: str) -> Schedule:
    try:
        return cron_schedule(expression, zone)
    except ValueError:  # a combination that never fires (e.g. `31` with `2`): not a schedule
        from hypothesis import reject

        reject()


@settings(max_examples=300, deadline=None)
@given(expression=CRONS, zone=ZONES, day=DAYS)
def test_a_days_cycles_are_strictly_increasing_in_that_day_and_one_per_instant(
    expression: str, zone: str, day: date
) -> None:
    schedule = _schedule(expression, zone)
    start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    instants = schedule.instants_on(day)
    assert all(earlier < later for earlier, later in pairwise(instants))
    assert all(start <= t < start + timedelta(days=1) for t in instants)
    assert len(set(instants)) == len(instants)
    # Exactly the images of the local times the clock fires at: none lost, none invented.
    local = schedule.clock.times_between(
        (start - timedelta(hours=14)).replace(tzinfo=None), (start + timedelta(hours=38)).replace(tzinfo=None)
    )
    images = {i for t in local if start <= (i := to_instant(t, schedule.zone)) < start + timedelta(days=1)}
    assert set(instants) == images


@settings(max_examples=150, deadline=None)
@given(expression=CRONS, zone=ZONES, day=DAYS, days=st.integers(2, 4))
def test_a_span_is_the_days_put_together(expression: str, zone: str, day: date, days: int) -> None:
    schedule = _schedule(expression, zone)
    start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    joined = [t for i in range(days) for t in schedule.instants_on(day + timedelta(days=i))]
    assert list(schedule.instants(start, start + timedelta(days=days))) == joined


@settings(max_examples=60, deadline=None)
@given(
    expression=CRONS,
    zone=st.sampled_from(["Europe/Paris", "America/New_York", "Australia/Lord_Howe", "UTC", "Asia/Kolkata"]),
    early=st.integers(0, 720),
    grace=st.integers(1, 720),
    day=st.dates(date(2024, 1, 1), date(2030, 12, 31)),
)
def test_accepted_windows_never_overlap(
    expression: str, zone: str, early: int, grace: int, day: date
) -> None:
    """When the jobs file accepts a schedule and its windows, no report can count for two cycles."""
    schedule = _schedule(expression, zone)
    if overlap(schedule, early, grace) is not None:
        return
    start = datetime.combine(day - timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    instants = schedule.instants(start, start + timedelta(days=3))
    reach = timedelta(minutes=early + grace)
    assert all(later - earlier >= reach for earlier, later in pairwise(instants))


def test_the_cron_clock_gives_naive_local_times_in_range() -> None:
    clock = CronClock("0 */6 * * *")
    first, last = datetime(2025, 3, 30), datetime(2025, 3, 31)
    assert list(clock.times_between(first, last)) == [datetime(2025, 3, 30, h) for h in (0, 6, 12, 18)]
