"""restore drills of MariaDB dumps, validation queries and restore-time objectives

Each drill records the engine it restored into (`postgresql` or `mariadb`), the result of every
validation query of its backup (`checks`: name, passed, detail), and its restore-time objective and
whether it was over it (`slow`).

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("restore_drills", sa.Column("engine", sa.String(16), nullable=True))
    op.add_column(
        "restore_drills",
        sa.Column("checks", postgresql.JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False),
    )
    op.add_column("restore_drills", sa.Column("objective_seconds", sa.Float(), nullable=True))
    op.add_column(
        "restore_drills", sa.Column("slow", sa.Boolean(), server_default=sa.false(), nullable=False)
    )
    # Drills recorded before: PostgreSQL's when they restored (MariaDB dumps were not drillable).
    op.execute("UPDATE restore_drills SET engine = 'postgresql' WHERE dump_format IS NOT NULL")


def downgrade() -> None:
    for column in ("slow", "objective_seconds", "checks", "engine"):
        op.drop_column("restore_drills", column)
