"""Phase 2 of a scan: evaluate one batch's cycles of a day, from the recorded reports.

A batch (whole agents, see `plan`) loads its inputs in a few queries, measures the staged files it
needs in parallel, applies the pure decision rules, and writes its entries, the expected backups'
states and the alerts they raise in one transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from backup_pipeline.adapters.staged_files import StagedFileRequest, check_many, still_being_written
from backup_pipeline.config.jobs_file import to_expected_backup
from backup_pipeline.core import fingerprints, rules
from backup_pipeline.core.cycles import Cycle, cycles_on, day_bounds
from backup_pipeline.core.domain import (
    Decision,
    PreviousSuccess,
    RecordedReport,
    RejectedReport,
    StagedFileCheck,
    Step,
)
from backup_pipeline.core.text import excerpt
from backup_pipeline.scan import alert
from backup_pipeline.scan.context import ScanContext
from backup_pipeline.scan.outcomes import BatchResult, EntryOutcome
from backup_pipeline.scan.plan import AFTER, BEFORE, BatchPlan
from backup_pipeline.storage import entries, expected_backups, measurements, reports
from backup_pipeline.storage.database import Session
from backup_pipeline.storage.orm import BackupEntryRow, ExpectedBackupRow

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    backup: ExpectedBackupRow
    cycle: Cycle
    existing: BackupEntryRow | None
    report: RecordedReport | None
    rejection: RejectedReport | None
    unlisted: list[RecordedReport]
    later: list[RecordedReport]
    staged_name: str | None = None
    check: StagedFileCheck | None = None
    settling: bool = False  # the staged file is still being written: judged by a later scan
    measured_at: datetime | None = None  # when a reused measurement was taken
    stored_key: measurements.Key | None = None  # the measurement step's measurement it uses
    written: bool = False  # decided: its entry holds the measurement


def evaluate_batch(ctx: ScanContext, plan: BatchPlan) -> BatchResult:
    """Evaluate the plan's backups (in an automatic scan, those the plan found owed: all of them)."""
    result = BatchResult(
        key=plan.key,
        day=plan.day,
        backups=plan.idle_backups,
        still_open=plan.still_open,
        not_owed=plan.not_owed,
    )
    start, _ = day_bounds(plan.day)
    with ctx.database.sessions() as session:
        horizon = reports.snapshot_horizon(session)  # before any report is read
        batch = _load(session, plan)
        ids = [j.id for j in batch.backups]
        watched = sorted({j.agent_id_responsible for j in batch.backups})
        result.backups += len(ids)
        existing, cycles, pending, previous = batch.existing, batch.cycles, batch.pending, batch.previous
        _measure(ctx, session, pending, result, previous)
        sizes = alert.SizeBaseline.load(
            session,
            ctx.settings,
            {p.backup.id: p.backup for p in pending if p.check is not None}.values(),
            start,
        )
        rows, written = [], {}
        for item in pending:
            if item.settling:
                result.still_open += 1
                continue
            decision = rules.decide(
                item.cycle,
                ctx.as_of,
                report=item.report,
                rejection=item.rejection,
                check=item.check,
                previous=previous.get(item.backup.id),
                later_reports=item.later,
                unlisted_in=item.unlisted,
            )
            if decision is None:
                result.still_open += 1
                continue
            result.evaluated += 1
            values = _entry_values(ctx, item, decision)
            alert.annotate(values, item.backup, item.cycle, sizes)  # size anomaly, silence
            if decision.status.is_success:
                previous[item.backup.id] = _as_previous(values)
                sizes.record(item.backup.id, item.cycle.expected_at, values["server_calculated_staged_size"])
            changed = _differs(item.existing, values)
            item.written = True  # its entry holds the measurement, whether rewritten or unchanged
            if changed or not ctx.automatic:
                rows.append(values)
                written[(item.backup.id, item.cycle.expected_at)] = (item, values, changed)
        entry_ids = entries.upsert_entries(session, rows)
        if not ctx.automatic:  # a re-evaluation applies the current schedule: other instants are history
            scheduled = {(j.id, cycle.expected_at) for j, cycle in cycles}
            stale = [e.id for key, e in existing.items() if key not in scheduled and e.superseded_at is None]
            entries.supersede_entries(session, stale, ctx.as_of)
            result.superseded = len(stale)
        entries.refresh_backup_state(session, ids, ctx.as_of)
        # An agent with a staged file still being written is not marked: the next scan looks again
        # (otherwise nothing new would be seen before the cycle's deadline).
        settling = {item.backup.agent_id_responsible for item in pending if item.settling}
        reports.mark_watched(session, [a for a in watched if a not in settling], plan.day, horizon)
        alert.record_alerts(  # in the same transaction as the entries: no alert lost on a crash
            session,
            ctx,
            [
                alert.Written(item.backup, item.cycle, values, entry_ids[key])
                for key, (item, values, changed) in written.items()
                if changed
            ],
        )
        # The measurements of the measurement steps are in the entries now.
        measurements.forget(
            session, [item.stored_key for item in pending if item.stored_key and item.written]
        )
        session.commit()
    result.written = len(rows)
    # An explicit re-evaluation (backfill, `--partition`) reports every entry it rewrote, so the
    # assets show the run that last wrote them; an automatic scan only what changed.
    result.outcomes = [
        _outcome(entry_ids[key], item, values, changed)
        for key, (item, values, changed) in written.items()
        if changed or not ctx.automatic
    ]
    return result


@dataclass
class _Batch:
    backups: list[ExpectedBackupRow]
    existing: dict[tuple[int, datetime], BackupEntryRow]
    cycles: list[tuple[ExpectedBackupRow, Cycle]]
    pending: list[_Pending]
    previous: dict[int, PreviousSuccess]


def _load(session: Session, plan: BatchPlan) -> _Batch:
    """The plan's active backups and every cycle of the day, each backup's in order (a cycle's
    previous success and size history may be an earlier cycle of the same day, decided just before
    it), each cycle with the reports bearing on it."""
    start, end = day_bounds(plan.day)
    backups = expected_backups.active_backups(session, plan.backup_ids) if plan.backup_ids else []
    ids = [j.id for j in backups]
    existing = entries.entries_for_cycles(session, ids, start, end) if ids else {}
    cycles = [(j, cycle) for j in backups for cycle in cycles_on(to_expected_backup(j), plan.day)]
    agents = sorted({j.agent_id_responsible for j, _ in cycles})
    inputs = reports.reports_around(session, agents, start - BEFORE, end + AFTER) if agents else {}
    previous = entries.previous_successes(session, ids, start) if cycles else {}
    pending = [
        _prepare(j, cycle, existing.get((j.id, cycle.expected_at)), inputs[j.agent_id_responsible])
        for j, cycle in cycles
    ]
    return _Batch(backups, existing, cycles, pending, previous)


def _as_previous(values: dict[str, Any]) -> PreviousSuccess:
    return PreviousSuccess(
        cycle_expected_at=values["cycle_expected_at"],
        staged_hash=values["server_calculated_staged_hash"],
        content_fingerprint=values["server_content_fingerprint"],
    )


def _prepare(
    backup: ExpectedBackupRow, cycle: Cycle, existing: BackupEntryRow | None, inputs: reports.AgentReports
) -> _Pending:
    """The cycle to evaluate with the agent's reports that bear on it."""
    accepted = [r for r, _ in inputs.accepted]
    report = rules.relevant_report(cycle, accepted)
    return _Pending(
        backup=backup,
        cycle=cycle,
        existing=existing,
        report=report,
        rejection=rules.relevant_rejection(cycle, [r for r, _ in inputs.rejected])
        if report is None
        else None,
        unlisted=rules.unlisted_reports(cycle, accepted) if report is None else [],
        later=rules.later_reports(cycle, report, accepted) if report is not None else [],
    )


@dataclass(frozen=True)
class StagedFileNeed:
    """A staged file the evaluation of a cycle will have to measure (nothing stored for it yet), and
    how: the fingerprint algorithms wanted besides the current one."""

    agent_id: str
    file_name: str
    report_id: int
    claimed_sha256: str | None
    claimed_size: int | None
    also: frozenset[str]


def staged_files_to_measure(ctx: ScanContext, plan: BatchPlan) -> list[StagedFileNeed]:
    """What `evaluate_batch(ctx, plan)` would measure now, as it would ask: the staged files its
    cycles' relevant reports name that no entry or stored measurement covers."""
    with ctx.database.sessions() as session:
        batch = _load(session, plan)
        needed = _unmeasured(ctx, session, batch.pending, batch.previous)
    return [
        StagedFileNeed(
            agent_id=item.backup.agent_id_responsible,
            file_name=request.file_name,
            report_id=item.report.ref.report_id,
            claimed_sha256=claim.sha256 if (claim := _claimed(item)) else None,
            claimed_size=request.expected_size,
            also=request.also,
        )
        for item in needed
        if item.report is not None and (request := _request(ctx, item, batch.previous.get(item.backup.id)))
    ]


def _measure(
    ctx: ScanContext,
    session: Session,
    pending: Sequence[_Pending],
    result: BatchResult,
    previous: dict[int, PreviousSuccess],
) -> None:
    """Reuse each cycle's stored measurement; measure (in parallel) only what was never measured,
    also in the algorithm of the previous success's fingerprint when it is not the current one."""
    to_measure = _unmeasured(ctx, session, pending, previous)
    checks = check_many(
        [_request(ctx, item, previous.get(item.backup.id)) for item in to_measure],
        workers=ctx.settings.hash_workers,
        verify_archive=ctx.settings.verify_archives,
        limits=ctx.expansion_limits,
    )
    for item, check in zip(to_measure, checks, strict=True):
        result.measured_files += 1
        result.measured_bytes += check.size or 0
        claim = _claimed(item)
        if claim and still_being_written(check, claim.sha256, claim.size, ctx.settings.settle_seconds):
            item.settling = True  # nothing stored: the next scan measures it again
            continue
        item.check = check


def _unmeasured(
    ctx: ScanContext, session: Session, pending: Sequence[_Pending], previous: dict[int, PreviousSuccess]
) -> list[_Pending]:
    """Name each cycle's staged file and take its measurement from its entry, or from the measurement
    steps when they measured it as this evaluation would; the cycles whose file must be measured now."""
    to_measure: list[_Pending] = []
    for item in pending:
        if item.report is None:
            continue
        database = item.report.report.databases[item.backup.database_name]
        if not rules.needs_staged_file(database):
            continue
        item.staged_name = rules.staged_file_name(item.cycle, database)
        if item.staged_name is None:
            # Not a name a file can have (a path's separators only, control characters, more than
            # 255 bytes): it is never looked for, and quoted in the reason visibly and bounded.
            raw = database.staged_file_name
            named = f"'{excerpt(raw, 80)}'" if raw is not None else "None"
            item.check = StagedFileCheck(
                file_name="", problem=f"the report names no usable staged file ({named})"
            )
        elif (stored := _stored_check(ctx, item)) is not None:
            item.check, item.measured_at = stored, item.existing.measured_at if item.existing else None
        else:
            to_measure.append(item)
    # A re-hash reuses only what this run's own measurement steps measured.
    keys = {(item.report.ref.report_id, item.staged_name or ""): item for item in to_measure if item.report}
    found = measurements.stored(session, keys, run_id=ctx.run_id if ctx.rehash else None)
    for key, (check, measured_at, also) in found.items():
        item = keys[key]
        if also == _request(ctx, item, previous.get(item.backup.id)).also:
            item.check, item.measured_at, item.stored_key = check, measured_at, key
    return [item for item in to_measure if item.check is None]


def _request(ctx: ScanContext, item: _Pending, previous: PreviousSuccess | None) -> StagedFileRequest:
    claim = _claimed(item)
    return StagedFileRequest(
        ctx.settings.storage_root / item.backup.agent_id_responsible,
        item.staged_name or "",
        also=fingerprints.wanted_with(
            previous.content_fingerprint if previous else None, fingerprints.CONTENT
        ),
        expected_size=claim.size if claim else None,
    )


def _claimed(item: _Pending) -> Any:
    """The agent's COMPRESS step for this database: the staged file's claimed hash and size."""
    assert item.report is not None
    return item.report.report.databases[item.backup.database_name].step(Step.COMPRESS)


def _stored_check(ctx: ScanContext, item: _Pending) -> StagedFileCheck | None:
    entry = item.existing
    if (
        ctx.rehash
        or entry is None
        or entry.measured_at is None
        or item.report is None
        or entry.report_id != item.report.ref.report_id
        or entry.staged_file_name != item.staged_name
    ):
        return None
    return StagedFileCheck(
        file_name=entry.staged_file_name or "",
        problem=entry.server_check_problem,
        sha256=entry.server_calculated_staged_hash,
        size=entry.server_calculated_staged_size,
        content_fingerprint=entry.server_content_fingerprint,
        archive_problem=entry.server_archive_problem,
    )


def _utc(item: _Pending, value: Any) -> datetime | None:
    return value.in_utc(item.cycle.backup.timezone) if value is not None else None


def _entry_values(ctx: ScanContext, item: _Pending, decision: Decision) -> dict[str, Any]:
    database = decision.database
    check = decision.check
    report = decision.report
    measured_at = item.measured_at or ctx.as_of
    previous = decision.previous
    return {
        "job_id": item.backup.id,
        "cycle_expected_at": item.cycle.expected_at,
        "status": decision.status.value,
        "message": decision.message,
        "report_id": report.ref.report_id if report else None,
        "report_file": report.ref.file_name if report else None,
        "agent_operation_end_time": _utc(item, report.report.operation_end_time) if report else None,
        **{column: value for step in Step for column, value in _step_values(item, database, step)},
        "agent_staged_file_name": database.staged_file_name if database else None,
        "agent_logs_summary": database.logs_summary if database else None,
        "staged_file_name": (check.file_name or None) if check else None,
        "server_calculated_staged_hash": check.sha256 if check else None,
        "server_calculated_staged_size": check.size if check else None,
        "server_content_fingerprint": check.content_fingerprint if check else None,
        "server_check_problem": check.problem if check else None,
        "server_archive_problem": check.archive_problem if check else None,
        "measured_at": measured_at if check else None,
        "previous_successful_hash_used": previous.staged_hash if previous else None,
        "previous_successful_fingerprint_used": previous.content_fingerprint if previous else None,
        "previous_success_cycle": previous.cycle_expected_at if previous else None,
        "dagster_run_id": ctx.run_id,
        "evaluated_at": ctx.as_of,
    }


# What an entry keeps of each step the agent reported, besides its status and times.
_STEP_DETAILS = {
    Step.BACKUP: {"hash_pre_compress": "sha256", "size_pre_compress": "size"},
    Step.COMPRESS: {"hash_post_compress": "sha256", "size_post_compress": "size"},
    Step.TRANSFER: {"error_message": "error_message"},
}


def _step_values(item: _Pending, database: Any, step: Step) -> list[tuple[str, Any]]:
    """The `agent_<step>_…` columns of an entry (all None when the step was not reported)."""
    reported = database.step(step) if database else None
    prefix = f"agent_{step.value.lower()}"
    values = [
        (f"{prefix}_status", reported.status if reported else None),
        (f"{prefix}_start_time", _utc(item, reported.start_time) if reported else None),
        (f"{prefix}_end_time", _utc(item, reported.end_time) if reported else None),
    ]
    values += [
        (f"{prefix}_{column}", getattr(reported, field) if reported else None)
        for column, field in _STEP_DETAILS[step].items()
    ]
    return values


_COMPARED = (
    "status",
    "message",
    "report_id",
    "server_calculated_staged_hash",
    "server_calculated_staged_size",
)


def _differs(existing: BackupEntryRow | None, values: dict[str, Any]) -> bool:
    if existing is None or existing.superseded_at is not None:  # back in the schedule: it counts again
        return True
    return any(getattr(existing, c) != values[c] for c in _COMPARED)


def _outcome(entry_id: int, item: _Pending, values: dict[str, Any], changed: bool) -> EntryOutcome:
    return EntryOutcome(
        entry_id=entry_id,
        backup_id=item.backup.id,
        agent_id=item.backup.agent_id_responsible,
        database_name=item.backup.database_name,
        backup_name=item.backup.name,
        schedule=item.cycle.backup.schedule.text,
        cycle_expected_at=item.cycle.expected_at.astimezone(UTC),
        status=values["status"],
        message=values["message"],
        report_file=values["report_file"],
        server_hash=values["server_calculated_staged_hash"],
        server_size=values["server_calculated_staged_size"],
        agent_hash=values["agent_compress_hash_post_compress"],
        agent_size=values["agent_compress_size_post_compress"],
        changed=changed,
        **{c: values.get(c) for c in alert.SIZE_COLUMNS},
    )
