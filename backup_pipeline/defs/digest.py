"""The daily fleet digest in Dagster: a partitioned asset, the job that materializes it, its schedule.

The digest is a real (executable) asset, one partition per day, built by `digest.build` from
PostgreSQL. A small job of its own materializes it — not the scan, which runs every 15 minutes and
would rewrite the day's digest dozens of times — and the `daily_fleet_digest` schedule runs that job
once a day, for the day whose cycles are all decided: 30 minutes (two scans) after the latest
deadline among the declared expected backups. Any day can also be (re)materialized from the UI or
backfilled over a range after a scan re-evaluated past days, and `backup-pipeline digest` prints the
same digest from the command line.
"""

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    DefaultScheduleStatus,
    JobDefinition,
    MaterializeResult,
    MetadataValue,
    PartitionsDefinition,
    ResourceParam,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    asset,
    define_asset_job,
    schedule,
)

from backup_pipeline.config.jobs_file import schedule_of
from backup_pipeline.config.settings import Settings
from backup_pipeline.core.schedules import latest_time_of_day
from backup_pipeline.defs.fleet import REPORTS_ASSET
from backup_pipeline.defs.resources import DatabaseResource
from backup_pipeline.digest.build import build_digest
from backup_pipeline.digest.export import write_csv
from backup_pipeline.digest.render import to_markdown

DIGEST_ASSET = AssetKey(["fleet_digest"])
DIGEST_JOB = "fleet_digest_job"
DIGEST_SCHEDULE = "daily_fleet_digest"
SETTLE = timedelta(minutes=30)  # two scans after the last deadline


def digest_delay(backups: Sequence[Any], reference: date | None = None) -> timedelta:
    """How long after a day's midnight (UTC) all its cycles are decided and scanned: the latest time
    of day any schedule fires at (each local time read at each offset its zone takes during the
    reference year), plus its grace."""
    reference = reference or datetime.now(UTC).date()
    timings = {(schedule_of(b), b.grace_minutes): b for b in backups}
    deadlines = [
        latest + timedelta(minutes=b.grace_minutes)
        for b in timings.values()
        if (latest := latest_time_of_day(schedule_of(b), reference)) is not None
    ]
    if not deadlines:
        return timedelta(days=1) + SETTLE
    return max(deadlines) + SETTLE


def build_digest_asset(partitions: PartitionsDefinition) -> AssetsDefinition:
    @asset(
        key=DIGEST_ASSET,
        partitions_def=partitions,
        group_name="digests",
        deps=[REPORTS_ASSET],
        description=(
            "The fleet's health on one day: per agent, the entries per status, cycles still pending, "
            "size anomalies and the oldest last success; the day's problems and anomalies. A markdown "
            "table here, a CSV file under BACKUP_PIPELINE_HOME/digests/."
        ),
    )
    def fleet_digest(
        context: AssetExecutionContext, settings: ResourceParam[Settings], database: DatabaseResource
    ) -> MaterializeResult:
        digest = build_digest(database.get(), date.fromisoformat(context.partition_key))
        path = write_csv(digest, settings.digests_dir)
        context.log.info(f"{digest.headline}; CSV written to {path}")
        return MaterializeResult(
            metadata={
                "digest": MetadataValue.md(to_markdown(digest)),
                "csv": MetadataValue.path(str(path)),
                "agents": MetadataValue.int(len(digest.agents)),
                "jobs": MetadataValue.int(digest.total.jobs),
                "evaluated": MetadataValue.int(digest.total.evaluated),
                "problems": MetadataValue.int(len(digest.problems)),
                "size_anomalies": MetadataValue.int(len(digest.anomalies)),
                "pending": MetadataValue.int(digest.total.pending),
                "restore_drills": MetadataValue.int(digest.drills.drills),
                "restore_drills_failed": MetadataValue.int(digest.drills.restore_failed),
            }
        )

    return fleet_digest


def build_digest_job(partitions: PartitionsDefinition) -> JobDefinition:
    return define_asset_job(
        DIGEST_JOB,
        selection=[DIGEST_ASSET],
        partitions_def=partitions,
        description="Materialize the daily fleet digest.",
    )


def build_digest_schedule(job: JobDefinition, backups: Sequence[Any]) -> ScheduleDefinition:
    delay = digest_delay(backups)
    minutes = int(delay.total_seconds() // 60) % (24 * 60)

    @schedule(
        name=DIGEST_SCHEDULE,
        cron_schedule=f"{minutes % 60} {minutes // 60} * * *",
        execution_timezone="UTC",
        job=job,
        default_status=DefaultScheduleStatus.RUNNING,
        description=(
            "Materialize the digest of the day whose cycles are all decided "
            f"({int(delay.total_seconds() // 60)} min after its midnight UTC)."
        ),
    )
    def _schedule(context: ScheduleEvaluationContext, settings: ResourceParam[Settings]) -> list[RunRequest]:
        now = (context.scheduled_execution_time or datetime.now(UTC)).astimezone(UTC)
        day = digested_day(now, delay)
        if day < settings.start_date:
            return []
        return [RunRequest(run_key=f"digest-{day.isoformat()}", partition_key=day.isoformat())]

    return _schedule


def digested_day(now: datetime, delay: timedelta) -> date:
    return (now - delay).date()
