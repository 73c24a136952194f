"""Scans that start by themselves: a schedule every 15 minutes and a sensor on the deposit area.

Both request *automatic* runs (only new work, never cycles owed before a job existed). The sensor
never parses a report: it lists `log/` folders with scandir and keeps in its cursor a digest of
every pending file (name, size, mtime), so files sharing an mtime, or uploaded with an old
preserved mtime, are still noticed; run keys make a repeated request harmless.
"""

import hashlib
import json
from datetime import UTC, date, datetime, timedelta

from dagster import (
    DefaultScheduleStatus,
    DefaultSensorStatus,
    JobDefinition,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    schedule,
    sensor,
)

from backup_pipeline.core.cycles import days_touched, days_with_open_cycles
from backup_pipeline.core.reports import parse_file_name_time
from backup_pipeline.deposit import discover_agents, list_reports
from backup_pipeline.jobs_file import ResolvedJob
from backup_pipeline.settings import Settings

SCAN_INTERVAL = timedelta(minutes=15)
AUTOMATIC_TAG = "backup_pipeline/automatic"
ZONE_SLACK_MINUTES = 14 * 60  # file-name times are the agent's local time: any zone


def build_schedule(job: JobDefinition, jobs: list[ResolvedJob]) -> ScheduleDefinition:
    plan = [(j.expected_hour_utc, j.expected_minute_utc, j.window_minutes) for j in jobs]

    @schedule(
        name="scan_every_15_minutes",
        cron_schedule="*/15 * * * *",
        execution_timezone="UTC",
        job=job,
        default_status=DefaultScheduleStatus.RUNNING,
        description="Scan the partitions that still have open cycles, so MISSING is recorded on time.",
    )
    def _schedule(context: ScheduleEvaluationContext) -> list[RunRequest]:
        now = context.scheduled_execution_time or datetime.now(UTC)
        now = now.astimezone(UTC)
        return [
            RunRequest(
                run_key=f"{day.isoformat()}@{now:%Y-%m-%dT%H:%M}",
                partition_key=day.isoformat(),
                tags={AUTOMATIC_TAG: "true"},
            )
            for day in days_with_open_cycles(plan, now, SCAN_INTERVAL)
        ]

    return _schedule


def pending_files(settings: Settings) -> dict[str, tuple[str, str]]:
    """Digest → (agent, file name) of every report file waiting in a log/ folder."""
    agents, _ = discover_agents(settings.storage_root)
    found: dict[str, tuple[str, str]] = {}
    for agent in agents:
        for report in list_reports(agent):
            key = f"{agent.agent_id}/{report.shown}:{report.size}:{report.mtime}"
            found[hashlib.blake2b(key.encode(), digest_size=8).hexdigest()] = (agent.agent_id, report.shown)
    return found


def partitions_for(files: list[tuple[str, str]], widest_window: int, today: date, first: date) -> list[date]:
    """Days whose cycles new report files can be relevant to, judged from their names alone."""
    days: set[date] = set()
    for _, name in files:
        named_at = parse_file_name_time(name)
        if named_at is None:
            days.add(today)  # still has to be recorded (as rejected)
            continue
        days.update(days_touched(named_at.replace(tzinfo=UTC), widest_window + ZONE_SLACK_MINUTES))
    return sorted({min(max(d, first), today) for d in days})  # clamped days coincide: once each


def build_sensor(job: JobDefinition, jobs: list[ResolvedJob], settings: Settings) -> SensorDefinition:
    widest = max((j.window_minutes for j in jobs), default=settings.window_minutes)

    @sensor(
        name="deposit_sensor",
        job=job,
        minimum_interval_seconds=30,
        default_status=DefaultSensorStatus.RUNNING,
        description="Request a scan when new report files land in the deposit area.",
    )
    def _sensor(context: SensorEvaluationContext) -> SensorResult | SkipReason:
        try:
            current = pending_files(settings)
        except FileNotFoundError as exc:
            return SkipReason(str(exc))
        seen = set(json.loads(context.cursor)) if context.cursor else set()
        new = sorted(set(current) - seen)
        cursor = json.dumps(sorted(current))
        if not new:
            return SensorResult(skip_reason=SkipReason("no new report file"), cursor=cursor)
        today = datetime.now(UTC).date()
        batch = hashlib.blake2b("".join(new).encode(), digest_size=8).hexdigest()
        requests = [
            RunRequest(
                run_key=f"{day.isoformat()}:{batch}",
                partition_key=day.isoformat(),
                tags={AUTOMATIC_TAG: "true"},
            )
            for day in partitions_for([current[k] for k in new], widest, today, settings.start_date)
        ]
        context.log.info(f"{len(new)} new report file(s): requesting {[r.partition_key for r in requests]}")
        return SensorResult(run_requests=requests, cursor=cursor)

    return _sensor
