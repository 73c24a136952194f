"""Restore drills as a daily-partitioned Dagster job: plan → drill (one step per batch of entries,
grouped by staged bytes) → notify; its own schedule, once a day (not the 15-minute scan).

Steps pass entry ids, instants and counts only (never dumps or paths), through the product's
PostgreSQL (`StepOutputs`), so the job runs on the executor the settings choose, as the scan job does
(`executors.executor_for`): subprocesses of the run, or Celery workers on other hosts, each drilling
in its own drill folder (`BACKUP_PIPELINE_DRILL_DIR`, local to the host) from the shared deposit area.
A run's drills fit in the budget (`BACKUP_PIPELINE_DRILL_BUDGET_MINUTES`): the plan keeps what its
estimates fit, and a step starts no drill past the run's deadline (those stay due for the next run);
the run's `dagster/max_runtime` leaves room for the budget and one last drill.
"""

from datetime import UTC, date, datetime, timedelta

from dagster import (
    Config,
    DefaultScheduleStatus,
    DynamicOut,
    DynamicOutput,
    Failure,
    JobDefinition,
    MetadataValue,
    OpExecutionContext,
    PartitionsDefinition,
    ResourceParam,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    graph,
    op,
    schedule,
)
from pydantic import BaseModel

from backup_pipeline.config.settings import Settings
from backup_pipeline.core.cycles import day_bounds, parse_instant
from backup_pipeline.core.text import visible
from backup_pipeline.defs.executors import executor_for, run_tags
from backup_pipeline.defs.fleet import FleetAssets
from backup_pipeline.defs.resources import DatabaseResource
from backup_pipeline.drill.run import DrillResult, DrillUnavailable, batch_chosen, drill_entries, plan_drills
from backup_pipeline.notify.deliver import NotifySummary, notify

DRILL_JOB = "restore_drills"
DRILL_SCHEDULE = "daily_restore_drills"
EXCLUSIVE_TAG = {"backup_pipeline/drill": "exclusive"}  # dagster.yaml runs one such run at a time


class DrillConfig(Config):
    """How a drill run drills. By default: what is due as of the run (the partition's end for a
    past day), within the budget."""

    as_of: str | None = None  # ISO-8601 instant the due policy is evaluated at
    entry_ids: list[int] | None = None  # exactly these entries instead of the due ones
    redrill: bool = False  # with entry_ids: drill again entries already drilled
    # No drill starts past the budget (BACKUP_PIPELINE_DRILL_BUDGET_MINUTES) after the run's start;
    # `backup-pipeline drill --agent/--database` drills a person's choice whole, as it always did.
    budget: bool = True


class DrillStep(BaseModel):
    """One step's work: entry ids and the run's instants."""

    key: str
    entry_ids: list[int]
    staged_bytes: int
    as_of: datetime
    deadline: datetime | None
    redrill: bool = False


class DrillBatchResult(BaseModel):
    results: list[DrillResult]


def drill_run_config(config: DrillConfig) -> dict[str, object]:
    return {"ops": {"plan_drills": {"config": config.model_dump(exclude_none=True)}}}


def _as_of(context: OpExecutionContext, config: DrillConfig) -> datetime:
    if config.as_of:
        try:
            return parse_instant(config.as_of)
        except ValueError:
            raise Failure(f"as_of {config.as_of!r} is not an ISO-8601 date and time") from None
    now = datetime.now(UTC)
    if not context.has_partition_key:
        return now
    _, end = day_bounds(date.fromisoformat(context.partition_key))
    return min(now, end - timedelta(microseconds=1))


@op(out=DynamicOut(DrillStep), name="plan_drills", description="Pick the drills due, in batches by bytes.")
def plan_drills_op(
    context: OpExecutionContext,
    config: DrillConfig,
    settings: ResourceParam[Settings],
    database: DatabaseResource,
):
    as_of = _as_of(context, config)
    deadline = datetime.now(UTC) + timedelta(minutes=settings.drill_budget_minutes) if config.budget else None
    if config.entry_ids is not None:  # a person's choice, spread by bytes like the due drills
        batches = batch_chosen(settings, database.get(), config.entry_ids)
    else:
        batches = plan_drills(settings, database.get(), as_of)
    groups, sizes = [b.entry_ids for b in batches], [b.staged_bytes for b in batches]
    context.log.info(
        f"{sum(map(len, groups))} drill(s) in {len(groups)} step(s), as of {as_of:%Y-%m-%dT%H:%M:%SZ}"
    )
    for index, (ids, size) in enumerate(zip(groups, sizes, strict=True)):
        key = f"batch_{index + 1:03d}"
        yield DynamicOutput(
            DrillStep(
                key=key,
                entry_ids=ids,
                staged_bytes=size,
                as_of=as_of,
                deadline=deadline,
                redrill=config.redrill,
            ),
            mapping_key=key,
        )


@op(description="Restore each entry of the batch into a scratch PostgreSQL and check it.")
def drill_batch(
    context: OpExecutionContext,
    step: DrillStep,
    settings: ResourceParam[Settings],
    database: DatabaseResource,
    fleet: ResourceParam[FleetAssets],
) -> DrillBatchResult:
    try:
        results = drill_entries(
            settings,
            database.get(),
            step.entry_ids,
            step.as_of,
            run_id=context.run_id,
            redrill=step.redrill,
            deadline=step.deadline,
        )
    except DrillUnavailable as exc:
        raise Failure(f"the drills could not run: {exc}") from None
    ran = [r for r in results if r.ran]
    events, _ = fleet.on_synced_fleet(settings, database.get(), lambda f: f.drill_events(database.get(), ran))
    for event in events:
        context.log_event(event)
    for r in results:
        what = r.outcome if r.ran else f"not drilled ({r.skipped})"
        detail = r.comparison if r.shrank else r.reason
        said = f"{r.agent_id} {r.database_name} {r.cycle_expected_at:%Y-%m-%dT%H:%MZ}: {what}"
        context.log.info(visible(f"{said}: {detail}" if detail else said))  # the dump's words, escaped
    return DrillBatchResult(results=results)


@op(name="notify_drills", description="Send the alerts the drills raised (and retry unsent ones).")
def notify_drills(
    context: OpExecutionContext,
    batches: list[DrillBatchResult],
    settings: ResourceParam[Settings],
    database: DatabaseResource,
) -> NotifySummary:
    summary = notify(settings, database.get(), context.run_id)
    ran = [r for b in batches for r in b.results if r.ran]
    context.add_output_metadata(
        {
            "drills": MetadataValue.int(len(ran)),
            "restored": MetadataValue.int(sum(r.outcome == "RESTORED" for r in ran)),
            "restore_failed": MetadataValue.int(sum(r.outcome == "RESTORE_FAILED" for r in ran)),
            "not_drillable": MetadataValue.int(sum(r.outcome == "NOT_DRILLABLE" for r in ran)),
            "shrank": MetadataValue.int(sum(r.shrank for r in ran)),
            "alerts_delivered": MetadataValue.int(summary.sent),
            "alerts_failed": MetadataValue.int(summary.failed),
        }
    )
    for t in summary.targets:
        if not t.sent:
            context.log.warning(f"could not notify {t.target} [{t.target_id}]: {t.error}")
    return summary


@graph
def restore_drills() -> None:
    notify_drills(plan_drills_op().map(drill_batch).collect())


def build_drill_job(partitions: PartitionsDefinition, settings: Settings) -> JobDefinition:
    # The budget, then the longest drill a step may still have started before the deadline, and
    # room for the plan and notify steps.
    needed = (settings.drill_budget_minutes + settings.drill_max_minutes) * 60 + 900
    return restore_drills.to_job(
        name=DRILL_JOB,
        description="Restore the due backups into scratch PostgreSQL clusters and check what comes back.",
        partitions_def=partitions,
        tags=EXCLUSIVE_TAG | run_tags(settings, at_least_seconds=needed),
        executor_def=executor_for(settings, max_concurrent=settings.drill_concurrency, drills=True),
    )


def build_drill_schedule(job: JobDefinition, settings: Settings) -> ScheduleDefinition:
    start = settings.start_date

    @schedule(
        name=DRILL_SCHEDULE,
        cron_schedule=settings.drill_cron,
        execution_timezone="UTC",
        job=job,
        default_status=DefaultScheduleStatus.RUNNING,
        description="Drill the backups whose restore drill is due (BACKUP_PIPELINE_DRILL_CRON, UTC).",
    )
    def _schedule(context: ScheduleEvaluationContext) -> list[RunRequest]:
        now = (context.scheduled_execution_time or datetime.now(UTC)).astimezone(UTC)
        if now.date() < start:
            return []
        day = now.date().isoformat()
        return [RunRequest(run_key=f"drills-{day}", partition_key=day)]

    return _schedule
