"""Phase 3 of a scan: move every recorded report from log/ to log/_archive/, after the commit.

Only recorded reports move, and only while the file still holds the recorded content. Moves never
overwrite (a name clash keeps both files) and are recognised if a crash interrupted them, so the
next scan converges with nothing lost and nothing archived twice.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

from backup_pipeline.adapters.deposit import (
    AgentFolder,
    archive_report,
    archived_candidates,
    holds_report,
    waiting_names,
)
from backup_pipeline.core.reports import is_valid_agent_id
from backup_pipeline.core.text import visible
from backup_pipeline.scan.context import ScanContext, Summary
from backup_pipeline.storage import reports
from backup_pipeline.storage.locks import Lock, advisory_lock
from backup_pipeline.storage.orm import StatusReportRow

log = logging.getLogger(__name__)


class ArchiveSummary(Summary):
    archived: int = 0
    left: list[str] = []  # recorded reports not moved, with why
    errors: list[str] = []  # of those, the ones a person must act on (disk full, unusable _archive/...)
    # Set when archiving was left to a later run of the same scan (a report bears on a day that
    # scan has still to evaluate): the reports stay in log/ until then.
    deferred: str | None = None


def archive(ctx: ScanContext) -> ArchiveSummary:
    summary = ArchiveSummary()
    archived: dict[int, str] = {}
    with advisory_lock(ctx.database, Lock.ARCHIVE), ctx.database.sessions() as session:
        by_agent: dict[str, list[StatusReportRow]] = defaultdict(list)
        for row in reports.unarchived_reports(session):
            by_agent[row.agent_id].append(row)
        for agent_id, rows in by_agent.items():
            archived.update(_archive_agent(ctx, agent_id, rows, summary))
        reports.mark_archived(session, archived)
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
            reason = exc.strerror or str(exc)  # UnsafeFolder's strerror is a whole sentence
            summary.left.append(f"{agent_id}/{row.file_name}: cannot archive: {reason}")
            summary.errors.append(f"{agent_id}/{row.file_name}: {reason}")
            log.error("cannot archive %s/%s: %s", agent_id, visible(row.file_name), visible(reason))
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
            if holds_report(agent, name, row.file_name, row.content_sha256, archived=False):
                return archive_report(agent, row.file_name, row.content_sha256, source_name=name)
        return None  # replaced since it was recorded: the next scan records the new content
    # Moved by an interrupted scan before its record was updated: find it by content.
    for candidate in archived_candidates(agent, row.file_name):
        if holds_report(agent, candidate, row.file_name, row.content_sha256, archived=True):
            return agent.archive_dir / candidate
    return None
