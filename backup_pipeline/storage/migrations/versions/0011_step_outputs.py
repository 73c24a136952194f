"""step outputs and staged-file measurements: what steps on different workers hand each other

Steps of a scan run may execute on different hosts (Celery workers): their outputs (small JSON
summaries) are kept in PostgreSQL rather than under one machine's DAGSTER_HOME, and staged files are
measured by their own steps, in batches sized by bytes, before the evaluation that reuses them.

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "step_outputs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("step_key", sa.Text(), primary_key=True),
        sa.Column("output_name", sa.String(128), primary_key=True),
        sa.Column("mapping_key", sa.Text(), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_index("ix_step_outputs_stored_at", "step_outputs", ["stored_at"])
    op.create_table(
        "staged_file_measurements",
        sa.Column(
            "report_id",
            sa.BigInteger(),
            sa.ForeignKey("status_reports.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("staged_file_name", sa.Text(), primary_key=True),
        sa.Column("sha256", sa.String(64)),
        sa.Column("size", sa.BigInteger()),
        sa.Column("content_fingerprint", sa.Text()),
        sa.Column("problem", sa.Text()),
        sa.Column("archive_problem", sa.Text()),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(64)),
        sa.Column("also", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("staged_file_measurements")
    op.drop_index("ix_step_outputs_stored_at", table_name="step_outputs")
    op.drop_table("step_outputs")
