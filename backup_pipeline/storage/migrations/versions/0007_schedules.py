"""schedules: cron expressions in a zone, early and grace windows, superseded entries

An expected backup's identity becomes (agent, database, name). Existing backups, all daily at
HH:MM UTC, get the name HHMM: their identity, asset keys and history are unchanged. Their window
becomes early = grace = window_minutes. Entries gain `superseded_at` (a re-evaluation found their
instant no longer in the schedule); the partial index of successful cycles leaves those out.

Downgrading refuses while cron-scheduled backups exist (the old schema cannot say when they are
expected); superseded entries then count again, and asymmetric windows become the wider side.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SUCCESSES = "status IN ('HASH_MISMATCH', 'SUCCESS')"


def upgrade() -> None:
    op.add_column("expected_jobs", sa.Column("name", sa.String(64), nullable=True))
    op.add_column("expected_jobs", sa.Column("schedule", sa.Text(), nullable=True))
    op.add_column("expected_jobs", sa.Column("early_minutes", sa.Integer(), nullable=True))
    op.add_column("expected_jobs", sa.Column("grace_minutes", sa.Integer(), nullable=True))
    op.execute(
        "UPDATE expected_jobs SET name = lpad(expected_hour_utc::text, 2, '0') || lpad(expected_minute_utc::text, 2, '0'), "
        "early_minutes = window_minutes, grace_minutes = window_minutes"
    )
    for column in ("name", "early_minutes", "grace_minutes"):
        op.alter_column("expected_jobs", column, nullable=False)
    op.alter_column("expected_jobs", "expected_hour_utc", nullable=True)
    op.alter_column("expected_jobs", "expected_minute_utc", nullable=True)
    op.drop_column("expected_jobs", "window_minutes")
    op.drop_constraint("uq_job", "expected_jobs", type_="unique")
    op.create_unique_constraint("uq_job", "expected_jobs", ["agent_id_responsible", "database_name", "name"])
    op.create_check_constraint(
        "ck_job_schedule_form",
        "expected_jobs",
        "(schedule IS NULL) = (expected_hour_utc IS NOT NULL AND expected_minute_utc IS NOT NULL)",
    )

    op.add_column("backup_entries", sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True))
    op.drop_index("ix_entry_job_success", table_name="backup_entries")
    op.create_index(
        "ix_entry_job_success",
        "backup_entries",
        ["job_id", "cycle_expected_at"],
        unique=False,
        postgresql_where=sa.text(f"{SUCCESSES} AND superseded_at IS NULL"),
        postgresql_include=["server_calculated_staged_size"],
    )


def downgrade() -> None:
    cron = (
        op.get_bind()
        .execute(sa.text("SELECT count(*) FROM expected_jobs WHERE schedule IS NOT NULL"))
        .scalar()
    )
    if cron:
        raise RuntimeError(
            f"{cron} expected backup(s) have a cron schedule, which revision 0006 cannot represent: "
            "remove them from the jobs file and sync before downgrading"
        )
    op.drop_index("ix_entry_job_success", table_name="backup_entries")
    op.create_index(
        "ix_entry_job_success",
        "backup_entries",
        ["job_id", "cycle_expected_at"],
        unique=False,
        postgresql_where=sa.text(SUCCESSES),
        postgresql_include=["server_calculated_staged_size"],
    )
    op.drop_column("backup_entries", "superseded_at")

    op.drop_constraint("ck_job_schedule_form", "expected_jobs", type_="check")
    op.drop_constraint("uq_job", "expected_jobs", type_="unique")
    op.add_column("expected_jobs", sa.Column("window_minutes", sa.Integer(), nullable=True))
    op.execute("UPDATE expected_jobs SET window_minutes = greatest(early_minutes, grace_minutes)")
    op.alter_column("expected_jobs", "window_minutes", nullable=False)
    op.alter_column("expected_jobs", "expected_hour_utc", nullable=False)
    op.alter_column("expected_jobs", "expected_minute_utc", nullable=False)
    op.create_unique_constraint(
        "uq_job",
        "expected_jobs",
        ["agent_id_responsible", "database_name", "expected_hour_utc", "expected_minute_utc"],
    )
    for column in ("grace_minutes", "early_minutes", "schedule", "name"):
        op.drop_column("expected_jobs", column)
