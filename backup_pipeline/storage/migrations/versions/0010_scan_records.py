"""scan records: when each scan run started and ended, and how it ended

The Prometheus exporter says when the last scan ended, how long it took and whether it succeeded, so
that an alert can tell that scans stopped (the daemon is down) or keep failing.

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "scan_records",
        sa.Column("dagster_run_id", sa.String(64), primary_key=True),
        sa.Column("day", sa.Date(), nullable=True),
        sa.Column("automatic", sa.Boolean(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
    )
    op.create_index("ix_scan_ended", "scan_records", ["ended_at"])


def downgrade() -> None:
    op.drop_index("ix_scan_ended", table_name="scan_records")
    op.drop_table("scan_records")
