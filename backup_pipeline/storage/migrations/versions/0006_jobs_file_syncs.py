"""jobs file syncs: what each jobs file held when it was last synced

A scan syncs the configured jobs file only when it changed since it was last synced, so that a
person's `backup-pipeline jobs sync --file OTHER` is not undone by the next scan.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "jobs_file_syncs",
        sa.Column("path", sa.Text(), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("jobs_file_syncs")
