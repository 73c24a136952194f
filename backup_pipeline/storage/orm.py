"""PostgreSQL tables (SQLAlchemy 2 typed ORM). Schema changes go through Alembic migrations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
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

TZ = DateTime(timezone=True)


class Base(DeclarativeBase):
    pass


class ExpectedJobRow(Base):
    """One database of one agent expected every day at HH:MM UTC, with its latest known state."""

    __tablename__ = "expected_jobs"
    __table_args__ = (
        UniqueConstraint(
            "agent_id_responsible", "database_name", "expected_hour_utc", "expected_minute_utc", name="uq_job"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agent_id_responsible: Mapped[str] = mapped_column(String(128), index=True)
    database_name: Mapped[str] = mapped_column(String(128))
    expected_hour_utc: Mapped[int] = mapped_column(SmallInteger)
    expected_minute_utc: Mapped[int] = mapped_column(SmallInteger)
    window_minutes: Mapped[int] = mapped_column(Integer)
    timezone: Mapped[str] = mapped_column(String(64))
    staged_file_name: Mapped[str | None] = mapped_column(String(255))
    content_change: Mapped[str] = mapped_column(String(16))
    company_name: Mapped[str] = mapped_column(String(128))
    city: Mapped[str] = mapped_column(String(128))
    neighborhood: Mapped[str] = mapped_column(String(128))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    current_status: Mapped[str] = mapped_column(String(32), default="UNKNOWN", server_default="UNKNOWN")
    last_checked_timestamp: Mapped[datetime | None] = mapped_column(TZ)
    last_successful_backup_timestamp: Mapped[datetime | None] = mapped_column(TZ)
    previous_successful_hash_global: Mapped[str | None] = mapped_column(String(64))
    previous_successful_content_fingerprint: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(TZ)
    updated_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())

    # Read by jobs_file.to_domain_job, which expects the jobs-file spelling.
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
    agent_id: Mapped[str] = mapped_column(String(128))
    file_name: Mapped[str] = mapped_column(String(255))
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
    archived_path: Mapped[str | None] = mapped_column(Text)


class BackupEntryRow(Base):
    """The outcome of one cycle of one job: unique per (job, cycle), updated in place on re-evaluation."""

    __tablename__ = "backup_entries"
    __table_args__ = (
        UniqueConstraint("job_id", "cycle_expected_at", name="uq_entry_cycle"),
        Index("ix_entry_cycle", "cycle_expected_at"),
        Index("ix_entry_job_status_cycle", "job_id", "status", "cycle_expected_at"),
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
    staged_file_name: Mapped[str | None] = mapped_column(String(255))
    server_calculated_staged_hash: Mapped[str | None] = mapped_column(String(64))
    server_calculated_staged_size: Mapped[int | None] = mapped_column(BigInteger)
    server_content_fingerprint: Mapped[str | None] = mapped_column(String(64))
    server_check_problem: Mapped[str | None] = mapped_column(Text)
    server_archive_problem: Mapped[str | None] = mapped_column(Text)
    measured_at: Mapped[datetime | None] = mapped_column(TZ)
    previous_successful_hash_used: Mapped[str | None] = mapped_column(String(64))
    previous_successful_fingerprint_used: Mapped[str | None] = mapped_column(String(64))
    previous_success_cycle: Mapped[datetime | None] = mapped_column(TZ)
    dagster_run_id: Mapped[str | None] = mapped_column(String(64))
    evaluated_at: Mapped[datetime] = mapped_column(TZ)
    created_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
