"""Running the Dagster scan job in process (what `backup-pipeline scan` does).

Without explicit partitions a scan catches up: every day that still has a cycle without an entry
(since the jobs were created) up to the day of "now", the days the report files waiting in log/ are
named for, then any earlier day whose cycles the reports just recorded may change (a late upload
after MISSING was declared, say). Only the scan's last run archives: a report leaves log/ once
every day it bears on was evaluated, so a scan killed half-way owes the same days again.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime

import sqlalchemy as sa
from dagster import DagsterError, DagsterInstance

from backup_pipeline.archiving import ArchiveSummary
from backup_pipeline.evaluation import BatchResult
from backup_pipeline.ingestion import IngestSummary
from backup_pipeline.jobs_file import jobs_file_digest, load_jobs_file
from backup_pipeline.notifications import NotifySummary
from backup_pipeline.settings import Settings
from backup_pipeline.storage import repository
from backup_pipeline.storage.database import Database, db_error_line, open_database
from backup_pipeline.storage.repository import SyncSummary

log = logging.getLogger(__name__)
SCAN_LOCK = 0x7363616E  # "scan"
# The daemon cannot re-execute a run started in this process (it has no code location origin): the
# CLI reports the failure itself, so the run must not say it will be retried.
IN_PROCESS_TAGS = {"dagster/max_retries": "0"}


class ScanError(RuntimeError):
    """A scan that could not run; the message is for the person at the terminal."""


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


def sync_jobs_file(settings: Settings, database: Database, now: datetime) -> SyncSummary:
    """Sync the jobs file into PostgreSQL; a file already synced as it is costs one small query (every
    scan process syncs, and resolving 20,000 jobs to compare them takes most of a second)."""
    digest = jobs_file_digest(settings.jobs_file, settings.window_minutes)
    if digest is not None:
        with database.sessions() as session:
            active = repository.synced_jobs_file(session, digest)
        if active is not None:
            return SyncSummary(active=active, added=0, deactivated=0)
    jobs = load_jobs_file(settings.jobs_file, settings.window_minutes)
    with database.sessions() as session:
        return repository.sync_jobs(session, jobs, now, digest=digest)


def scan_days(database: Database, settings: Settings, now: datetime) -> list[date]:
    """The days an automatic scan owes: those with a cycle still without an entry, up to today."""
    with database.sessions() as session:
        created = repository.earliest_job_creation(session)
        if created is None:
            return [now.date()]
        first = max(settings.start_date, created.date())
        days = repository.open_days(session, first, now.date())
    return days or [now.date()]


def waiting_days(database: Database, settings: Settings, now: datetime) -> list[date]:
    """The days the report files waiting in log/ can bear on, from their names (as the sensor judges)."""
    from backup_pipeline.automation import partitions_for, pending_files

    try:
        files = list(pending_files(settings).values())
    except FileNotFoundError:
        return []
    if not files:
        return []
    with database.sessions() as session:
        widest = max(repository.agent_windows(session).values(), default=settings.window_minutes)
        created = repository.earliest_job_creation(session)
    first = max(settings.start_date, created.date()) if created else settings.start_date
    return partitions_for(files, widest, now.date(), first)


def dagster_instance(settings: Settings) -> DagsterInstance:
    """The instance at DAGSTER_HOME (so runs show in the UI), else a throwaway one."""
    if not os.environ.get("DAGSTER_HOME"):
        return DagsterInstance.ephemeral()
    from backup_pipeline.dagster_home import ensure_dagster_storage_url

    ensure_dagster_storage_url(settings)  # an explicit DAGSTER_HOME with the shipped dagster.yaml
    try:
        return DagsterInstance.get()
    except DagsterError as exc:  # e.g. a dagster.yaml naming an unset variable
        raise ScanError(
            f"cannot open the Dagster instance at DAGSTER_HOME={os.environ['DAGSTER_HOME']}: "
            + _config_problem(exc)
        ) from None


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
    now: datetime,
    *,
    partitions: list[date] | None = None,
    rehash: bool = False,
    log_level: str = "WARNING",
) -> list[PartitionRun]:
    database = open_database(settings)
    with exclusive_scan(database):
        return _run_scan(settings, database, now, partitions, rehash, log_level)


@contextmanager
def exclusive_scan(database: Database) -> Iterator[None]:
    """One CLI scan at a time across processes (the daemon's runs are serialised by the run queue)."""
    with database.engine.connect() as conn:
        if not conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": SCAN_LOCK}).scalar():
            log.warning("another scan is running: waiting for it to finish")
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": SCAN_LOCK})
        try:
            yield
        finally:
            with contextlib.suppress(sa.exc.DBAPIError):  # PostgreSQL gone: the lock went with it
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": SCAN_LOCK})
                conn.commit()


def _run_scan(
    settings: Settings,
    database: Database,
    now: datetime,
    partitions: list[date] | None,
    rehash: bool,
    log_level: str,
) -> list[PartitionRun]:
    from backup_pipeline.definitions import SCAN_JOB, defs  # Dagster definitions load on demand

    sync_jobs_file(settings, database, now)
    if not settings.storage_root.is_dir():  # say so here rather than as a failed Dagster step
        raise ScanError(
            f"deposit root {settings.storage_root} does not exist or is not a directory "
            "(set BACKUP_STORAGE_ROOT)"
        )
    automatic = not partitions
    days = (
        list(partitions)
        if partitions
        else scan_days(database, settings, now) + waiting_days(database, settings, now)
    )
    job = defs.resolve_job_def(SCAN_JOB)
    instance = dagster_instance(settings)
    runs: list[PartitionRun] = []
    pending = sorted(set(days))
    done: set[date] = set()
    while pending:
        day = pending.pop(0)
        done.add(day)
        last = not pending  # only the last run archives (more days found by its ingest are run after)
        run = _run_partition(
            job, instance, day, now, rehash=rehash, automatic=automatic, log_level=log_level, archive=last
        )
        runs.append(run)
        if not run.success:
            break
        if automatic and run.ingested:
            late = {date.fromisoformat(d) for d in run.ingested.touched_days}
            late = {d for d in late if settings.start_date <= d <= now.date()} - done - set(pending)
            pending = sorted(set(pending) | late)
    return runs


def _run_partition(
    job, instance, day: date, now: datetime, *, rehash: bool, automatic: bool, log_level: str, archive: bool
) -> PartitionRun:
    scan = {"at": now.isoformat(), "rehash": rehash, "automatic": automatic, "archive": archive}
    config = {
        "resources": {"scan": {"config": scan}},
        "loggers": {"console": {"config": {"log_level": log_level}}},
    }
    try:
        result = job.execute_in_process(
            partition_key=day.isoformat(),
            run_config=config,
            instance=instance,
            raise_on_error=False,
            tags=IN_PROCESS_TAGS,
        )
    except Exception as exc:  # e.g. a partition outside the defined range
        raise ScanError(f"cannot run the scan for {day}: {exc}") from None
    run = PartitionRun(day=day, run_id=result.run_id, success=result.success)
    if result.success:
        run.ingested = result.output_for_node("ingest_reports")
        run.batches = list(result.output_for_node("evaluate").values())
        run.archived = result.output_for_node("archive_reports")
        run.notified = result.output_for_node("notify")
    else:
        run.error = _failure(result)
    return run


def _failure(result) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            error = event.step_failure_data.error
            while error.cause is not None and error.cls_name in ("DagsterExecutionStepExecutionError",):
                error = error.cause
            if error.cls_name in _DATABASE_ERRORS:  # the driver's first line, not SQLAlchemy's footer
                reason = f"PostgreSQL unreachable or failing: {db_error_line(error.message)}"
                return f"step {event.step_key} failed: {reason}"
            return f"step {event.step_key} failed: {error.message.strip().splitlines()[-1]}"
    return "the run failed (see its logs in Dagster)"


_DATABASE_ERRORS = (
    "OperationalError",
    "InterfaceError",
    "DatabaseError",
    "InternalError",
    "DisconnectionError",
)
