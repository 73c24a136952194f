"""A drill's limits, enforced from a thread while the drill runs: the wall clock (`max_minutes`), the
disk its folder may use (`max_bytes`, or less when the file system has less free space), and the
statement timeout (a restore statement running too long is cancelled). Reaching the time or disk
limit — or filling the drill folder's file system — stops the cluster at once; the drill then ends
RESTORE_FAILED with the reason, recorded like any other: whatever a dump does, it costs its own drill
and no other."""

from __future__ import annotations

import threading
import time
from typing import Protocol

from backup_pipeline.adapters.scratch_cluster import ScratchCluster
from backup_pipeline.storage.scratch import StatementWatch

TICK = 0.2
DISK_EVERY = 0.5
STATEMENTS_EVERY = 1.0


class Watched(Protocol):
    """A scratch server: PostgreSQL's cluster or MariaDB's."""

    def abort(self) -> None: ...

    def disk_usage(self) -> int: ...


class StatementWatcher(Protocol):
    def cancel_overlong(self) -> list[str]: ...

    def close(self) -> None: ...


class Watch:
    def __init__(
        self,
        cluster: Watched,
        *,
        started: float,
        max_seconds: float,
        max_bytes: int,
        free_bytes: int,
        statement_timeout: float,
    ) -> None:
        self.cluster, self.started = cluster, started
        self.max_seconds, self.max_bytes, self.free_bytes = max_seconds, max_bytes, free_bytes
        self.statement_timeout = statement_timeout
        self.violation: str | None = None  # a limit reached: RESTORE_FAILED
        self.cancelled: list[str] = []  # statements cancelled for running too long
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drill-watch", daemon=True)
        self._statements: StatementWatcher | None = None

    def start(self) -> Watch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        if self._statements is not None:
            self._statements.close()

    def watch_statements(self, statements: StatementWatcher | None = None) -> None:
        """From now on the server answers: its restore's statements are watched too (by default a
        PostgreSQL cluster's)."""
        if statements is None:
            assert isinstance(self.cluster, ScratchCluster)
            statements = StatementWatch(self.cluster, self.statement_timeout)
        self._statements = statements

    @property
    def stopped_it(self) -> bool:
        return self.violation is not None

    def _run(self) -> None:
        next_disk = next_statements = 0.0
        while not self._stop.wait(TICK):
            now = time.monotonic()
            if now - self.started > self.max_seconds:
                self._abort(
                    f"limit reached: the drill's time limit of {self.max_seconds / 60:g} minute(s) "
                    "(restore_drill.max_minutes): stopped (an endless restore, or raise the limit)"
                )
                return
            if now >= next_disk:
                next_disk = now + DISK_EVERY
                if self._disk_exceeded():
                    return
            statements = self._statements
            if statements is not None and now >= next_statements:
                next_statements = now + STATEMENTS_EVERY
                self.cancelled += statements.cancel_overlong()

    def _disk_exceeded(self) -> bool:
        used = self.cluster.disk_usage()
        self.peak_bytes = max(self.peak_bytes, used)
        if used > self.max_bytes:
            self._abort(
                f"limit reached: the restore used more than {self.max_bytes:,} bytes of disk "
                "(restore_drill.max_bytes): stopped (a bomb, or raise the limit)"
            )
            return True
        if used > self.free_bytes:
            self._abort(full_file_system(self.free_bytes))
            return True
        return False

    def _abort(self, reason: str) -> None:
        self.violation = reason
        self.cluster.abort()


def full_file_system(free_bytes: int | None = None) -> str:
    room = f" ({free_bytes:,} bytes were free for it)" if free_bytes is not None else ""
    return (
        f"limit reached: the drill folder's file system is full{room}: stopped (a bomb, or give "
        "BACKUP_PIPELINE_DRILL_DIR more room)"
    )
