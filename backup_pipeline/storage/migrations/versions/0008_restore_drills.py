"""restore drills: one row per drill of an entry, and each expected backup's drill policy

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column(
        "expected_jobs",
        sa.Column("restore_drill", JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
    )
    op.create_table(
        "restore_drills",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("expected_jobs.id"), nullable=False),
        sa.Column("entry_id", sa.BigInteger(), sa.ForeignKey("backup_entries.id"), nullable=False),
        sa.Column("cycle_expected_at", TZ, nullable=False),
        sa.Column("attempt", sa.SmallInteger(), nullable=False),
        sa.Column("as_of", TZ, nullable=False),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("finished_at", TZ, nullable=False),
        sa.Column("duration_seconds", sa.Float(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("failing_statement", sa.Text()),
        sa.Column("detected_kind", sa.Text()),
        sa.Column("dump_format", sa.String(16)),
        sa.Column("compression", sa.String(16)),
        sa.Column("staged_file_name", sa.String(255)),
        sa.Column("staged_sha256", sa.String(64)),
        sa.Column("staged_size", sa.BigInteger()),
        sa.Column("tables", sa.Integer()),
        sa.Column("rows", sa.BigInteger()),
        sa.Column("bytes", sa.BigInteger()),
        sa.Column("table_figures", JSONB(), nullable=False),
        sa.Column("amcheck", sa.Text()),
        sa.Column("left_out", JSONB(), nullable=False),
        sa.Column("shrank", sa.Boolean(), nullable=False),
        sa.Column("comparison", sa.Text()),
        sa.Column("previous_drill_id", sa.BigInteger()),
        sa.Column("tool_versions", JSONB(), nullable=False),
        sa.Column("dagster_run_id", sa.String(64)),
        sa.Column("created_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.UniqueConstraint("entry_id", "attempt", name="uq_drill_attempt"),
    )
    op.create_index("ix_drill_job_as_of", "restore_drills", ["job_id", "as_of"])
    op.create_index("ix_drill_finished", "restore_drills", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_drill_finished", table_name="restore_drills")
    op.drop_index("ix_drill_job_as_of", table_name="restore_drills")
    op.drop_table("restore_drills")
    op.drop_column("expected_jobs", "restore_drill")
