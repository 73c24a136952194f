"""The scan as a daily-partitioned Dagster job: ingest → plan → measure (steps of staged files sized
by bytes) → evaluate (one step per batch of whole agents) → archive → notify.

Ops are thin: each builds the scan's context from its resources and its input, calls one phase of
`backup_pipeline.scan` (or `notify`), and logs what it decided. What a run was asked (its evaluation
instant, re-hash, automatic or not) is the first step's configuration; it is fixed there and passed
down with the steps' outputs, never read again from anywhere else.
"""

from datetime import UTC, date, datetime

from dagster import (
    AssetMaterialization,
    Config,
    DynamicOut,
    DynamicOutput,
    Failure,
    HookContext,
    JobDefinition,
    MetadataValue,
    OpExecutionContext,
    Out,
    Output,
    PartitionsDefinition,
    ResourceParam,
    RetryPolicy,
    failure_hook,
    graph,
    op,
)
from pydantic import BaseModel

from backup_pipeline.config.settings import Settings
from backup_pipeline.core.alerts import escape_markdown
from backup_pipeline.core.cycles import instant_problem, parse_instant
from backup_pipeline.core.text import visible
from backup_pipeline.defs.executors import executor_for, run_tags
from backup_pipeline.defs.fleet import REPORTS_ASSET, FleetAssets
from backup_pipeline.defs.reload import reload_code_location
from backup_pipeline.defs.resources import DatabaseResource
from backup_pipeline.notify.deliver import NotifySummary, notify
from backup_pipeline.scan.archive import ArchiveSummary, archive
from backup_pipeline.scan.context import ScanContext, ScanRequest, Summary
from backup_pipeline.scan.days import first_day
from backup_pipeline.scan.evaluate import evaluate_batch
from backup_pipeline.scan.ingest import IngestSummary, ingest
from backup_pipeline.scan.measure import MeasurementBatch, MeasurementResult, measure_batch, plan_measurements
from backup_pipeline.scan.outcomes import BatchResult
from backup_pipeline.scan.plan import BatchPlan, plan_batches
from backup_pipeline.scan.sync import sync_before_scan
from backup_pipeline.storage import expected_backups
from backup_pipeline.storage.database import DatabaseFailure, DatabaseUnavailable, db_error_line
from backup_pipeline.storage.scan_records import ScanOutcome, record_scan_end, record_scan_start

SCAN_JOB = "backup_scan"
AUTOMATIC_TAG = "backup_pipeline/automatic"
EXCLUSIVE_TAG = {"backup_pipeline/scan": "exclusive"}  # dagster.yaml runs one such run at a time


class ScanConfig(Config):
    """How a run scans. Runs requested by the schedule or the sensor are automatic."""

    as_of: str | None = None  # ISO-8601 instant the evaluation is "as of"; the run's start when unset
    rehash: bool = False
    automatic: bool | None = None  # unset: automatic when a schedule or sensor requested the run
    # False for all but the last run of a multi-day CLI scan: a report leaves log/ only once every
    # day it bears on has been evaluated, so a scan killed in between owes those days again.
    archive: bool = True
    # The days a multi-day CLI scan evaluates: its last run archives only when the reports it found
    # bear on none but these (otherwise the CLI runs the other days first).
    covered_days: list[str] | None = None


class ScanStarted(BaseModel):
    """What the first step fixed, and what it ingested."""

    request: ScanRequest
    day: date
    archive: bool
    covered_days: list[date] | None
    ingested: IngestSummary


def scan_run_config(config: ScanConfig) -> dict[str, object]:
    """Run configuration for a scan run (the CLI's in-process runs, tests)."""
    return {"ops": {"ingest_reports": {"config": config.model_dump(exclude_none=True)}}}


def _request(context: OpExecutionContext, config: ScanConfig, settings: Settings) -> ScanRequest:
    try:
        as_of = parse_instant(config.as_of) if config.as_of else datetime.now(UTC)
    except ValueError:
        raise Failure(f"as_of {config.as_of!r} is not an ISO-8601 date and time") from None
    problem = instant_problem(as_of, first_day=settings.start_date, now=datetime.now(UTC))
    if config.as_of and problem is not None:  # before anything is recorded
        raise Failure(f"as_of {problem}")
    automatic = config.automatic
    if automatic is None:
        tags = context.run.tags
        automatic = tags.get(AUTOMATIC_TAG) == "true" or any(
            k in tags for k in ("dagster/schedule_name", "dagster/sensor_name")
        )
    return ScanRequest(as_of=as_of, rehash=config.rehash, automatic=automatic)


@op(description="Sync the jobs file, walk the deposit area and record every report file, valid or rejected.")
def ingest_reports(
    context: OpExecutionContext,
    config: ScanConfig,
    settings: ResourceParam[Settings],
    database: DatabaseResource,
) -> ScanStarted:
    request = _request(context, config, settings)
    ctx = ScanContext(settings, database.get(), request, context.run_id)
    with ctx.database.sessions() as session:
        day = date.fromisoformat(context.partition_key)
        record_scan_start(session, context.run_id, day, request.automatic, datetime.now(UTC))
    sync = sync_before_scan(settings, ctx.database, request.as_of)
    if sync is not None and sync.changed:
        context.log.info(
            f"jobs file synced: {sync.added} backup(s) added, {sync.updated} changed, {sync.deactivated} "
            f"deactivated; {reload_code_location(settings).message}"
        )
    summary = ingest(ctx)
    _log_ingested(context, summary)
    covered = (
        [date.fromisoformat(d) for d in config.covered_days] if config.covered_days is not None else None
    )
    return ScanStarted(
        request=request,
        day=date.fromisoformat(context.partition_key),
        archive=config.archive,
        covered_days=covered,
        ingested=summary,
    )


def _log_ingested(context: OpExecutionContext, summary: IngestSummary) -> None:
    if summary.accepted or summary.rejected:
        context.log_event(
            AssetMaterialization(
                asset_key=REPORTS_ASSET,
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
        context.log.warning(f"skipped folder {visible(name)}: {visible(reason)}")
    if summary.rejections:
        context.log.warning(
            "rejected reports:\n"
            + "\n".join(
                f"{r.agent_id}/{visible(r.file_name)}: {visible(r.reason)}" for r in summary.rejections
            )
        )


class EvaluationPlan(Summary):
    """The day's batches of whole agents, evaluated once their staged files are measured."""

    batches: list[BatchPlan]


@op(
    out={"evaluation": Out(EvaluationPlan), "measurements": DynamicOut(MeasurementBatch)},
    description="Split the day's owed cycles into batches of whole agents, and the staged files they "
    "need measured into batches sized by bytes.",
)
def plan_evaluation(
    context: OpExecutionContext,
    started: ScanStarted,
    settings: ResourceParam[Settings],
    database: DatabaseResource,
):
    ctx = ScanContext(settings, database.get(), started.request, context.run_id)
    plans = plan_batches(ctx, started.day)
    measurements = plan_measurements(ctx, plans)
    context.log.info(
        f"{sum(len(p.backup_ids) for p in plans)} expected backup(s) in {len(plans)} batch(es); "
        f"{sum(len(m.files) for m in measurements)} staged file(s) to measure "
        f"({sum(m.bytes for m in measurements)} bytes) in {len(measurements)} step(s)"
    )
    for batch in measurements:
        yield DynamicOutput(batch, mapping_key=batch.key, output_name="measurements")
    yield Output(EvaluationPlan(batches=plans), output_name="evaluation")


@op(description="Measure a batch of staged files (SHA-256, size, content) and store the measurements.")
def measure_staged_files(
    context: OpExecutionContext,
    batch: MeasurementBatch,
    settings: ResourceParam[Settings],
    database: DatabaseResource,
) -> MeasurementResult:
    ctx = ScanContext(settings, database.get(), batch.request, context.run_id)
    result = measure_batch(ctx, batch)
    context.log.info(
        f"{batch.key}: {result.files} staged file(s) measured ({result.bytes} bytes), {result.stored} "
        f"stored, {result.settling} still being uploaded"
    )
    return result


@op(out=DynamicOut(BatchPlan), description="Start the evaluation batches once every file is measured.")
def dispatch_evaluation(context: OpExecutionContext, plan: EvaluationPlan, measured: list[MeasurementResult]):
    context.log.info(
        f"{sum(m.files for m in measured)} staged file(s) measured ({sum(m.bytes for m in measured)} "
        f"bytes) by {len(measured)} step(s); evaluating {len(plan.batches)} batch(es)"
    )
    for batch in plan.batches:
        yield DynamicOutput(batch, mapping_key=batch.key)


@op(
    description="Evaluate one batch's cycles for the partition's day and write their entries.",
    retry_policy=RetryPolicy(max_retries=2, delay=5),
)
def evaluate(
    context: OpExecutionContext,
    plan: BatchPlan,
    settings: ResourceParam[Settings],
    database: DatabaseResource,
    fleet: ResourceParam[FleetAssets],
) -> BatchResult:
    ctx = ScanContext(settings, database.get(), plan.request, context.run_id)
    result = evaluate_batch(ctx, plan)
    events, changed = fleet.on_synced_fleet(
        settings, ctx.database, lambda f: f.scan_events(ctx.database, result.outcomes, plan.day)
    )
    if changed:
        context.log.info("the fleet was synced since these definitions were loaded: events on its assets now")
    for event in events:  # AssetCheckEvaluation directly: no lookup of the partition's materialization
        context.log_event(event)
    _log_evaluated(context, plan, result)
    return result


def _log_evaluated(context: OpExecutionContext, plan: BatchPlan, result: BatchResult) -> None:
    changed = result.changed
    context.log.info(
        f"{plan.key}: {result.backups} expected backup(s), {result.evaluated} evaluated, "
        f"{result.written} written, {len(changed)} new or changed, {result.still_open} still open, "
        f"{result.measured_files} staged file(s) measured ({result.measured_bytes} bytes)"
    )
    if changed:
        context.log.info(
            "decisions:\n"
            + "\n".join(
                f"{o.agent_id} {o.database_name} {o.cycle_expected_at:%Y-%m-%dT%H:%MZ} {o.status}: "
                f"{visible(o.message)}"
                for o in changed
            )
        )


@op(description="Move every recorded report to log/_archive/, after the entries are committed.")
def archive_reports(
    context: OpExecutionContext,
    started: ScanStarted,
    results: list[BatchResult],
    settings: ResourceParam[Settings],
    database: DatabaseResource,
) -> ArchiveSummary:
    ctx = ScanContext(settings, database.get(), started.request, context.run_id)
    with ctx.database.sessions() as session:  # every batch succeeded: every active backup was looked at
        expected_backups.record_fleet_check(session, ctx.as_of)
        session.commit()
    deferred = _archiving_deferred(started, first_day(ctx.database, settings))
    if deferred:
        context.log.info(deferred)
        return ArchiveSummary(deferred=deferred)
    summary = archive(ctx)
    context.log.info(f"archived {summary.archived} report(s) after {len(results)} batch(es)")
    if summary.left:
        context.log.warning("not archived:\n" + "\n".join(visible(left) for left in summary.left))
    if summary.errors:
        context.log.warning(
            "cannot archive (retried by the next scan):\n" + "\n".join(visible(e) for e in summary.errors)
        )
    return summary


def _archiving_deferred(started: ScanStarted, first: date) -> str | None:
    """Why this run leaves archiving to a later run of its scan, if it does (days before `first`
    are never evaluated by an automatic scan: they hold nothing back)."""
    if not started.archive:
        return "archiving left to the last partition of this scan"
    if started.covered_days is None:
        return None
    today = started.request.as_of.date()
    bearing = {d for d in started.ingested.touched_days if first <= d <= today}
    beyond = sorted(bearing - set(started.covered_days))
    if not beyond:
        return None
    return "archiving left for after the day(s) the new reports bear on: " + ", ".join(map(str, beyond))


@op(
    name="notify",
    description="Send the alerts recorded by this scan (and retry unsent ones): one message per target.",
)
def notify_op(
    context: OpExecutionContext,
    archived: ArchiveSummary,
    settings: ResourceParam[Settings],
    database: DatabaseResource,
) -> NotifySummary:
    summary = notify(settings, database.get(), context.run_id)  # a failing target is never raised
    with database.get().sessions() as session:  # the scan's last step: the run ends here
        record_scan_end(session, context.run_id, ScanOutcome.SUCCEEDED, datetime.now(UTC))
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


@failure_hook(required_resource_keys={"database"})
def record_failed_scan(context: HookContext) -> None:
    """The scan run's first failed step ends it (for the exporter's last scan outcome)."""
    try:
        with context.resources.database.get().sessions() as session:
            record_scan_end(session, context.run_id, ScanOutcome.FAILED, datetime.now(UTC))
    except (DatabaseFailure, DatabaseUnavailable) as exc:  # often why the step failed: say it once
        context.log.warning(f"could not record the failed scan: {db_error_line(exc)}")


@graph
def backup_scan() -> None:
    started = ingest_reports()
    evaluation, measurements = plan_evaluation(started)
    measured = measurements.map(measure_staged_files).collect()
    results = dispatch_evaluation(evaluation, measured).map(evaluate).collect()
    notify_op(archive_reports(started, results))


def build_scan_job(partitions: PartitionsDefinition, settings: Settings) -> JobDefinition:
    return backup_scan.to_job(
        name=SCAN_JOB,
        description="Scan the deposit area: ingest reports, measure staged files, evaluate the day's "
        "cycles, archive reports.",
        partitions_def=partitions,
        tags=EXCLUSIVE_TAG | run_tags(settings),
        hooks={record_failed_scan},
        executor_def=executor_for(settings),
    )
