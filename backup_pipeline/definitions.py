"""The Dagster wiring: the three-phase scan as a daily-partitioned job of ops, its assets,
checks, schedule and sensor.

discover/ingest → evaluate (one step per batch of whole agents) → archive → notify. Ops are thin: each
calls one phase module and logs what it decided; the rules live in `backup_pipeline.core.rules`.
The monitored databases are declared as partitioned assets from the jobs file; the evaluate steps
report their materializations and integrity checks when an entry is created or changes.
"""

import warnings
from datetime import date

from dagster import (
    AssetMaterialization,
    BetaWarning,
    ConfigurableResource,
    DailyPartitionsDefinition,
    Definitions,
    DynamicOut,
    DynamicOutput,
    MetadataValue,
    OpExecutionContext,
    RetryPolicy,
    graph,
    multiprocess_executor,
    op,
)

from backup_pipeline import dagster_assets, dagster_health
from backup_pipeline.archiving import ArchiveSummary, archive
from backup_pipeline.automation import AUTOMATIC_TAG, build_schedule, build_sensor
from backup_pipeline.core.alerts import escape_markdown
from backup_pipeline.evaluation import BatchPlan, BatchResult, agent_days, evaluate_batch, plan_batches
from backup_pipeline.ingestion import IngestSummary, ingest
from backup_pipeline.notifications import NotifySummary, notify
from backup_pipeline.scan_context import ScanContext, make_context, parse_instant
from backup_pipeline.scan_runner import sync_jobs_file
from backup_pipeline.settings import Settings, load_settings
from backup_pipeline.storage import repository

# Dagster 1.13's sensor decorator passes its own beta `owners` parameter: a warning on every load of
# these definitions (every CLI scan) that nobody can act on.
warnings.filterwarnings("ignore", message=".*`owners`.*", category=BetaWarning)

SCAN_JOB = "backup_scan"
_settings = load_settings()

_fleet = dagster_assets.FleetAssets.from_settings(_settings)

daily_partitions = DailyPartitionsDefinition(
    start_date=_settings.start_date.isoformat(), timezone="UTC", end_offset=1
)


class ScanResource(ConfigurableResource):
    """How a run scans: its evaluation instant, whether to re-hash, whether it is automatic."""

    at: str | None = None  # ISO-8601 "now" of the evaluation; the real clock when unset
    rehash: bool = False
    automatic: bool | None = None  # unset: automatic when a schedule or sensor requested the run
    # False for all but the last run of a multi-day CLI scan: a report leaves log/ only once every
    # day it bears on has been evaluated, so a scan killed in between owes those days again.
    archive: bool = True

    def context(self, op_context: OpExecutionContext, at: str | None = None) -> ScanContext:
        tags = op_context.run.tags
        automatic = self.automatic
        if automatic is None:
            automatic = tags.get(AUTOMATIC_TAG) == "true" or any(
                k in tags for k in ("dagster/schedule_name", "dagster/sensor_name")
            )
        return make_context(
            self.settings(),
            at=at or self.at,
            run_id=op_context.run_id,
            rehash=self.rehash,
            automatic=automatic,
        )

    def settings(self) -> Settings:
        return load_settings()


def _day(context: OpExecutionContext) -> date:
    return date.fromisoformat(context.partition_key)


@op(description="Walk the deposit area and record every report file, valid or rejected.")
def ingest_reports(context: OpExecutionContext, scan: ScanResource) -> IngestSummary:
    ctx = scan.context(context)
    sync = sync_jobs_file(ctx.settings, ctx.database, ctx.now)
    if sync.added or sync.deactivated:
        context.log.info(f"jobs file synced: {sync.added} job(s) added, {sync.deactivated} deactivated")
    summary = ingest(ctx)
    summary.evaluated_at = ctx.now.isoformat()
    if summary.accepted or summary.rejected:
        context.log_event(
            AssetMaterialization(
                asset_key=dagster_assets.REPORTS_ASSET,
                partition=context.partition_key,
                metadata={
                    "accepted": MetadataValue.int(summary.accepted),
                    "rejected": MetadataValue.int(summary.rejected),
                    "agents": MetadataValue.int(summary.agents),
                },
            )
        )
    context.log.info(
        f"{summary.agents} agent folder(s); recorded {summary.accepted} accepted and {summary.rejected} "
        f"rejected report(s); {summary.already_recorded} already recorded; "
        f"{len(summary.deferred)} left for the next scan (still being written)"
    )
    for name, reason in summary.skipped_folders:
        context.log.warning(f"skipped folder {name}: {reason}")
    if summary.rejections:
        context.log.warning(
            "rejected reports:\n"
            + "\n".join(f"{r.agent_id}/{r.file_name}: {r.reason}" for r in summary.rejections)
        )
    return summary


@op(out=DynamicOut(BatchPlan), description="Split the active jobs into batches of whole agents.")
def plan_evaluation(context: OpExecutionContext, scan: ScanResource, ingested: IngestSummary):
    ctx = scan.context(context, at=ingested.evaluated_at)
    plans = plan_batches(ctx, _day(context))
    context.log.info(f"{sum(len(p.job_ids) for p in plans)} job(s) in {len(plans)} batch(es)")
    for plan in plans:
        yield DynamicOutput(
            plan.model_copy(update={"evaluated_at": ingested.evaluated_at}), mapping_key=plan.key
        )


@op(
    description="Evaluate one batch's cycles for the partition's day and write their entries.",
    retry_policy=RetryPolicy(max_retries=2, delay=5),
)
def evaluate(context: OpExecutionContext, scan: ScanResource, plan: BatchPlan) -> BatchResult:
    ctx = scan.context(context, at=plan.evaluated_at)
    result = evaluate_batch(ctx, plan)
    if _fleet.per_database:
        events = dagster_assets.outcome_events(result.outcomes, plan.day)
    else:
        written_agents = sorted({o.agent_id for o in result.outcomes})
        events = dagster_assets.agent_events(
            agent_days(ctx, written_agents, plan.day) if written_agents else []
        )
    for event in events:
        context.log_event(event)
    changed = result.changed
    context.log.info(
        f"{plan.key}: {result.jobs} job(s), {result.evaluated} evaluated, {result.written} written, "
        f"{len(changed)} new or changed, {result.still_open} still open, "
        f"{result.measured_files} staged file(s) measured ({result.measured_bytes} bytes)"
    )
    if changed:
        context.log.info(
            "decisions:\n"
            + "\n".join(
                f"{o.agent_id} {o.database_name} {o.cycle_expected_at:%Y-%m-%dT%H:%MZ} {o.status}: "
                f"{o.message}"
                for o in changed
            )
        )
    return result


@op(description="Move every recorded report to log/_archive/, after the entries are committed.")
def archive_reports(
    context: OpExecutionContext, scan: ScanResource, results: list[BatchResult]
) -> ArchiveSummary:
    ctx = scan.context(context)
    with ctx.database.sessions() as session:  # every batch succeeded: every active job was looked at
        repository.record_fleet_check(session, ctx.now)
        session.commit()
    if not scan.archive:
        context.log.info("archiving left to the last partition of this scan")
        return ArchiveSummary()
    summary = archive(ctx)
    context.log.info(f"archived {summary.archived} report(s) after {len(results)} batch(es)")
    if summary.left:
        context.log.warning("not archived:\n" + "\n".join(summary.left))
    if summary.errors:
        context.log.error("cannot archive (retried by the next scan):\n" + "\n".join(summary.errors))
    return summary


@op(
    name="notify",
    description="Send the alerts recorded by this scan (and retry unsent ones): one message per target.",
)
def notify_op(context: OpExecutionContext, scan: ScanResource, archived: ArchiveSummary) -> NotifySummary:
    ctx = scan.context(context)
    summary = notify(ctx)  # a failing target is recorded and retried, never raised
    if summary.skipped:
        context.log.info(f"notifications skipped: {summary.skipped}")
    context.log.info(
        f"{summary.dispatched} new alert(s) dispatched, {summary.held} held by a silence, "
        f"{summary.unaddressed} without a target; {summary.sent} delivered, {summary.failed} failed "
        f"(will be retried), {summary.deferred} waiting to retry a failing target, "
        f"{summary.abandoned} abandoned"
    )
    for t in summary.targets:  # redacted labels only: no secret reaches the run's logs or metadata
        if not t.sent:
            context.log.warning(f"could not notify {t.target} [{t.target_id}]: {t.error}")
    rows = "\n".join(
        f"| {escape_markdown(t.target)} | {t.target_id} | {t.alerts} | {'sent' if t.sent else 'failed'} |"
        for t in summary.targets
    )
    context.add_output_metadata(
        {
            "dispatched": MetadataValue.int(summary.dispatched),
            "held": MetadataValue.int(summary.held),
            "delivered": MetadataValue.int(summary.sent),
            "failed": MetadataValue.int(summary.failed),
            "targets": MetadataValue.md(
                "| target | id | alerts | result |\n|---|---|---|---|\n" + rows if rows else "no message sent"
            ),
        }
    )
    return summary


@graph
def backup_scan() -> None:
    ingested = ingest_reports()
    results = plan_evaluation(ingested).map(evaluate).collect()
    notify_op(archive_reports(results))


scan_job = backup_scan.to_job(
    name=SCAN_JOB,
    description="Scan the deposit area: ingest reports, evaluate the day's cycles, archive reports.",
    partitions_def=daily_partitions,
    tags={"backup_pipeline/scan": "exclusive"},
    executor_def=multiprocess_executor.configured(
        {
            "max_concurrent": 2,
            "start_method": {"forkserver": {"preload_modules": ["backup_pipeline.definitions"]}},
        }
    ),
)

# The daily health report: an asset materialized by its own small job, once a day (dagster_health.py).
health_job = dagster_health.build_health_job(daily_partitions)

defs = Definitions(
    jobs=[scan_job, health_job],
    assets=[*_fleet.specs(daily_partitions), dagster_health.build_health_report(daily_partitions)],
    asset_checks=_fleet.checks(_settings),
    schedules=[
        build_schedule(scan_job, _fleet.jobs),
        dagster_health.build_health_schedule(health_job, _fleet.jobs, _settings.start_date),
    ],
    sensors=[build_sensor(scan_job, _fleet.jobs, _settings)],
    resources={"scan": ScanResource()},
)

__all__ = ["AUTOMATIC_TAG", "SCAN_JOB", "defs", "parse_instant", "scan_job"]
