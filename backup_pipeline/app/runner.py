"""Running the product's Dagster jobs in process: the scan job (what `backup-pipeline scan` does) and
the restore drills' job (`backup-pipeline drill`), so that their runs, events and checks show in the
UI when DAGSTER_HOME is set, exactly as the daemon's runs do.

Without explicit partitions a scan catches up: every day that still has a cycle without an entry
(since the expected backups exist) up to the day of `as_of`, the days the report files waiting in
log/ are named for, then any earlier day whose cycles the reports just recorded may change (a late
upload after MISSING was declared, say). Only the scan's last run archives, and only once the
reports it found bear on no day left to evaluate: a report leaves log/ once every day it bears on
was evaluated, so a scan killed half-way owes the same days again.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from dagster import DagsterError, DagsterInstance, ExecuteInProcessResult, JobDefinition

from backup_pipeline.app.errors import ScanError
from backup_pipeline.app.launcher import DAGSTER_HOME_FOLDER, ensure_dagster_storage_url
from backup_pipeline.app.run_progress import RunProgress
from backup_pipeline.config.settings import Settings
from backup_pipeline.defs import DRILL_JOB, SCAN_JOB, build_definitions
from backup_pipeline.defs.drill_job import DrillBatchResult, DrillConfig, drill_run_config
from backup_pipeline.defs.reload import reload_code_location
from backup_pipeline.defs.scan_job import ScanConfig, ScanStarted, scan_run_config
from backup_pipeline.drill.run import DrillResult
from backup_pipeline.notify.deliver import NotifySummary
from backup_pipeline.scan.archive import ArchiveSummary
from backup_pipeline.scan.days import first_day, open_days, waiting_days
from backup_pipeline.scan.ingest import IngestSummary
from backup_pipeline.scan.outcomes import BatchResult
from backup_pipeline.scan.sync import sync_before_scan
from backup_pipeline.storage.database import Database, db_error_line, open_database
from backup_pipeline.storage.locks import Lock, advisory_lock

log = logging.getLogger(__name__)
# The daemon cannot re-execute a run started in this process (it has no code location origin): the
# CLI reports the failure itself, so the run must not say it will be retried.
IN_PROCESS_TAGS = {"dagster/max_retries": "0"}


@dataclass
class PartitionRun:
    day: date
    run_id: str
    success: bool
    ingested: IngestSummary | None = None
    batches: list[BatchResult] = field(default_factory=list)
    archived: ArchiveSummary | None = None
    notified: NotifySummary | None = None
    error: str | None = None

    @property
    def evaluated(self) -> int:
        return sum(b.evaluated for b in self.batches)

    @property
    def written(self) -> int:
        return sum(b.written for b in self.batches)

    @property
    def changed(self) -> int:
        return sum(len(b.changed) for b in self.batches)

    @property
    def still_open(self) -> int:
        return sum(b.still_open for b in self.batches)


def dagster_instance(settings: Settings) -> DagsterInstance:
    """The instance at DAGSTER_HOME, else the one `dev` (or the demo) made under the product's
    home — so the runs show in the UI — else a throwaway one."""
    home = os.environ.get("DAGSTER_HOME") or str(settings.home / DAGSTER_HOME_FOLDER)
    if not (Path(home) / "dagster.yaml").is_file() and not os.environ.get("DAGSTER_HOME"):
        return DagsterInstance.ephemeral()
    ensure_dagster_storage_url(settings)  # the shipped dagster.yaml reads it
    try:
        return DagsterInstance.from_config(home)
    except DagsterError as exc:  # e.g. a dagster.yaml naming an unset variable
        where = f"DAGSTER_HOME={home}" if os.environ.get("DAGSTER_HOME") else home
        raise ScanError(f"cannot open the Dagster instance at {where}: " + _config_problem(exc)) from None


def _config_problem(exc: DagsterError) -> str:
    """The readable part of Dagster's configuration errors (their messages embed stack traces)."""
    messages = [getattr(e, "message", str(e)) for e in getattr(exc, "errors", None) or [exc]]
    lines = []
    for message in messages:
        text = message.split("Stack Trace:")[0].strip().splitlines()
        lines.append(text[-1].split(": ", 1)[-1] if text else type(exc).__name__)
    return "; ".join(lines)


def run_scan(
    settings: Settings,
    as_of: datetime,
    *,
    partitions: list[date] | None = None,
    rehash: bool = False,
    log_level: str = "WARNING",
    progress: RunProgress | None = None,
) -> list[PartitionRun]:
    """Scan the owed days (or `partitions`), one in-process run after the other; `progress` shows
    each run's steps."""
    database = open_database(settings)

    def waiting() -> None:
        log.warning("another scan is running: waiting for it to finish")

    with advisory_lock(database, Lock.SCAN, on_wait=waiting):
        return _Scan(settings, database, as_of, rehash, log_level, progress).run(partitions)


class _Scan:
    """One CLI scan: its days, run one after the other in process."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        as_of: datetime,
        rehash: bool,
        log_level: str,
        progress: RunProgress | None,
    ) -> None:
        self.settings, self.database, self.as_of = settings, database, as_of
        self.rehash, self.log_level, self.progress = rehash, log_level, progress

    def run(self, partitions: list[date] | None) -> list[PartitionRun]:
        synced = sync_before_scan(self.settings, self.database, self.as_of)
        if synced is not None and synced.changed:  # the UI's assets follow the synced fleet
            reload = reload_code_location(self.settings)
            (log.warning if reload.asked and not reload.reloaded else log.info)(reload.message)
        if not self.settings.storage_root.is_dir():  # say so here rather than as a failed Dagster step
            raise ScanError(
                f"deposit root {self.settings.storage_root} does not exist or is not a directory "
                "(set BACKUP_STORAGE_ROOT)"
            )
        automatic = not partitions
        days = list(partitions) if partitions else self._owed_days()
        self.first = first_day(self.database, self.settings)
        job = build_definitions(self.settings).resolve_job_def(SCAN_JOB)
        if self.progress is not None:
            job = self.progress.job(job)
        instance = dagster_instance(self.settings)
        runs: list[PartitionRun] = []
        pending, done = sorted(set(days)), set[date]()
        while pending:
            day = pending.pop(0)
            done.add(day)
            config = ScanConfig(
                as_of=self.as_of.isoformat(),
                rehash=self.rehash,
                automatic=automatic,
                archive=not pending,  # only the last run archives (see ScanConfig.covered_days)
                covered_days=[d.isoformat() for d in sorted(done | set(pending))] if automatic else None,
            )
            run = self._run_partition(job, instance, day, config)
            runs.append(run)
            if not run.success:
                break
            if automatic and run.ingested:
                pending = sorted(set(pending) | (self._late_days(run.ingested) - done))
        return runs

    def _owed_days(self) -> list[date]:
        return open_days(self.database, self.settings, self.as_of) + waiting_days(
            self.database, self.settings, self.as_of
        )

    def _late_days(self, ingested: IngestSummary) -> set[date]:
        """The days the reports a run just recorded bear on, from the first day an automatic scan
        owes (as `waiting_days` judges the files still in log/) to today."""
        return {d for d in ingested.touched_days if self.first <= d <= self.as_of.date()}

    def _run_partition(
        self, job: JobDefinition, instance: DagsterInstance, day: date, config: ScanConfig
    ) -> PartitionRun:
        loggers: dict[str, object] = {"console": {"config": {"log_level": self.log_level}}}
        if self.progress is not None:
            loggers |= self.progress.run_config()
            self.progress.start(f"scan {day}", len(job.nodes))
        run_config = scan_run_config(config) | {"loggers": loggers}
        try:
            result = job.execute_in_process(
                partition_key=day.isoformat(),
                run_config=run_config,
                instance=instance,
                raise_on_error=False,
                tags=IN_PROCESS_TAGS,
            )
        except Exception as exc:  # e.g. a partition outside the defined range
            raise ScanError(f"cannot run the scan for {day}: {exc}") from None
        return _partition_run(day, result)


@dataclass
class DrillRun:
    run_id: str
    success: bool
    results: list[DrillResult] = field(default_factory=list)  # in the order the plan gave them
    notified: NotifySummary | None = None
    error: str | None = None


def run_drills(
    settings: Settings,
    as_of: datetime,
    *,
    entry_ids: list[int] | None = None,
    redrill: bool = False,
    log_level: str = "WARNING",
    progress: RunProgress | None = None,
) -> DrillRun:
    """One in-process run of the drill job for `as_of`'s day: the due drills within the budget, or
    exactly `entry_ids` (a person's choice, drilled whole)."""
    job = build_definitions(settings).resolve_job_def(DRILL_JOB)
    if progress is not None:
        job = progress.job(job)
        progress.start("restore drills", len(job.nodes))
    config = DrillConfig(
        as_of=as_of.isoformat(), entry_ids=entry_ids, redrill=redrill, budget=entry_ids is None
    )
    loggers: dict[str, object] = {"console": {"config": {"log_level": log_level}}}
    if progress is not None:
        loggers |= progress.run_config()
    day = as_of.astimezone(UTC).date()
    try:
        result = job.execute_in_process(
            partition_key=day.isoformat(),
            run_config=drill_run_config(config) | {"loggers": loggers},
            instance=dagster_instance(settings),
            raise_on_error=False,
            tags=IN_PROCESS_TAGS,
        )
    except Exception as exc:  # e.g. a day outside the partitions (before BACKUP_PIPELINE_START_DATE)
        raise ScanError(f"cannot run the restore drills for {day}: {exc}") from None
    run = DrillRun(run_id=result.run_id, success=result.success)
    if not result.success:
        run.error = _failure(result, with_step=False)
        return run
    steps = _outputs(result, "drill_batch")
    run.results = [r for _, batch in sorted(steps.items()) for r in batch.results]
    if entry_ids is not None:  # steps are sized by bytes: give them back in the order asked
        order = {entry_id: n for n, entry_id in enumerate(entry_ids)}
        run.results.sort(key=lambda r: order.get(r.entry_id, len(order)))
    run.notified = result.output_for_node("notify_drills")
    return run


def _outputs(result: ExecuteInProcessResult, node: str) -> dict[str, DrillBatchResult]:
    """A mapped node's outputs by mapping key (none when its dynamic input yielded nothing)."""
    if not any(e.is_successful_output and e.step_key.startswith(f"{node}[") for e in result.all_events):
        return {}
    return result.output_for_node(node)


def _partition_run(day: date, result: ExecuteInProcessResult) -> PartitionRun:
    run = PartitionRun(day=day, run_id=result.run_id, success=result.success)
    if not result.success:
        run.error = _failure(result)
        return run
    started: ScanStarted = result.output_for_node("ingest_reports")
    run.ingested = started.ingested
    run.batches = list(result.output_for_node("evaluate").values())
    run.archived = result.output_for_node("archive_reports")
    run.notified = result.output_for_node("notify")
    return run


def _failure(result: ExecuteInProcessResult, *, with_step: bool = True) -> str:
    """The first failed step's own error, in one line (with the step's name unless `with_step`)."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            error = event.step_failure_data.error
            while error.cause is not None and error.cls_name in _DAGSTER_WRAPPERS:
                error = error.cause
            if error.cls_name in _DATABASE_ERRORS:  # the driver's first line, not SQLAlchemy's footer
                line = f"PostgreSQL unreachable or failing: {db_error_line(error.message)}"
            else:
                line = error.message.strip().splitlines()[-1]
            return f"step {event.step_key} failed: {line}" if with_step else line
    return "the run failed (see its logs in Dagster)"


# What Dagster wraps a step's own error in: in the op, or in the IO manager storing its output (in
# PostgreSQL) or loading its input.
_DAGSTER_WRAPPERS = (
    "DagsterExecutionStepExecutionError",
    "DagsterExecutionHandleOutputError",
    "DagsterExecutionLoadInputError",
)
_DATABASE_ERRORS = (
    "OperationalError",
    "InterfaceError",
    "DatabaseError",
    "InternalError",
    "DisconnectionError",
)
