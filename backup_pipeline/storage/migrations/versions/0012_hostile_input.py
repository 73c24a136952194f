"""hostile input: report names as wide as what ingestion records, and instants a mistaken --at left

A report file name is recorded with its bytes that are not UTF-8 escaped (four characters per byte
at worst): 255 bytes on disk can take 1,020 characters, and one such name failed every scan's
ingestion. A `--at` far in the future (before it was bounded) left expected backups created in that
future: automatic scans then never evaluated them (or crashed computing their cycles), and the
fleet's last check stayed in that future. Both are put back to what the server knows: a backup was
created no later than its first entry was written (else now), and the fleet's last check is unknown.

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("status_reports", "file_name", type_=sa.String(1024), existing_nullable=False)
    op.execute(
        """
        UPDATE expected_jobs j SET created_at = LEAST(
            now(), COALESCE((SELECT min(e.created_at) FROM backup_entries e WHERE e.job_id = j.id), now()))
        WHERE j.created_at > now()
        """
    )
    op.execute("UPDATE fleet_state SET checked_at = NULL WHERE checked_at > now()")


def downgrade() -> None:
    op.alter_column(
        "status_reports",
        "file_name",
        type_=sa.String(255),
        existing_nullable=False,
        postgresql_using="left(file_name, 255)",
    )
