"""Phase 1 of a scan: discover every report in the deposit area and record it, valid or rejected.

Recording is idempotent (same agent, file name and content = one record), so a scan interrupted
before archiving simply finds the same files again. A file that is unparseable but was modified
moments ago is probably still being written: it is left for the next scan, not rejected.
"""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from backup_pipeline.adapters.deposit import (
    AgentFolder,
    ReportFile,
    UnsafeFile,
    UnsafeFolder,
    Vanished,
    discover_agents,
    list_reports,
    read_report,
    synthetic_hash,
)
from backup_pipeline.core import reports as parsing
from backup_pipeline.core.cycles import days_touched_in_any_zone
from backup_pipeline.core.text import visible
from backup_pipeline.scan.context import ScanContext, Summary
from backup_pipeline.storage import expected_backups, reports

log = logging.getLogger(__name__)

_STILL_WRITING_HINTS = ("invalid JSON", "empty file", "not UTF-8")


class Rejection(Summary):
    agent_id: str
    file_name: str
    reason: str


class IngestSummary(Summary):
    agents: int = 0
    skipped_folders: list[tuple[str, str]] = []
    accepted: int = 0
    rejected: int = 0
    already_recorded: int = 0
    deferred: list[str] = []
    touched_days: list[date] = []  # days whose cycles the newly recorded reports may change
    rejections: list[Rejection] = []


def ingest(ctx: ScanContext) -> IngestSummary:
    agents, skipped = discover_agents(ctx.settings.storage_root)
    summary = IngestSummary(agents=len(agents), skipped_folders=[(s.name, s.reason) for s in skipped])
    waiting = [(agent, files) for agent in agents if (files := _listed(agent, summary))]
    if not waiting:  # nothing in any log/: no query at all
        return summary
    with_reports = [agent.agent_id for agent, _ in waiting]
    with ctx.database.sessions() as session:
        known = reports.known_report_keys(session, with_reports)
        zones = expected_backups.agent_timezones(session, with_reports)
        windows = expected_backups.agent_windows(session, with_reports)
    rows: list[dict[str, Any]] = []
    touched: set[date] = set()
    for agent, files in waiting:
        zone = ZoneInfo(zones.get(agent.agent_id, "UTC"))
        for report in sorted(files, key=lambda r: r.name):
            row = examine_report(ctx, agent, report, zone, summary)
            if row is None:
                continue
            if (row["agent_id"], row["file_name"], row["content_sha256"]) in known:
                # Recorded by a scan that did not get to archive it (killed, failed, disk full...):
                # the days it bears on may never have been evaluated, so they are owed again.
                summary.already_recorded += 1
                touched.update(_touched(row, windows.get(row["agent_id"], ctx.settings.window_minutes)))
                continue
            rows.append(row)
    with ctx.database.sessions() as session:
        new_keys = reports.record_reports(session, rows)
    for row in rows:
        if (row["agent_id"], row["file_name"], row["content_sha256"]) not in new_keys:
            summary.already_recorded += 1  # a concurrent scan recorded it first
            continue
        if row["accepted"]:
            summary.accepted += 1
        else:
            summary.rejected += 1
            summary.rejections.append(
                Rejection(agent_id=row["agent_id"], file_name=row["file_name"], reason=row["reason"])
            )
        touched.update(_touched(row, windows.get(row["agent_id"], ctx.settings.window_minutes)))
    summary.touched_days = sorted(touched)
    return summary


def _listed(agent: AgentFolder, summary: IngestSummary) -> list[ReportFile]:
    """The agent's report files; none when its log/ is no longer a real directory of its folder
    (swapped for a link since it was found: said as a skipped folder, nothing read)."""
    try:
        return list(list_reports(agent))
    except UnsafeFolder as exc:
        summary.skipped_folders.append((agent.agent_id, exc.strerror or str(exc)))
        log.warning("skipped %s: %s", agent.agent_id, visible(exc.strerror or ""))
        return []


def _touched(row: dict[str, Any], window: int) -> list[date]:
    instant = row["operation_end_time"]
    if instant is None and row["file_name_time"] is not None:
        instant = row["file_name_time"].replace(tzinfo=UTC)
    if instant is None:
        return []
    return days_touched_in_any_zone(instant, timedelta(minutes=window))  # naive times: any zone


def examine_report(
    ctx: ScanContext, agent: AgentFolder, report: ReportFile, zone: ZoneInfo, summary: IngestSummary
) -> dict[str, Any] | None:
    """What ingestion records of one listed report file (nothing is written): the row, accepted or
    with its reason, or None when the file is gone since it was listed (a concurrent scan archived
    it) or is left for the next scan (still being written, noted in `summary.deferred`)."""
    name = report.shown  # what is recorded: the name itself, or with its non-UTF-8 bytes escaped
    try:
        data = read_report(report, ctx.settings.max_report_bytes) if report.kind == "file" else None
        problem = None if report.kind == "file" else f"is a {report.kind}, not a regular file (not read)"
    except Vanished:  # moved since listed (a concurrent scan archived it): nothing to record here
        log.info("%s/%s left log/ while being read", agent.agent_id, visible(name))
        return None
    except UnsafeFile as exc:
        data, problem = None, str(exc)
    content_hash = hashlib.sha256(data).hexdigest() if data is not None else synthetic_hash(report.kind, name)
    row: dict[str, Any] = {
        "agent_id": agent.agent_id,
        "file_name": name,
        "content_sha256": content_hash,
        "size": report.size,
        "file_mtime": datetime.fromtimestamp(report.mtime, UTC),
        "file_name_time": parsing.parse_file_name_time(name),
        "operation_end_time": None,
        "payload": None,
        "notes": [],
    }
    reason = problem or parsing.file_name_problem(name, agent.agent_id)
    if reason is None and data is not None:
        outcome = parsing.parse_report(
            data, agent_id=agent.agent_id, as_of=ctx.as_of, max_age=ctx.settings.max_report_age, agent_tz=zone
        )
        if outcome.report is not None:
            return row | {
                "accepted": True,
                "reason": None,
                "notes": list(outcome.notes),
                "payload": parsing.report_to_payload(outcome.report),
                "operation_end_time": outcome.report.operation_end_time.in_utc(zone),
            }
        reason = outcome.reason
        if _still_being_written(ctx, report, reason):
            summary.deferred.append(f"{agent.agent_id}/{name}")
            log.info(
                "left %s/%s for the next scan: %s (modified moments ago)",
                agent.agent_id,
                visible(name),
                visible(reason or ""),
            )
            return None
    return row | {"accepted": False, "reason": reason}


def _still_being_written(ctx: ScanContext, report: ReportFile, reason: str | None) -> bool:
    recent = time.time() - report.mtime < ctx.settings.settle_seconds
    return recent and reason is not None and reason.startswith(_STILL_WRITING_HINTS)
