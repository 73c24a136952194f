"""fingerprint algorithms: stored content fingerprints name the algorithm that made them

Content fingerprints were SHA-256 digests of the decompressed content, without a name; the server
now fingerprints content with BLAKE3. Every stored fingerprint gets its algorithm's name
(`sha256:<hex>`), or `sha256-file:<hex>` where it was the compressed file's own SHA-256 (archive
checks off, or a corrupt archive: the fingerprint equals the file's hash and the name is a gzip or
zstd one), so that content policies never compare digests of two algorithms. History cannot be
re-measured here (the dumps are overwritten every cycle): the first cycle a scan measures after
this revision is fingerprinted in both algorithms, and the comparison chain carries on in BLAKE3.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = [
    ("backup_entries", "server_content_fingerprint"),
    ("backup_entries", "previous_successful_fingerprint_used"),
    ("expected_jobs", "previous_successful_content_fingerprint"),
]
SUCCESSES = "('SUCCESS', 'HASH_MISMATCH')"


def upgrade() -> None:
    for table, column in COLUMNS:
        op.alter_column(table, column, type_=sa.String(256), existing_type=sa.String(64))
    op.execute(
        r"""
        UPDATE backup_entries SET server_content_fingerprint =
            CASE WHEN server_content_fingerprint = server_calculated_staged_hash
                      AND staged_file_name ~* '\.(gz|gzip|zst|zstd)$'
                 THEN 'sha256-file:' ELSE 'sha256:' END || server_content_fingerprint
        WHERE server_content_fingerprint IS NOT NULL AND strpos(server_content_fingerprint, ':') = 0
        """
    )
    # What an entry was compared with: the previous success's fingerprint, now named.
    op.execute(
        """
        UPDATE backup_entries e SET previous_successful_fingerprint_used = p.server_content_fingerprint
        FROM backup_entries p
        WHERE p.job_id = e.job_id AND p.cycle_expected_at = e.previous_success_cycle
          AND strpos(e.previous_successful_fingerprint_used, ':') = 0
          AND split_part(p.server_content_fingerprint, ':', 2) = e.previous_successful_fingerprint_used
        """
    )
    op.execute(
        """
        UPDATE backup_entries SET previous_successful_fingerprint_used =
            'sha256:' || previous_successful_fingerprint_used
        WHERE strpos(previous_successful_fingerprint_used, ':') = 0
        """
    )
    op.execute(
        f"""
        UPDATE expected_jobs j SET previous_successful_content_fingerprint = (
            SELECT e.server_content_fingerprint FROM backup_entries e
            WHERE e.job_id = j.id AND e.status IN {SUCCESSES}
            ORDER BY e.cycle_expected_at DESC LIMIT 1)
        WHERE previous_successful_content_fingerprint IS NOT NULL
        """
    )


def downgrade() -> None:
    # Back to bare SHA-256 digests: a BLAKE3-only fingerprint has no such meaning and is dropped.
    for table, column in COLUMNS:
        op.execute(
            f"""
            UPDATE {table} SET {column} = substring({column} FROM '(?:^|\\s)sha256(?:-file)?:([0-9a-f]{{64}})')
            WHERE {column} IS NOT NULL
            """
        )
        op.alter_column(table, column, type_=sa.String(64), existing_type=sa.String(256))
