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
    DRILL = 0x6472696C  # "dril": one drill of an entry at a time (with the entry as second key)


@contextmanager
def advisory_lock(
    database: Database,
    key: Lock,
    *,
    wait: bool = True,
    on_wait: Callable[[], None] | None = None,
    item: int | None = None,
) -> Iterator[bool]:
    """Hold the session lock `key` (on one `item`, e.g. an entry, when given) for the block; yields
    whether it is held.

    With `wait`, a lock held elsewhere is waited for (`on_wait` is called first, to say so) and the
    block always runs holding it; without, the block runs at once and is told it does not hold it.
    """
    keys = "(:k)" if item is None else "(:k, :i)"
    params = {"k": int(key), "i": (item or 0) % (1 << 31)}
    with database.engine.connect() as conn:
        held = bool(conn.execute(sa.text(f"SELECT pg_try_advisory_lock{keys}"), params).scalar())
        if not held and wait:
            if on_wait is not None:
                on_wait()
            conn.execute(sa.text(f"SELECT pg_advisory_lock{keys}"), params)
            held = True
        try:
            yield held
        finally:
            if held:
                _release(conn, key, keys, params)


def _release(conn: Connection, key: Lock, keys: str, params: dict[str, int]) -> None:
    try:
        conn.execute(sa.text(f"SELECT pg_advisory_unlock{keys}"), params)
        conn.commit()
    except sa.exc.DBAPIError as exc:  # the session is gone, and its locks with it
        log.warning("advisory lock %s not released explicitly: %s", key.name, db_error_line(exc))
