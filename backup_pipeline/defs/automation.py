"""Scans that start by themselves: a schedule every 15 minutes and a sensor on the deposit area.

Both request *automatic* runs (only new work, never cycles owed before an expected backup existed).
Each schedule tick asks PostgreSQL which days have a cycle past its deadline and still without an
entry (the synced fleet, as scans see it) and requests those days only, or skips. The sensor never
parses a report: it lists `log/` folders with scandir and keeps in its cursor a digest of every
pending file (name, size, mtime), so files sharing an mtime, or uploaded with an old preserved
mtime, are still noticed; run keys make a repeated request harmless.
"""

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from dagster import (
    DefaultScheduleStatus,
    DefaultSensorStatus,
    JobDefinition,
    ResourceParam,
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

from backup_pipeline.config.settings import Settings
from backup_pipeline.defs.resources import DatabaseResource
from backup_pipeline.defs.scan_job import AUTOMATIC_TAG
from backup_pipeline.scan.days import days_named_by, overdue_days, pending_files

SCAN_SCHEDULE = "scan_every_15_minutes"
DEPOSIT_SENSOR = "deposit_sensor"


def build_scan_schedule(job: JobDefinition) -> ScheduleDefinition:
    @schedule(
        name=SCAN_SCHEDULE,
        cron_schedule="*/15 * * * *",
        execution_timezone="UTC",
        job=job,
        default_status=DefaultScheduleStatus.RUNNING,
        description=(
            "Every 15 minutes, scan the days that owe something: a cycle past its deadline without an "
            "entry (MISSING is then recorded on time). Reports that arrive are the deposit sensor's."
        ),
    )
    def _schedule(
        context: ScheduleEvaluationContext, settings: ResourceParam[Settings], database: DatabaseResource
    ) -> list[RunRequest] | SkipReason:
        as_of = (context.scheduled_execution_time or datetime.now(UTC)).astimezone(UTC)
        days = overdue_days(database.get(), settings, as_of)
        if not days:
            return SkipReason(f"no cycle past its deadline without an entry as of {as_of:%Y-%m-%d %H:%M} UTC")
        return [
            RunRequest(
                run_key=f"{day.isoformat()}@{as_of:%Y-%m-%dT%H:%M}",
                partition_key=day.isoformat(),
                tags={AUTOMATIC_TAG: "true"},
            )
            for day in days
        ]

    return _schedule


def build_deposit_sensor(job: JobDefinition, backups: Sequence[Any]) -> SensorDefinition:
    """`backups`: the synced fleet the definitions were built from (its widest window)."""
    declared_widest = max((max(b.early_minutes, b.grace_minutes) for b in backups), default=None)

    @sensor(
        name=DEPOSIT_SENSOR,
        job=job,
        minimum_interval_seconds=30,
        default_status=DefaultSensorStatus.RUNNING,
        description="Request a scan when new report files land in the deposit area.",
    )
    def _sensor(
        context: SensorEvaluationContext, settings: ResourceParam[Settings]
    ) -> SensorResult | SkipReason:
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
        widest = declared_widest or settings.window_minutes
        batch = hashlib.blake2b("".join(new).encode(), digest_size=8).hexdigest()
        requests = [
            RunRequest(
                run_key=f"{day.isoformat()}:{batch}",
                partition_key=day.isoformat(),
                tags={AUTOMATIC_TAG: "true"},
            )
            for day in days_named_by([current[k] for k in new], widest, today, settings.start_date)
        ]
        context.log.info(f"{len(new)} new report file(s): requesting {[r.partition_key for r in requests]}")
        return SensorResult(run_requests=requests, cursor=cursor)

    return _sensor
