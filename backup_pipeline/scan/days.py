"""Which days a scan owes, for the runs that choose their own partitions (the CLI's automatic scan
and the deposit sensor): days with a cycle still without an entry, and days that the report files
waiting in log/ can bear on, judged from their names alone (nothing is parsed before ingestion).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from backup_pipeline.adapters.deposit import UnsafeFolder, discover_agents, list_reports
from backup_pipeline.config.jobs_file import schedule_of
from backup_pipeline.config.settings import Settings
from backup_pipeline.core.cycles import day_bounds, days_touched_in_any_zone
from backup_pipeline.core.reports import parse_file_name_time
from backup_pipeline.core.schedules import Schedule
from backup_pipeline.storage import expected_backups
from backup_pipeline.storage.database import Database
from backup_pipeline.storage.expected_backups import ScheduledCycles


def first_day(database: Database, settings: Settings) -> date:
    """The first day an automatic scan evaluates: the partitions' start, or the day the first
    expected backup was created if later (earlier cycles are never owed)."""
    with database.sessions() as session:
        created = expected_backups.earliest_backup_creation(session)
    return max(settings.start_date, created.date()) if created else settings.start_date


def open_days(database: Database, settings: Settings, as_of: datetime) -> list[date]:
    """Days up to `as_of`'s with a cycle still without an entry, since the expected backups exist."""
    with database.sessions() as session:
        created = expected_backups.earliest_backup_creation(session)
        if created is None:
            return [as_of.date()]
        first = max(settings.start_date, created.date())
        groups = scheduled_cycles(expected_backups.schedule_groups(session), first, as_of.date())
        days = expected_backups.open_days(session, groups)
    return days or [as_of.date()]


def overdue_days(database: Database, settings: Settings, as_of: datetime) -> list[date]:
    """Days up to `as_of`'s with a cycle past its deadline and still without an entry, since the
    expected backups exist: what the periodic scan must evaluate so that MISSING is recorded on time
    (a cycle whose report arrives is the deposit sensor's work). None when nothing is overdue."""
    with database.sessions() as session:
        created = expected_backups.earliest_backup_creation(session)
        if created is None:
            return []
        first = max(settings.start_date, created.date())
        groups = scheduled_cycles(expected_backups.schedule_groups(session), first, as_of.date())
        return expected_backups.open_days(session, groups, past_deadline_at=as_of)


def scheduled_cycles(groups: Iterable[Any], first: date, last: date) -> list[ScheduledCycles]:
    """Each schedule's backups (from groups of backups expected alike: schedule columns and ids) with
    its instants on the UTC days [first, last]."""
    members: dict[Schedule, list[int]] = defaultdict(list)
    for group in groups:
        members[schedule_of(group)] += group.ids
    start, end = day_bounds(first)[0], day_bounds(last)[1]
    return [
        ScheduledCycles(job_ids=ids, instants=list(schedule.instants(start, end)))
        for schedule, ids in members.items()
    ]


def pending_files(settings: Settings) -> dict[str, tuple[str, str]]:
    """Digest → (agent, file name) of every report file waiting in a log/ folder (FileNotFoundError
    when the deposit root is missing)."""
    agents, _ = discover_agents(settings.storage_root)
    found: dict[str, tuple[str, str]] = {}
    for agent in agents:
        try:
            listed = list(list_reports(agent))
        except UnsafeFolder:
            continue  # swapped since it was found: ingestion says so
        for report in listed:
            key = f"{agent.agent_id}/{report.shown}:{report.size}:{report.mtime}"
            found[hashlib.blake2b(key.encode(), digest_size=8).hexdigest()] = (agent.agent_id, report.shown)
    return found


def days_named_by(
    files: Iterable[tuple[str, str]], widest_window: int, today: date, first: date
) -> list[date]:
    """Days whose cycles report files can be relevant to, judged from their names alone."""
    days: set[date] = set()
    window = timedelta(minutes=widest_window)
    for _, name in files:
        named_at = parse_file_name_time(name)
        if named_at is None:
            days.add(today)  # still has to be recorded (as rejected)
            continue
        days.update(days_touched_in_any_zone(named_at.replace(tzinfo=UTC), window))
    return sorted({min(max(d, first), today) for d in days})  # clamped days coincide: once each


def waiting_days(database: Database, settings: Settings, as_of: datetime) -> list[date]:
    """The days the report files waiting in log/ can bear on (as the deposit sensor judges them)."""
    try:
        files = list(pending_files(settings).values())
    except FileNotFoundError:
        return []
    if not files:
        return []
    with database.sessions() as session:
        widest = max(expected_backups.agent_windows(session).values(), default=settings.window_minutes)
        created = expected_backups.earliest_backup_creation(session)
    first = max(settings.start_date, created.date()) if created else settings.start_date
    return days_named_by(files, widest, as_of.date(), first)
