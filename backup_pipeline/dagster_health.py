"""The daily health report in Dagster: a partitioned asset, the job that materializes it, its schedule.

How it gets materialized: the report is a real (executable) asset, one partition per day, built by
`health_report.build_report` from PostgreSQL. A small job of its own materializes it — not the
scan, which runs every 15 minutes and would rewrite the day's report dozens of times — and the
`daily_health_report` schedule runs that job once a day, for the day whose cycles are all decided:
30 minutes (two scans) after the latest deadline among the declared jobs. Any day can also be
(re)materialized from the UI or backfilled over a range after a scan re-evaluated past days, and
`backup-pipeline report` prints the same report from the command line.
"""

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    DefaultScheduleStatus,
    JobDefinition,
    MaterializeResult,
    MetadataValue,
    PartitionsDefinition,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    asset,
    define_asset_job,
    schedule,
)

from backup_pipeline.dagster_assets import REPORTS_ASSET
from backup_pipeline.jobs_file import ResolvedJob

HEALTH_ASSET = AssetKey(["fleet_health_report"])
HEALTH_JOB = "fleet_health_report_job"
HEALTH_SCHEDULE = "daily_health_report"
SETTLE = timedelta(minutes=30)  # two scans after the last deadline


def report_delay(jobs: Sequence[ResolvedJob]) -> timedelta:
    """How long after a day's midnight (UTC) all its cycles are decided and scanned."""
    if not jobs:
        return timedelta(days=1) + SETTLE
    latest = max(j.expected_hour_utc * 60 + j.expected_minute_utc + j.window_minutes for j in jobs)
    return timedelta(minutes=latest) + SETTLE


def build_health_report(partitions: PartitionsDefinition) -> AssetsDefinition:
    @asset(
        key=HEALTH_ASSET,
        partitions_def=partitions,
        group_name="reports",
        deps=[REPORTS_ASSET],
        description=(
            "The fleet's health on one day: per agent, the entries per status, cycles still pending, "
            "size anomalies and the oldest last success; the day's problems and anomalies. A markdown "
            "table here, a CSV file under BACKUP_PIPELINE_HOME/reports/."
        ),
    )
    def fleet_health_report(context: AssetExecutionContext) -> MaterializeResult:
        from backup_pipeline.health_report import build_report, to_markdown, write_csv
        from backup_pipeline.settings import load_settings
        from backup_pipeline.storage.database import open_database

        settings = load_settings()
        report = build_report(open_database(settings), date.fromisoformat(context.partition_key))
        path = write_csv(report, settings.reports_dir)
        context.log.info(f"{report.headline}; CSV written to {path}")
        return MaterializeResult(
            metadata={
                "report": MetadataValue.md(to_markdown(report)),
                "csv": MetadataValue.path(str(path)),
                "agents": MetadataValue.int(len(report.agents)),
                "jobs": MetadataValue.int(report.total.jobs),
                "evaluated": MetadataValue.int(report.total.evaluated),
                "problems": MetadataValue.int(len(report.problems)),
                "size_anomalies": MetadataValue.int(len(report.anomalies)),
                "pending": MetadataValue.int(report.total.pending),
            }
        )

    return fleet_health_report


def build_health_job(partitions: PartitionsDefinition) -> JobDefinition:
    return define_asset_job(
        HEALTH_JOB,
        selection=[HEALTH_ASSET],
        partitions_def=partitions,
        description="Materialize the daily health report of the fleet.",
    )


def build_health_schedule(job: JobDefinition, jobs: Sequence[ResolvedJob], first: date) -> ScheduleDefinition:
    delay = report_delay(jobs)
    minutes = int(delay.total_seconds() // 60) % (24 * 60)

    @schedule(
        name=HEALTH_SCHEDULE,
        cron_schedule=f"{minutes % 60} {minutes // 60} * * *",
        execution_timezone="UTC",
        job=job,
        default_status=DefaultScheduleStatus.RUNNING,
        description=(
            "Materialize the health report of the day whose cycles are all decided "
            f"({int(delay.total_seconds() // 60)} min after its midnight UTC)."
        ),
    )
    def _schedule(context: ScheduleEvaluationContext) -> list[RunRequest]:
        now = (context.scheduled_execution_time or datetime.now(UTC)).astimezone(UTC)
        day = reported_day(now, delay)
        if day < first:
            return []
        return [RunRequest(run_key=f"health-{day.isoformat()}", partition_key=day.isoformat())]

    return _schedule


def reported_day(now: datetime, delay: timedelta) -> date:
    return (now - delay).date()
