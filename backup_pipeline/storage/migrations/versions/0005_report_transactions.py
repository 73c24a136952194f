"""report transactions: which transaction recorded a report, and which ones a cycle watch mark saw

A "looked at" time cannot tell whether a report committed by a concurrent scan was visible to the
scan that set the mark (the report's time is its transaction's start). Transaction ids can: every
transaction below a snapshot's xmin had finished when the snapshot was taken.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CURRENT_XID = sa.text("(pg_current_xact_id()::text::bigint)")


def upgrade() -> None:
    op.add_column(
        "status_reports",
        sa.Column("recorded_xid", sa.BigInteger(), server_default=CURRENT_XID, nullable=False),
    )
    # Existing marks saw nothing that can be proven: their agents' days are looked at once more.
    op.add_column(
        "cycle_watch",
        sa.Column("visible_below", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("cycle_watch", "visible_below")
    op.drop_column("status_reports", "recorded_xid")
