"""alerts: notifications, size anomalies, silences

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 22:00:00

Adds each job's alerting configuration, the size-anomaly columns of backup entries, and the three
notification tables: alerts (one per job, cycle and event), their deliveries (one per alert and
target) and every attempt to send.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "expected_jobs",
        sa.Column(
            "alerting",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
    )
    op.add_column("backup_entries", sa.Column("size_anomaly", sa.String(length=16), nullable=True))
    op.add_column("backup_entries", sa.Column("size_median", sa.Float(), nullable=True))
    op.add_column("backup_entries", sa.Column("size_ratio", sa.Float(), nullable=True))
    op.add_column("backup_entries", sa.Column("size_history", sa.SmallInteger(), nullable=True))
    op.create_index(
        "ix_entry_job_success",
        "backup_entries",
        ["job_id", "cycle_expected_at"],
        unique=False,
        postgresql_where=sa.text("status IN ('SUCCESS', 'HASH_MISMATCH')"),
        postgresql_include=["server_calculated_staged_size"],
    )

    op.create_table(
        "alerts",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("entry_id", sa.BigInteger(), nullable=False),
        sa.Column("cycle_expected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("held_by", sa.Text(), nullable=True),
        sa.Column("dagster_run_id", sa.String(length=64), nullable=True),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["entry_id"], ["backup_entries.id"]),
        sa.ForeignKeyConstraint(["job_id"], ["expected_jobs.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "cycle_expected_at", "event", name="uq_alert"),
    )
    op.create_index("ix_alert_job_cycle", "alerts", ["job_id", "cycle_expected_at"], unique=False)
    op.create_index(
        "ix_alert_undispatched",
        "alerts",
        ["id"],
        unique=False,
        postgresql_where=sa.text("dispatched_at IS NULL"),
    )

    op.create_table(
        "notification_deliveries",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("alert_id", sa.BigInteger(), nullable=False),
        sa.Column("target_key", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["alert_id"], ["alerts.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("alert_id", "target_key", name="uq_delivery"),
    )
    op.create_index(
        "ix_delivery_due",
        "notification_deliveries",
        ["target_key"],
        unique=False,
        postgresql_where=sa.text("state IN ('pending', 'failed')"),
    )

    op.create_table(
        "notification_attempts",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("delivery_id", sa.BigInteger(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("target_key", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=255), nullable=False),
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("dagster_run_id", sa.String(length=64), nullable=True),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["delivery_id"], ["notification_deliveries.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_attempt_delivery", "notification_attempts", ["delivery_id"], unique=False)
    op.create_index("ix_attempt_at", "notification_attempts", ["attempted_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_attempt_at", table_name="notification_attempts")
    op.drop_index("ix_attempt_delivery", table_name="notification_attempts")
    op.drop_table("notification_attempts")
    op.drop_index(
        "ix_delivery_due",
        table_name="notification_deliveries",
        postgresql_where=sa.text("state IN ('pending', 'failed')"),
    )
    op.drop_table("notification_deliveries")
    op.drop_index(
        "ix_alert_undispatched", table_name="alerts", postgresql_where=sa.text("dispatched_at IS NULL")
    )
    op.drop_index("ix_alert_job_cycle", table_name="alerts")
    op.drop_table("alerts")
    op.drop_index(
        "ix_entry_job_success",
        table_name="backup_entries",
        postgresql_where=sa.text("status IN ('SUCCESS', 'HASH_MISMATCH')"),
    )
    op.drop_column("backup_entries", "size_history")
    op.drop_column("backup_entries", "size_ratio")
    op.drop_column("backup_entries", "size_median")
    op.drop_column("backup_entries", "size_anomaly")
    op.drop_column("expected_jobs", "alerting")
