"""Overdue backups in Dagster: every backup asset has a freshness policy derived from its schedule.

A materialization means a good backup (see `fleet`), so "fresh" means a good backup was recorded in
time. For an expected backup the policy is Dagster's cron policy: deadline = each expected instant
plus the grace (in the job's time zone), window = early + grace before it, so the asset turns
overdue in the UI when a deadline passes without a good backup recorded since its window opened.
Schedules whose deadline no single cron expression can say (minutes that shift to another hour
unevenly, dates or last weekdays crossing midnight) get a time-window policy instead: overdue when
no good backup was recorded for longer than the longest gap between two cycles plus the window.
An agent's asset (large fleets) is materialized once its whole day is good: it has a time window of
its backups' longest gap plus their window (a cron policy per agent would cost Dagster's check of
each one, ~17 ms, at every load of 1,000 agents). The daemon's freshness loop evaluates them (on by
default in Dagster 1.13).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from itertools import pairwise
from typing import Any

from dagster import FreshnessPolicy

from backup_pipeline.config.jobs_file import schedule_of
from backup_pipeline.config.schedules import CronClock, deadline_cron
from backup_pipeline.core.schedules import DailyAt, Schedule

GAP_SPAN = timedelta(days=400)  # a year of instants (and a little more) finds every schedule's longest gap
_MINUTE = timedelta(minutes=1)  # Dagster's least window


def backup_policy(backup: Any) -> FreshnessPolicy:
    """An expected backup's asset, materialized by each good cycle: overdue from a deadline (expected
    instant + grace) passed without a good backup recorded since its window opened."""
    schedule = schedule_of(backup)
    window = timedelta(minutes=backup.early_minutes + backup.grace_minutes)
    deadline = _deadline(schedule, backup.grace_minutes)
    if deadline is not None:
        cron, zone = deadline
        policy = _cron_policy(cron, max(_MINUTE, min(window, _gaps(schedule)[0])), zone)
        if policy is not None:
            return policy
    return FreshnessPolicy.time_window(fail_window=_gaps(schedule)[1] + window)


def agent_policy(backups: Sequence[Any]) -> FreshnessPolicy:
    """An agent's asset, materialized once a day when all its cycles of the day are good: overdue
    when no good day was recorded for longer than its backups' longest gap between two cycles plus
    their widest window (a day and a window for daily backups)."""
    longest = max(
        _gaps(schedule_of(b))[1] + timedelta(minutes=b.early_minutes + b.grace_minutes) for b in backups
    )
    return FreshnessPolicy.time_window(fail_window=longest)


@lru_cache(maxsize=4096)
def _cron_policy(cron: str, lower_bound: timedelta, zone: str) -> FreshnessPolicy | None:
    """Shared by every asset with the same deadlines: Dagster checks each new cron policy by walking
    a thousand of its ticks (~17 ms), which thousands of assets would pay at every load."""
    try:
        return FreshnessPolicy.cron(deadline_cron=cron, lower_bound_delta=lower_bound, timezone=zone)
    except Exception:  # Dagster checks crons with croniter, whose dialect lacks e.g. `5L`
        return None


@lru_cache(maxsize=4096)
def _deadline(schedule: Schedule, grace_minutes: int) -> tuple[str, str] | None:
    """(deadline cron, zone) of a schedule, or None when no single cron expression says it."""
    clock = schedule.clock
    if isinstance(clock, DailyAt):
        expression = f"{clock.minute} {clock.hour} * * *"
    elif isinstance(clock, CronClock):
        expression = clock.expression
    else:
        return None
    cron = deadline_cron(expression, grace_minutes)
    return (cron, schedule.zone_name) if cron is not None else None


@lru_cache(maxsize=4096)
def _gaps(schedule: Schedule, reference: date | None = None) -> tuple[timedelta, timedelta]:
    """The shortest and longest time between two consecutive expected instants, over a year."""
    start = datetime.combine(reference or datetime.now(UTC).date(), datetime.min.time(), tzinfo=UTC)
    instants = schedule.instants(start, start + GAP_SPAN)
    gaps = [later - earlier for earlier, later in pairwise(instants)]
    if not gaps:  # fires once a year or less: a year is the least one can say
        return GAP_SPAN, GAP_SPAN
    return min(gaps), max(gaps)
