"""PostgreSQL tables (SQLAlchemy 2 typed ORM). Schema changes go through Alembic migrations."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from backup_pipeline.core.domain import SUCCESS_STATUSES
from backup_pipeline.core.reports import MAX_AGENT_ID, MAX_FILE_NAME_BYTES, MAX_RECORDED_NAME

TZ = DateTime(timezone=True)
# Content fingerprints name their algorithm ("blake3:<hex>", see core.fingerprints); a cycle measured
# across a change of algorithm holds two such tokens.
FINGERPRINT = 256


def sql_literals(values: Iterable[str]) -> str:
    """Known constants (never user input) as a SQL list, for index predicates that cannot be bound."""
    return ", ".join(f"'{v}'" for v in sorted(values))


class Base(DeclarativeBase):
    pass


class ExpectedBackupRow(Base):
    """An expected backup: one database of one agent expected at the instants of a schedule (daily at
    HH:MM UTC, or a cron expression read in `timezone`), with its latest known state. Its identity is
    (agent, database, name). The table keeps the first design's name (docs/design.md §1),
    `expected_jobs` (and `job_id` in the tables that refer to it)."""

    __tablename__ = "expected_jobs"
    __table_args__ = (
        UniqueConstraint("agent_id_responsible", "database_name", "name", name="uq_job"),
        # Exactly one way of saying when: a cron schedule, or the daily-UTC hour and minute.
        CheckConstraint(
            "(schedule IS NULL) = (expected_hour_utc IS NOT NULL AND expected_minute_utc IS NOT NULL)",
            name="ck_job_schedule_form",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agent_id_responsible: Mapped[str] = mapped_column(String(MAX_AGENT_ID), index=True)
    database_name: Mapped[str] = mapped_column(String(128))
    # The jobs file's `name`; HHMM for daily-UTC backups that have none (their identity since the
    # start), empty for the one unnamed cron-scheduled backup of a database.
    name: Mapped[str] = mapped_column(String(64))
    expected_hour_utc: Mapped[int | None] = mapped_column(SmallInteger)
    expected_minute_utc: Mapped[int | None] = mapped_column(SmallInteger)
    schedule: Mapped[str | None] = mapped_column(Text)  # a 5-field cron expression, read in `timezone`
    early_minutes: Mapped[int] = mapped_column(Integer)
    grace_minutes: Mapped[int] = mapped_column(Integer)
    timezone: Mapped[str] = mapped_column(String(64))
    staged_file_name: Mapped[str | None] = mapped_column(String(MAX_FILE_NAME_BYTES))
    content_change: Mapped[str] = mapped_column(String(16))
    company_name: Mapped[str] = mapped_column(String(128))
    city: Mapped[str] = mapped_column(String(128))
    neighborhood: Mapped[str] = mapped_column(String(128))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    current_status: Mapped[str] = mapped_column(String(32), default="UNKNOWN", server_default="UNKNOWN")
    last_checked_timestamp: Mapped[datetime | None] = mapped_column(TZ)
    last_successful_backup_timestamp: Mapped[datetime | None] = mapped_column(TZ)
    previous_successful_hash_global: Mapped[str | None] = mapped_column(String(64))
    previous_successful_content_fingerprint: Mapped[str | None] = mapped_column(String(FINGERPRINT))
    created_at: Mapped[datetime] = mapped_column(TZ)
    updated_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    # Notification targets, silences and size-anomaly overrides (jobs_file.BackupAlerting.stored()).
    alerting: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default=text("'{}'::jsonb"))
    # Restore drill policy overrides (jobs_file.RestoreDrillSpec.stored()): what the file sets.
    restore_drill: Mapped[dict[str, Any]] = mapped_column(
        JSONB, default=dict, server_default=text("'{}'::jsonb")
    )

    # Read by jobs_file.to_expected_backup, which expects the jobs-file spelling.
    @property
    def agent_id(self) -> str:
        return self.agent_id_responsible


class StatusReportRow(Base):
    """Every report file ever seen: accepted (with its normalised payload) or rejected with a reason."""

    __tablename__ = "status_reports"
    __table_args__ = (
        UniqueConstraint("agent_id", "file_name", "content_sha256", name="uq_report_file"),
        Index("ix_report_agent_end", "agent_id", "operation_end_time"),
        Index("ix_report_agent_named", "agent_id", "file_name_time"),
        Index("ix_report_unarchived", "agent_id", postgresql_where=text("archived_path IS NULL")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(MAX_AGENT_ID))
    file_name: Mapped[str] = mapped_column(String(MAX_RECORDED_NAME))  # escaped where not UTF-8
    content_sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    accepted: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(Text)
    notes: Mapped[list[str]] = mapped_column(JSONB, default=list)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    operation_end_time: Mapped[datetime | None] = mapped_column(TZ)
    file_name_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=False))
    file_mtime: Mapped[datetime | None] = mapped_column(TZ)
    ingested_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    # The recording transaction (64-bit, never wraps): compared with a watch mark's snapshot.
    recorded_xid: Mapped[int] = mapped_column(
        BigInteger, server_default=text("(pg_current_xact_id()::text::bigint)")
    )
    archived_path: Mapped[str | None] = mapped_column(Text)


class BackupEntryRow(Base):
    """The outcome of one cycle of one job: unique per (job, cycle), updated in place on re-evaluation."""

    __tablename__ = "backup_entries"
    __table_args__ = (
        UniqueConstraint("job_id", "cycle_expected_at", name="uq_entry_cycle"),
        Index("ix_entry_cycle", "cycle_expected_at"),
        Index("ix_entry_job_status_cycle", "job_id", "status", "cycle_expected_at"),
        # A job's last successful cycles (size medians, recoveries): a few index rows per job.
        Index(
            "ix_entry_job_success",
            "job_id",
            "cycle_expected_at",
            postgresql_where=text(f"status IN ({sql_literals(SUCCESS_STATUSES)}) AND superseded_at IS NULL"),
            postgresql_include=["server_calculated_staged_size"],
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("expected_jobs.id"))
    cycle_expected_at: Mapped[datetime] = mapped_column(TZ)
    status: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    report_id: Mapped[int | None] = mapped_column(ForeignKey("status_reports.id"))
    report_file: Mapped[str | None] = mapped_column(String(255))
    agent_operation_end_time: Mapped[datetime | None] = mapped_column(TZ)
    agent_backup_status: Mapped[bool | None] = mapped_column(Boolean)
    agent_backup_start_time: Mapped[datetime | None] = mapped_column(TZ)
    agent_backup_end_time: Mapped[datetime | None] = mapped_column(TZ)
    agent_backup_hash_pre_compress: Mapped[str | None] = mapped_column(String(200))
    agent_backup_size_pre_compress: Mapped[int | None] = mapped_column(BigInteger)
    agent_compress_status: Mapped[bool | None] = mapped_column(Boolean)
    agent_compress_start_time: Mapped[datetime | None] = mapped_column(TZ)
    agent_compress_end_time: Mapped[datetime | None] = mapped_column(TZ)
    agent_compress_hash_post_compress: Mapped[str | None] = mapped_column(String(200))
    agent_compress_size_post_compress: Mapped[int | None] = mapped_column(BigInteger)
    agent_transfer_status: Mapped[bool | None] = mapped_column(Boolean)
    agent_transfer_start_time: Mapped[datetime | None] = mapped_column(TZ)
    agent_transfer_end_time: Mapped[datetime | None] = mapped_column(TZ)
    agent_transfer_error_message: Mapped[str | None] = mapped_column(Text)
    agent_staged_file_name: Mapped[str | None] = mapped_column(Text)
    agent_logs_summary: Mapped[str | None] = mapped_column(Text)
    staged_file_name: Mapped[str | None] = mapped_column(String(MAX_FILE_NAME_BYTES))
    server_calculated_staged_hash: Mapped[str | None] = mapped_column(String(64))
    server_calculated_staged_size: Mapped[int | None] = mapped_column(BigInteger)
    server_content_fingerprint: Mapped[str | None] = mapped_column(String(FINGERPRINT))
    server_check_problem: Mapped[str | None] = mapped_column(Text)
    server_archive_problem: Mapped[str | None] = mapped_column(Text)
    measured_at: Mapped[datetime | None] = mapped_column(TZ)
    previous_successful_hash_used: Mapped[str | None] = mapped_column(String(64))
    previous_successful_fingerprint_used: Mapped[str | None] = mapped_column(String(FINGERPRINT))
    previous_success_cycle: Mapped[datetime | None] = mapped_column(TZ)
    dagster_run_id: Mapped[str | None] = mapped_column(String(64))
    evaluated_at: Mapped[datetime] = mapped_column(TZ)
    created_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    # The staged size against the median of the job's last successful cycles before this one:
    # median, ratio and history are set once enough history exists, the kind only for an anomaly.
    size_anomaly: Mapped[str | None] = mapped_column(String(16))
    size_median: Mapped[float | None] = mapped_column(Float)
    size_ratio: Mapped[float | None] = mapped_column(Float)
    size_history: Mapped[int | None] = mapped_column(SmallInteger)
    # Set when a re-evaluation of the cycle's day found the instant no longer in the backup's schedule
    # (its configuration changed): kept as history, out of statuses, digests and alerts.
    superseded_at: Mapped[datetime | None] = mapped_column(TZ)


class AlertRow(Base):
    """Something people must hear about: one per (job, cycle, event), written with the entry that
    raised it (in the same transaction), then dispatched to the targets by the scan's notify step."""

    __tablename__ = "alerts"
    __table_args__ = (
        UniqueConstraint("job_id", "cycle_expected_at", "event", name="uq_alert"),
        Index("ix_alert_job_cycle", "job_id", "cycle_expected_at"),
        Index("ix_alert_undispatched", "id", postgresql_where=text("dispatched_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("expected_jobs.id"))
    entry_id: Mapped[int] = mapped_column(ForeignKey("backup_entries.id"))
    cycle_expected_at: Mapped[datetime] = mapped_column(TZ)
    event: Mapped[str] = mapped_column(String(32))  # core.alerts.AlertEvent
    message: Mapped[str] = mapped_column(Text)
    held_by: Mapped[str | None] = mapped_column(Text)  # the silence that keeps it from being sent
    dagster_run_id: Mapped[str | None] = mapped_column(String(64))
    raised_at: Mapped[datetime] = mapped_column(TZ)  # the evaluation's "now"
    dispatched_at: Mapped[datetime | None] = mapped_column(TZ)  # deliveries created (or held)
    created_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())


class NotificationDeliveryRow(Base):
    """One alert to one target: pending until sent, retried by later scans while it fails."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (
        UniqueConstraint("alert_id", "target_key", name="uq_delivery"),
        Index("ix_delivery_due", "target_key", postgresql_where=text("state IN ('pending', 'failed')")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id"))
    target_key: Mapped[str] = mapped_column(String(64))  # SHA-256 of the configured URL, never the URL
    target: Mapped[str] = mapped_column(String(255))  # redacted label
    state: Mapped[str] = mapped_column(String(16))  # pending | sent | failed | abandoned
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_attempt_at: Mapped[datetime | None] = mapped_column(TZ)
    sent_at: Mapped[datetime | None] = mapped_column(TZ)
    created_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())


class NotificationAttemptRow(Base):
    """Every attempt to send, per alert and target (and `notify test` messages, with no alert)."""

    __tablename__ = "notification_attempts"
    __table_args__ = (Index("ix_attempt_delivery", "delivery_id"), Index("ix_attempt_at", "attempted_at"))

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    delivery_id: Mapped[int | None] = mapped_column(ForeignKey("notification_deliveries.id"))
    kind: Mapped[str] = mapped_column(String(16))  # alert | test
    target_key: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(255))
    message_id: Mapped[str] = mapped_column(String(36))  # the alerts sent together in one message
    ok: Mapped[bool] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(Text)
    dagster_run_id: Mapped[str | None] = mapped_column(String(64))
    attempted_at: Mapped[datetime] = mapped_column(TZ)


class CycleWatchRow(Base):
    """When a scan last looked at an agent's cycles of a day, and which reports it saw: the others
    mean new work."""

    __tablename__ = "cycle_watch"

    agent_id: Mapped[str] = mapped_column(String(MAX_AGENT_ID), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    looked_at: Mapped[datetime] = mapped_column(TZ)
    # Every report recorded by a transaction below this id was visible to that scan (its snapshot's
    # xmin); reports at or above it may not have been.
    visible_below: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class FleetStateRow(Base):
    """One row: which jobs file the jobs table reflects, and when a scan last checked every active
    job (so an idle scan does not rewrite 20,000 job rows to say it looked at them)."""

    __tablename__ = "fleet_state"
    __table_args__ = (CheckConstraint("id = 1", name="ck_fleet_state_single_row"),)

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    jobs_file_digest: Mapped[str | None] = mapped_column(String(64))
    active_jobs: Mapped[int | None] = mapped_column(Integer)
    jobs_synced_at: Mapped[datetime | None] = mapped_column(TZ)
    checked_at: Mapped[datetime | None] = mapped_column(TZ)


class JobsFileSyncRow(Base):
    """What each jobs file (by absolute path) held when it was last synced: a scan re-syncs the
    configured file only when it changed since, so it never undoes a person's `jobs sync --file`."""

    __tablename__ = "jobs_file_syncs"

    path: Mapped[str] = mapped_column(Text, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64))
    synced_at: Mapped[datetime] = mapped_column(TZ)


class ScanRecordRow(Base):
    """One scan run (one partition): when it started and ended, and how it ended (`running` until its
    last step, or its first failed step, says otherwise; a run killed outright stays `running`)."""

    __tablename__ = "scan_records"
    __table_args__ = (Index("ix_scan_ended", "ended_at"),)

    # One row per run, keyed by it: no sequence to share between the processes of a run.
    dagster_run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[date | None] = mapped_column(Date)
    automatic: Mapped[bool | None] = mapped_column(Boolean)
    started_at: Mapped[datetime] = mapped_column(TZ)
    ended_at: Mapped[datetime | None] = mapped_column(TZ)
    outcome: Mapped[str] = mapped_column(String(16))  # running | succeeded | failed


class StepOutputRow(Base):
    """The output of one Dagster step (a small pydantic summary: ids and counts, as JSON), where every
    worker of every host reads it: steps of a run may execute on different machines."""

    __tablename__ = "step_outputs"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    step_key: Mapped[str] = mapped_column(Text, primary_key=True)
    output_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    mapping_key: Mapped[str] = mapped_column(Text, primary_key=True)  # '' for an output that is not mapped
    value: Mapped[str] = mapped_column(Text)
    stored_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now(), index=True)


class StagedFileMeasurementRow(Base):
    """The server's measurement of the staged file a report names, taken by a scan's measurement step
    before evaluation; the evaluation of the cycle reuses it and removes it once its entry holds it."""

    __tablename__ = "staged_file_measurements"

    report_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("status_reports.id", ondelete="CASCADE"), primary_key=True
    )
    staged_file_name: Mapped[str] = mapped_column(Text, primary_key=True)
    sha256: Mapped[str | None] = mapped_column(String(64))
    size: Mapped[int | None] = mapped_column(BigInteger)
    content_fingerprint: Mapped[str | None] = mapped_column(Text)  # `algorithm:digest` tokens
    problem: Mapped[str | None] = mapped_column(Text)
    archive_problem: Mapped[str | None] = mapped_column(Text)
    measured_at: Mapped[datetime] = mapped_column(TZ)
    run_id: Mapped[str | None] = mapped_column(String(64))
    # The fingerprint algorithms asked for besides the current one (space-separated): reused only by
    # an evaluation that would ask for the same.
    also: Mapped[str] = mapped_column(Text)


class RestoreDrillRow(Base):
    """One restore drill of one entry: its dump restored into a throw-away cluster and checked. One
    per entry, unless someone asks for a re-drill (the next `attempt`)."""

    __tablename__ = "restore_drills"
    __table_args__ = (
        UniqueConstraint("entry_id", "attempt", name="uq_drill_attempt"),
        Index("ix_drill_job_as_of", "job_id", "as_of"),
        Index("ix_drill_finished", "finished_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("expected_jobs.id"))
    entry_id: Mapped[int] = mapped_column(ForeignKey("backup_entries.id"))
    cycle_expected_at: Mapped[datetime] = mapped_column(TZ)
    attempt: Mapped[int] = mapped_column(SmallInteger, default=1)
    as_of: Mapped[datetime] = mapped_column(TZ)  # the instant the drill ran as of (the due policy's clock)
    started_at: Mapped[datetime] = mapped_column(TZ)
    finished_at: Mapped[datetime] = mapped_column(TZ)
    duration_seconds: Mapped[float] = mapped_column(Float)
    outcome: Mapped[str] = mapped_column(String(16))  # core.drills.DrillOutcome
    reason: Mapped[str | None] = mapped_column(Text)
    failing_statement: Mapped[str | None] = mapped_column(Text)
    detected_kind: Mapped[str | None] = mapped_column(Text)
    dump_format: Mapped[str | None] = mapped_column(String(16))
    compression: Mapped[str | None] = mapped_column(String(16))
    staged_file_name: Mapped[str | None] = mapped_column(String(MAX_FILE_NAME_BYTES))
    staged_sha256: Mapped[str | None] = mapped_column(String(64))
    staged_size: Mapped[int | None] = mapped_column(BigInteger)
    tables: Mapped[int | None] = mapped_column(Integer)
    rows: Mapped[int | None] = mapped_column(BigInteger)
    bytes: Mapped[int | None] = mapped_column(BigInteger)  # the restored database's size
    table_figures: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    amcheck: Mapped[str | None] = mapped_column(Text)
    left_out: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)  # statements not restored, by kind
    shrank: Mapped[bool] = mapped_column(Boolean, default=False)
    comparison: Mapped[str | None] = mapped_column(Text)
    previous_drill_id: Mapped[int | None] = mapped_column(BigInteger)
    tool_versions: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    dagster_run_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    engine: Mapped[str | None] = mapped_column(String(16))  # core.dump_formats.Engine
    checks: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)  # validation queries
    objective_seconds: Mapped[float | None] = mapped_column(Float)
    slow: Mapped[bool] = mapped_column(Boolean, default=False)  # restored, over its objective
