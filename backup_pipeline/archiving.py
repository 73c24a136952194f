"""Phase 3 of a scan: move every recorded report from log/ to log/_archive/, after the commit.

Only recorded reports move, and only while the file still holds the recorded content. Moves never
overwrite (a name clash keeps both files) and are recognised if a crash interrupted them, so the
next scan converges with nothing lost and nothing archived twice.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path

import sqlalchemy as sa

from backup_pipeline.core.reports import is_valid_agent_id
from backup_pipeline.deposit import (
    AgentFolder,
    archive_report,
    archived_candidates,
    kind_of,
    sha256_of_path,
    waiting_names,
)
from backup_pipeline.ingestion import synthetic_hash
from backup_pipeline.scan_context import ScanContext, Summary
from backup_pipeline.storage import repository
from backup_pipeline.storage.orm import StatusReportRow

log = logging.getLogger(__name__)

ARCHIVE_LOCK = 0x61726368  # "arch": one archiver at a time, whatever process runs the scan


class ArchiveSummary(Summary):
    archived: int = 0
    left: list[str] = []  # recorded reports not moved, with why
    errors: list[str] = []  # of those, the ones a person must act on (disk full, unusable _archive/...)


def archive(ctx: ScanContext) -> ArchiveSummary:
    summary = ArchiveSummary()
    archived: dict[int, str] = {}
    with ctx.database.engine.connect() as lock_conn:
        lock_conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": ARCHIVE_LOCK})
        try:
            with ctx.database.sessions() as session:
                pending = repository.unarchived_reports(session)
                by_agent: dict[str, list[StatusReportRow]] = defaultdict(list)
                for row in pending:
                    by_agent[row.agent_id].append(row)
                for agent_id, rows in by_agent.items():
                    archived.update(_archive_agent(ctx, agent_id, rows, summary))
                repository.mark_archived(session, archived)
        finally:
            lock_conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": ARCHIVE_LOCK})
            lock_conn.commit()
    summary.archived = len(archived)
    return summary


def _archive_agent(
    ctx: ScanContext, agent_id: str, rows: list[StatusReportRow], summary: ArchiveSummary
) -> dict[int, str]:
    folder = ctx.settings.storage_root / agent_id
    if not is_valid_agent_id(agent_id) or not folder.is_dir() or folder.is_symlink():
        summary.left += [f"{agent_id}/{r.file_name}: agent folder is gone" for r in rows]
        return {}
    agent = AgentFolder(agent_id, folder)
    waiting = waiting_names(agent)
    done: dict[int, str] = {}
    for row in rows:
        try:
            path = _archive_one(agent, row, waiting.get(row.file_name, []))
        except OSError as exc:
            reason = exc.strerror or str(exc)  # ArchiveUnavailable's strerror is a whole sentence
            summary.left.append(f"{agent_id}/{row.file_name}: cannot archive: {reason}")
            summary.errors.append(f"{agent_id}/{row.file_name}: {reason}")
            log.error("cannot archive %s/%s: %s", agent_id, row.file_name, reason)
            continue
        if path is None:
            summary.left.append(f"{agent_id}/{row.file_name}: no longer in log/ nor in _archive/")
            continue
        done[row.id] = str(path)
    return done


def _archive_one(agent: AgentFolder, row: StatusReportRow, on_disk: list[str]) -> Path | None:
    """Archive the recorded report; `on_disk` are the log/ entries recorded under its name."""
    if on_disk:
        for name in on_disk:
            if _holds(agent.log_dir / name, row.file_name, row.content_sha256):
                return archive_report(agent, row.file_name, row.content_sha256, source_name=name)
        return None  # replaced since it was recorded: the next scan records the new content
    # Moved by an interrupted scan before its record was updated: find it by content.
    for candidate in archived_candidates(agent, row.file_name):
        if _holds(candidate, row.file_name, row.content_sha256):
            return candidate
    return None


def _holds(path: Path, name: str, recorded_hash: str) -> bool:
    """Whether the file at `path` is still the recorded report (by content, or by identity if unreadable)."""
    try:
        kind = kind_of(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False
    if synthetic_hash(kind, name) == recorded_hash:
        return True
    return kind == "file" and sha256_of_path(path) == recorded_hash
