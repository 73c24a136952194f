"""Phase 2 of a scan: evaluate every active job's cycle of one day, from the recorded reports.

Work is split in batches of whole agents (never one Dagster step per database). A batch loads its
inputs in a few queries, measures the staged files it needs in parallel, applies the pure decision
rules and writes its entries and job states in one transaction.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from backup_pipeline import alerting
from backup_pipeline.core import rules
from backup_pipeline.core.cycles import Cycle, day_bounds
from backup_pipeline.core.domain import (
    Decision,
    ExpectedJob,
    RecordedReport,
    RejectedReport,
    ReportTime,
    StagedFileCheck,
    Step,
)
from backup_pipeline.jobs_file import to_domain_job
from backup_pipeline.scan_context import ScanContext, Summary
from backup_pipeline.staged_files import StagedFileRequest, check_many, still_being_written
from backup_pipeline.storage import repository
from backup_pipeline.storage.orm import BackupEntryRow, ExpectedJobRow

log = logging.getLogger(__name__)

# Reports are fetched with room for the widest window (12 h) and any agent time zone (±14 h),
# plus the next day's reports, which tell whether a later cycle overwrote the staged file.
_BEFORE = timedelta(hours=12 + 14)
_AFTER = timedelta(days=1, hours=12 + 14)


class BatchPlan(Summary):
    key: str  # a Dagster mapping key: [A-Za-z0-9_]
    day: date
    job_ids: list[int]
    agents: list[str]
    evaluated_at: str | None = None  # the run's "now", fixed when the run started
    # Automatic scans: the jobs looked at by the plan and found with nothing owed, counted once
    # (on the first batch) so that the run's totals stay whole.
    idle_jobs: int = 0
    still_open: int = 0
    not_owed: int = 0


class EntryOutcome(Summary):
    entry_id: int
    job_id: int
    agent_id: str
    database_name: str
    cycle_expected_at: datetime
    status: str
    message: str
    report_file: str | None
    server_hash: str | None
    server_size: int | None
    agent_hash: str | None
    agent_size: int | None
    changed: bool
    # The staged size against the job's trailing median (set after successful cycles with history).
    size_anomaly: str | None = None
    size_median: float | None = None
    size_ratio: float | None = None
    size_history: int | None = None


class BatchResult(Summary):
    key: str
    day: date
    jobs: int = 0
    evaluated: int = 0
    written: int = 0
    still_open: int = 0  # cycles before their deadline with nothing to judge yet
    not_owed: int = 0  # automatic scans: cycles due before the job existed
    measured_files: int = 0
    measured_bytes: int = 0
    # Created or changed entries; in an explicit re-evaluation, every entry written (`changed` tells).
    outcomes: list[EntryOutcome] = []

    @property
    def changed(self) -> list[EntryOutcome]:
        return [o for o in self.outcomes if o.changed]


def plan_batches(ctx: ScanContext, day: date) -> list[BatchPlan]:
    """Whole agents spread over at most `max_batches` batches of similar job counts.

    An automatic scan first decides which jobs have work (a light projection of jobs and entries,
    no report loaded): only those are batched, so an idle scan runs a single, empty batch.
    """
    with ctx.database.sessions() as session:
        jobs = repository.active_job_agents(session)
    idle = BatchResult(key="", day=day)
    if ctx.automatic:
        owed = set(owed_jobs(ctx, day, idle))
        jobs = [(job_id, agent) for job_id, agent in jobs if job_id in owed]
    plans = _spread(jobs, day, ctx.settings.max_batches)
    if not plans:
        plans = [BatchPlan(key="nothing_owed", day=day, job_ids=[], agents=[])]
    plans[0] = plans[0].model_copy(
        update={"idle_jobs": idle.jobs, "still_open": idle.still_open, "not_owed": idle.not_owed}
    )
    return plans


def _spread(jobs: list[tuple[int, str]], day: date, max_batches: int) -> list[BatchPlan]:
    per_agent: dict[str, list[int]] = defaultdict(list)
    for job_id, agent in jobs:
        per_agent[agent].append(job_id)
    count = min(len(per_agent), max_batches)
    bins: list[tuple[list[str], list[int]]] = [([], []) for _ in range(count)]
    for agent in sorted(per_agent, key=lambda a: (-len(per_agent[a]), a)):
        agents, ids = min(bins, key=lambda b: len(b[1]))
        agents.append(agent)
        ids.extend(per_agent[agent])
    return [
        BatchPlan(key=_key(agents, i), day=day, job_ids=sorted(ids), agents=sorted(agents))
        for i, (agents, ids) in enumerate(bins)
    ]


def owed_jobs(ctx: ScanContext, day: date, idle: BatchResult) -> list[int]:
    """The active jobs whose cycle of `day` an automatic scan has work for (see `_owed`); the others
    are counted in `idle`."""
    start, end = day_bounds(day)
    with ctx.database.sessions() as session:
        horizon = repository.snapshot_horizon(session)  # before any report is read
        timings = repository.job_timings(session)
        watched = sorted({t.agent_id_responsible for t in timings})
        stamps = repository.entry_stamps(session, None, start, end)
        activity = repository.latest_recording(session, watched, start - _BEFORE, end + _AFTER)
        seen = repository.watch_marks(session, watched, day)
        active = [a for a, xid in activity.items() if _unseen(xid, seen.get(a))]
        fresh = _FreshEnds(
            repository.accepted_report_ends(session, active, start - _BEFORE, end + _AFTER) if active else [],
            seen,
        )
    owed = [
        t.id
        for t in timings
        if _owed(ctx, t, _timing_cycle(t, start), t.id in stamps, activity, seen, fresh, idle)
    ]
    idle.jobs = len(timings) - len(owed)
    # Agents with unseen reports but nothing owed were looked at in full: mark them, or every scan
    # of the day would fetch their report end times again (their batches mark the others).
    owed_ids = set(owed)
    owed_agents = {t.agent_id_responsible for t in timings if t.id in owed_ids}
    looked_at = [a for a in active if a not in owed_agents]
    if looked_at:
        with ctx.database.sessions() as session:
            repository.mark_watched(session, looked_at, day, horizon)
            session.commit()
    return owed


class _FreshEnds:
    """When the accepted reports recorded for each agent since a scan last looked at its cycles of
    the day ended, read in a job's time zone as the rules read them (naive agent times)."""

    def __init__(self, rows: Sequence[tuple[str, str, int]], seen: dict[str, int]) -> None:
        self._times: dict[str, list[ReportTime]] = defaultdict(list)
        for agent, end_time, recorded_xid in rows:
            if _unseen(recorded_xid, seen.get(agent)):
                self._times[agent].append(ReportTime.from_json(end_time))
        self._sorted: dict[tuple[str, str], list[datetime]] = {}

    def ended_within(self, cycle: Cycle) -> bool:
        """Whether one of them ended inside the cycle's window: only such a report can decide a
        cycle before its deadline (rules.decide)."""
        zone = cycle.job.timezone
        key = (cycle.job.agent_id, str(zone))
        if key not in self._sorted:
            self._sorted[key] = sorted(t.in_utc(zone) for t in self._times.get(cycle.job.agent_id, ()))
        ends = self._sorted[key]
        first = bisect_left(ends, cycle.opens_at)
        return first < len(ends) and ends[first] <= cycle.deadline


def _key(agents: list[str], index: int) -> str:
    if len(agents) == 1:
        return "".join(c if c.isalnum() or c == "_" else "_" for c in agents[0])
    return f"batch_{index + 1:03d}"


@dataclass
class _Pending:
    job: ExpectedJobRow
    cycle: Cycle
    existing: BackupEntryRow | None
    report: RecordedReport | None
    rejection: RejectedReport | None
    unlisted: list[RecordedReport]
    later: list[RecordedReport]
    staged_name: str | None = None
    check: StagedFileCheck | None = None
    check_reused: bool = False
    settling: bool = False  # the staged file is still being written: judged by a later scan


def evaluate_batch(ctx: ScanContext, plan: BatchPlan) -> BatchResult:
    """Evaluate the plan's jobs (in an automatic scan, those the plan found owed: all of them)."""
    result = BatchResult(
        key=plan.key, day=plan.day, jobs=plan.idle_jobs, still_open=plan.still_open, not_owed=plan.not_owed
    )
    start, end = day_bounds(plan.day)
    with ctx.database.sessions() as session:
        horizon = repository.snapshot_horizon(session)  # before any report is read
        jobs = repository.active_jobs(session, plan.job_ids) if plan.job_ids else []
        ids = [j.id for j in jobs]
        watched = sorted({j.agent_id_responsible for j in jobs})
        existing = repository.entries_for_cycles(session, ids, start, end) if ids else {}
        result.jobs += len(ids)
        cycles = {j.id: Cycle(job=to_domain_job(j), expected_at=start + _time_of(j)) for j in jobs}
        todo = jobs
        agents = sorted({j.agent_id_responsible for j in todo})
        inputs = repository.reports_around(session, agents, start - _BEFORE, end + _AFTER) if agents else {}
        previous = repository.previous_successes(session, [j.id for j in todo], start) if todo else {}
        pending = [
            _prepare(j, cycles[j.id], existing.get(j.id), inputs[j.agent_id_responsible]) for j in todo
        ]
        _measure(ctx, pending, result)
        sizes = alerting.SizeBaseline.load(
            session, ctx.settings, [p.job for p in pending if p.check is not None], start
        )
        rows, outcomes_by_job = [], {}
        for item in pending:
            if item.settling:
                result.still_open += 1
                continue
            decision = rules.decide(
                item.cycle,
                ctx.now,
                report=item.report,
                rejection=item.rejection,
                check=item.check,
                previous=previous.get(item.job.id),
                later_reports=item.later,
                unlisted_in=item.unlisted,
            )
            if decision is None:
                result.still_open += 1
                continue
            result.evaluated += 1
            values = _entry_values(ctx, item, decision)
            alerting.annotate(values, item.job, item.cycle, sizes)  # size anomaly, silence
            changed = _differs(item.existing, values)
            if changed or not ctx.automatic:
                rows.append(values)
                outcomes_by_job[item.job.id] = (item, values, changed)
        entry_ids = repository.upsert_entries(session, rows)
        repository.refresh_job_state(session, ids, ctx.now)
        # An agent with a staged file still being written is not marked: the next scan looks again
        # (otherwise nothing new would be seen before the cycle's deadline).
        settling = {item.job.agent_id_responsible for item in pending if item.settling}
        repository.mark_watched(session, [a for a in watched if a not in settling], plan.day, horizon)
        alerting.record_alerts(  # in the same transaction as the entries: no alert lost on a crash
            session,
            ctx,
            [
                alerting.Written(item.job, item.cycle, values, entry_ids[job_id])
                for job_id, (item, values, changed) in outcomes_by_job.items()
                if changed
            ],
        )
        session.commit()
    result.written = len(rows)
    # An explicit re-evaluation (backfill, `--partition`) reports every entry it rewrote, so the
    # assets show the run that last wrote them; an automatic scan only what changed.
    result.outcomes = [
        _outcome(entry_ids[job_id], item, values, changed)
        for job_id, (item, values, changed) in outcomes_by_job.items()
        if changed or not ctx.automatic
    ]
    return result


def _timing_cycle(timing: Any, day_start: datetime) -> Cycle:
    """The cycle of a job known only by its timing columns (enough for deadlines and windows)."""
    job = ExpectedJob(
        agent_id=timing.agent_id_responsible,
        database_name=timing.database_name,
        expected_hour_utc=timing.expected_hour_utc,
        expected_minute_utc=timing.expected_minute_utc,
        window_minutes=timing.window_minutes,
        timezone=ZoneInfo(timing.timezone),
    )
    return Cycle(job=job, expected_at=day_start + _time_of(timing))


def _owed(
    ctx: ScanContext,
    job: Any,
    cycle: Cycle,
    has_entry: bool,
    activity: dict[str, int],
    seen: dict[str, int],
    fresh: _FreshEnds,
    result: BatchResult,
) -> bool:
    """Whether an automatic scan has work for this cycle; skipping it must not change any outcome.

    Work means: a cycle owed since the job exists that has no entry and is past its deadline; or
    has no entry and a report the last scan of the agent's day may not have seen that ended inside
    its window (nothing else decides a cycle before its deadline); or has an entry and its agent
    has a report around the day that the last scan of that day may not have seen. "May not have
    seen" compares the report's recording transaction with that scan's snapshot horizon, so a
    report committed by a concurrent scan while this one evaluated is never taken for seen.
    Everything else is idle: a scan with nothing new loads no report at all, and the first scan of
    a new day loads only the end times of yesterday's late reports.
    """
    if cycle.deadline < job.created_at:
        result.not_owed += 1
        return False
    latest = activity.get(job.agent_id_responsible)
    new_report = latest is not None and _unseen(latest, seen.get(job.agent_id_responsible))
    if has_entry:
        return new_report
    if cycle.is_due(ctx.now) or (new_report and fresh.ended_within(cycle)):
        return True
    result.still_open += 1
    return False


def _unseen(recorded_xid: int, visible_below: int | None) -> bool:
    """Whether a report may have escaped the last scan that looked at the agent's day."""
    return visible_below is None or recorded_xid >= visible_below


def _prepare(
    job: ExpectedJobRow, cycle: Cycle, existing: BackupEntryRow | None, inputs: repository.AgentReports
) -> _Pending:
    """The cycle to evaluate with the agent's reports that bear on it."""
    accepted = [r for r, _ in inputs.accepted]
    report = rules.relevant_report(cycle, accepted)
    return _Pending(
        job=job,
        cycle=cycle,
        existing=existing,
        report=report,
        rejection=rules.relevant_rejection(cycle, [r for r, _ in inputs.rejected])
        if report is None
        else None,
        unlisted=rules.unlisted_reports(cycle, accepted) if report is None else [],
        later=rules.later_reports(cycle, report, accepted) if report is not None else [],
    )


def _time_of(job: Any) -> timedelta:
    return timedelta(hours=job.expected_hour_utc, minutes=job.expected_minute_utc)


def _measure(ctx: ScanContext, pending: Sequence[_Pending], result: BatchResult) -> None:
    """Reuse each cycle's stored measurement; measure (in parallel) only what was never measured."""
    to_measure: list[_Pending] = []
    for item in pending:
        if item.report is None:
            continue
        database = item.report.report.databases[item.job.database_name]
        if not rules.needs_staged_file(database):
            continue
        item.staged_name = rules.staged_file_name(item.cycle, database)
        if item.staged_name is None:
            item.check = StagedFileCheck(
                file_name=database.staged_file_name or "",
                problem=f"the report names no usable staged file ({database.staged_file_name!r})",
            )
        elif (stored := _stored_check(ctx, item)) is not None:
            item.check, item.check_reused = stored, True
        else:
            to_measure.append(item)
    requests = [
        StagedFileRequest(ctx.settings.storage_root / item.job.agent_id_responsible, item.staged_name or "")
        for item in to_measure
    ]
    checks = check_many(
        requests, workers=ctx.settings.hash_workers, verify_archive=ctx.settings.verify_archives
    )
    for item, check in zip(to_measure, checks, strict=True):
        result.measured_files += 1
        result.measured_bytes += check.size or 0
        assert item.report is not None
        claim = item.report.report.databases[item.job.database_name].step(Step.COMPRESS)
        if claim and still_being_written(check, claim.sha256, claim.size, ctx.settings.settle_seconds):
            item.settling = True  # nothing stored: the next scan measures it again
            continue
        item.check = check


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
    return value.in_utc(item.cycle.job.timezone) if value is not None else None


def _entry_values(ctx: ScanContext, item: _Pending, decision: Decision) -> dict[str, Any]:
    database = decision.database
    step = database.step if database else (lambda _s: None)
    backup, compress, transfer = step(Step.BACKUP), step(Step.COMPRESS), step(Step.TRANSFER)
    check = decision.check
    report = decision.report
    measured_at = item.existing.measured_at if item.check_reused and item.existing else ctx.now
    return {
        "job_id": item.job.id,
        "cycle_expected_at": item.cycle.expected_at,
        "status": decision.status.value,
        "message": decision.message,
        "report_id": report.ref.report_id if report else None,
        "report_file": report.ref.file_name if report else None,
        "agent_operation_end_time": _utc(item, report.report.operation_end_time) if report else None,
        "agent_backup_status": backup.status if backup else None,
        "agent_backup_start_time": _utc(item, backup.start_time) if backup else None,
        "agent_backup_end_time": _utc(item, backup.end_time) if backup else None,
        "agent_backup_hash_pre_compress": backup.sha256 if backup else None,
        "agent_backup_size_pre_compress": backup.size if backup else None,
        "agent_compress_status": compress.status if compress else None,
        "agent_compress_start_time": _utc(item, compress.start_time) if compress else None,
        "agent_compress_end_time": _utc(item, compress.end_time) if compress else None,
        "agent_compress_hash_post_compress": compress.sha256 if compress else None,
        "agent_compress_size_post_compress": compress.size if compress else None,
        "agent_transfer_status": transfer.status if transfer else None,
        "agent_transfer_start_time": _utc(item, transfer.start_time) if transfer else None,
        "agent_transfer_end_time": _utc(item, transfer.end_time) if transfer else None,
        "agent_transfer_error_message": transfer.error_message if transfer else None,
        "agent_staged_file_name": database.staged_file_name if database else None,
        "agent_logs_summary": database.logs_summary if database else None,
        "staged_file_name": check.file_name if check else None,
        "server_calculated_staged_hash": check.sha256 if check else None,
        "server_calculated_staged_size": check.size if check else None,
        "server_content_fingerprint": check.content_fingerprint if check else None,
        "server_check_problem": check.problem if check else None,
        "server_archive_problem": check.archive_problem if check else None,
        "measured_at": measured_at if check else None,
        "previous_successful_hash_used": decision.previous.staged_hash if decision.previous else None,
        "previous_successful_fingerprint_used": (
            decision.previous.content_fingerprint if decision.previous else None
        ),
        "previous_success_cycle": decision.previous.cycle_expected_at if decision.previous else None,
        "dagster_run_id": ctx.run_id,
        "evaluated_at": ctx.now,
    }


_COMPARED = (
    "status",
    "message",
    "report_id",
    "server_calculated_staged_hash",
    "server_calculated_staged_size",
)


def _differs(existing: BackupEntryRow | None, values: dict[str, Any]) -> bool:
    return existing is None or any(getattr(existing, c) != values[c] for c in _COMPARED)


def _outcome(entry_id: int, item: _Pending, values: dict[str, Any], changed: bool) -> EntryOutcome:
    return EntryOutcome(
        entry_id=entry_id,
        job_id=item.job.id,
        agent_id=item.job.agent_id_responsible,
        database_name=item.job.database_name,
        cycle_expected_at=item.cycle.expected_at.astimezone(UTC),
        status=values["status"],
        message=values["message"],
        report_file=values["report_file"],
        server_hash=values["server_calculated_staged_hash"],
        server_size=values["server_calculated_staged_size"],
        agent_hash=values["agent_compress_hash_post_compress"],
        agent_size=values["agent_compress_size_post_compress"],
        changed=changed,
        **{c: values.get(c) for c in alerting.SIZE_COLUMNS},
    )


class AgentDay(Summary):
    """All of one agent's entries for a day, for the agent-level asset of large fleets."""

    agent_id: str
    day: date
    statuses: dict[str, int]
    problems: list[str]
    total_size: int
    entries: int
    anomalies: list[str] = []  # size anomalies of successful cycles


def agent_days(ctx: ScanContext, agents: Sequence[str], day: date) -> list[AgentDay]:
    start, end = day_bounds(day)
    with ctx.database.sessions() as session:
        rows = repository.day_entries_of_agents(session, agents, start, end)
    summaries: dict[str, AgentDay] = {}
    for entry, job in rows:
        summary = summaries.setdefault(
            job.agent_id_responsible,
            AgentDay(
                agent_id=job.agent_id_responsible, day=day, statuses={}, problems=[], total_size=0, entries=0
            ),
        )
        summary.entries += 1
        summary.statuses[entry.status] = summary.statuses.get(entry.status, 0) + 1
        summary.total_size += entry.server_calculated_staged_size or 0
        if entry.status not in ("SUCCESS", "HASH_MISMATCH"):
            summary.problems.append(
                f"{job.database_name} {entry.cycle_expected_at:%H:%MZ} {entry.status}: {entry.message}"
            )
        elif entry.size_anomaly:
            summary.anomalies.append(
                f"{job.database_name} {entry.cycle_expected_at:%H:%MZ} {entry.size_anomaly}: "
                f"{entry.server_calculated_staged_size} bytes, median {entry.size_median:.0f}"
            )
    return [summaries[a] for a in sorted(summaries)]
