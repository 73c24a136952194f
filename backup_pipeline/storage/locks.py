"""PostgreSQL advisory locks: one process at a time for the work that must not overlap, whatever
process runs it (CLI, Dagster run worker, another host).

Every lock of the product is taken here, with one way of handling a lost connection: the lock went
with the session, so releasing it is skipped with a warning and never replaces the error the
locked work itself raised.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backup_pipeline.storage.database import Database, db_error_line

log = logging.getLogger(__name__)


class Lock(enum.IntEnum):
    """Fixed advisory-lock keys (four ASCII letters each, so they read in pg_locks). Migrations take
    their own transaction-level lock (database.MIGRATION_LOCK)."""

    SCAN = 0x7363616E  # "scan": one CLI scan at a time (the daemon's runs queue on a tag)
    ARCHIVE = 0x61726368  # "arch": one archiver at a time
    NOTIFY = 0x6E6F7469  # "noti": one notifier at a time


@contextmanager
def advisory_lock(
    database: Database, key: Lock, *, wait: bool = True, on_wait: Callable[[], None] | None = None
) -> Iterator[bool]:
    """Hold the session lock `key` for the block; yields whether it is held.

    With `wait`, a lock held elsewhere is waited for (`on_wait` is called first, to say so) and the
    block always runs holding it; without, the block runs at once and is told it does not hold it.
    """
    with database.engine.connect() as conn:
        held = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": int(key)}).scalar())
        if not held and wait:
            if on_wait is not None:
                on_wait()
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": int(key)})
            held = True
        try:
            yield held
        finally:
            if held:
                _release(conn, key)


def _release(conn: Connection, key: Lock) -> None:
    try:
        conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": int(key)})
        conn.commit()
    except sa.exc.DBAPIError as exc:  # the session is gone, and its locks with it
        log.warning("advisory lock %s not released explicitly: %s", key.name, db_error_line(exc))
