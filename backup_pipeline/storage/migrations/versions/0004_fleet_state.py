"""fleet state: the jobs file last synced, and when a scan last checked every active job

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "fleet_state",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("jobs_file_digest", sa.String(length=64), nullable=True),
        sa.Column("active_jobs", sa.Integer(), nullable=True),
        sa.Column("jobs_synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("id = 1", name="ck_fleet_state_single_row"),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("fleet_state")
