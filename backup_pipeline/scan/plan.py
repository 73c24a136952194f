"""Planning a scan's day: which expected backups have work, split into batches of whole agents.

An automatic scan first decides from a light projection of expected backups and entries (no report
loaded) which cycles have work, and batches only their agents; an idle scan runs one empty batch.
An explicit re-evaluation (backfill, `--partition`) batches every active expected backup.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

from backup_pipeline.config.jobs_file import to_expected_backup
from backup_pipeline.core.cycles import REPORT_REACH, Cycle, cycles_on, day_bounds
from backup_pipeline.core.domain import ReportTime
from backup_pipeline.scan.context import ScanContext, ScanRequest, Summary
from backup_pipeline.scan.outcomes import BatchResult
from backup_pipeline.storage import entries, expected_backups, reports

# Reports bearing on a day's cycles ended within REPORT_REACH of it; the next day's reports also
# tell whether a later cycle overwrote the staged file.
BEFORE = REPORT_REACH
AFTER = timedelta(days=1) + REPORT_REACH


class BatchPlan(Summary):
    key: str  # a Dagster mapping key: [A-Za-z0-9_]
    day: date
    backup_ids: list[int]
    agents: list[str]
    request: ScanRequest  # the run's, passed on to the batch's step
    # Automatic scans: the backups looked at by the plan and found with nothing owed, counted once
    # (on the first batch) so that the run's totals stay whole.
    idle_backups: int = 0
    still_open: int = 0
    not_owed: int = 0


def plan_batches(ctx: ScanContext, day: date) -> list[BatchPlan]:
    """Whole agents spread over at most `max_batches` batches of similar backup counts.

    An automatic scan first decides which backups have work (a light projection of backups and entries,
    no report loaded): only those are batched, so an idle scan runs a single, empty batch.
    """
    with ctx.database.sessions() as session:
        backups = expected_backups.active_backup_agents(session)
    idle = BatchResult(key="", day=day)
    if ctx.automatic:
        owed = set(owed_backups(ctx, day, idle))
        backups = [(backup_id, agent) for backup_id, agent in backups if backup_id in owed]
    plans = _spread(backups, day, ctx.request, ctx.settings.max_batches)
    if not plans:
        plans = [BatchPlan(key="nothing_owed", day=day, backup_ids=[], agents=[], request=ctx.request)]
    plans[0] = plans[0].model_copy(
        update={"idle_backups": idle.backups, "still_open": idle.still_open, "not_owed": idle.not_owed}
    )
    return plans


def _spread(
    backups: list[tuple[int, str]], day: date, request: ScanRequest, max_batches: int
) -> list[BatchPlan]:
    per_agent: dict[str, list[int]] = defaultdict(list)
    for backup_id, agent in backups:
        per_agent[agent].append(backup_id)
    count = min(len(per_agent), max_batches)
    bins: list[tuple[list[str], list[int]]] = [([], []) for _ in range(count)]
    for agent in sorted(per_agent, key=lambda a: (-len(per_agent[a]), a)):
        agents, ids = min(bins, key=lambda b: len(b[1]))
        agents.append(agent)
        ids.extend(per_agent[agent])
    return [
        BatchPlan(
            key=_key(agents, i), day=day, backup_ids=sorted(ids), agents=sorted(agents), request=request
        )
        for i, (agents, ids) in enumerate(bins)
    ]


def owed_backups(ctx: ScanContext, day: date, idle: BatchResult) -> list[int]:
    """The active backups with a cycle of `day` an automatic scan has work for (see `_verdict`); the
    others (a weekly backup on most days has no cycle at all) are counted in `idle`."""
    start, end = day_bounds(day)
    with ctx.database.sessions() as session:
        horizon = reports.snapshot_horizon(session)  # before any report is read
        timings = expected_backups.backup_timings(session)
        watched = sorted({t.agent_id for t in timings})
        stamps = entries.entry_stamps(session, None, start, end)
        activity = reports.latest_recording(session, watched, start - BEFORE, end + AFTER)
        seen = reports.watch_marks(session, watched, day)
        active = [a for a, xid in activity.items() if _unseen(xid, seen.get(a))]
        fresh = _FreshEnds(
            reports.accepted_report_ends(session, active, start - BEFORE, end + AFTER) if active else [],
            seen,
        )
    owed = []
    for timing in timings:
        backup = to_expected_backup(timing)
        verdicts = [
            _verdict(ctx, timing, cycle, (timing.id, cycle.expected_at) in stamps, activity, seen, fresh)
            for cycle in cycles_on(backup, day)
        ]
        if _OWED in verdicts:
            owed.append(timing.id)
        else:  # counted here; an owed backup's cycles are counted by its batch
            idle.still_open += verdicts.count(_STILL_OPEN)
            idle.not_owed += verdicts.count(_NOT_OWED)
    idle.backups = len(timings) - len(owed)
    # Agents with unseen reports but nothing owed were looked at in full: mark them, or every scan
    # of the day would fetch their report end times again (their batches mark the others).
    owed_ids = set(owed)
    owed_agents = {t.agent_id for t in timings if t.id in owed_ids}
    looked_at = [a for a in active if a not in owed_agents]
    if looked_at:
        with ctx.database.sessions() as session:
            reports.mark_watched(session, looked_at, day, horizon)
            session.commit()
    return owed


class _FreshEnds:
    """When the accepted reports recorded for each agent since a scan last looked at its cycles of
    the day ended, read in a backup's time zone as the rules read them (naive agent times)."""

    def __init__(self, rows: Sequence[tuple[str, str, int]], seen: dict[str, int]) -> None:
        self._times: dict[str, list[ReportTime]] = defaultdict(list)
        for agent, end_time, recorded_xid in rows:
            if _unseen(recorded_xid, seen.get(agent)):
                self._times[agent].append(ReportTime.from_json(end_time))
        self._sorted: dict[tuple[str, str], list[datetime]] = {}

    def ended_within(self, cycle: Cycle) -> bool:
        """Whether one of them ended inside the cycle's window: only such a report can decide a
        cycle before its deadline (rules.decide)."""
        zone = cycle.backup.timezone
        key = (cycle.backup.agent_id, str(zone))
        if key not in self._sorted:
            self._sorted[key] = sorted(t.in_utc(zone) for t in self._times.get(cycle.backup.agent_id, ()))
        ends = self._sorted[key]
        first = bisect_left(ends, cycle.opens_at)
        return first < len(ends) and ends[first] <= cycle.deadline


def _key(agents: list[str], index: int) -> str:
    if len(agents) == 1:
        return "".join(c if c.isalnum() or c == "_" else "_" for c in agents[0])
    return f"batch_{index + 1:03d}"


_OWED, _STILL_OPEN, _NOT_OWED, _IDLE = "owed", "still open", "not owed", "idle"


def _verdict(
    ctx: ScanContext,
    backup: Any,
    cycle: Cycle,
    has_entry: bool,
    activity: dict[str, int],
    seen: dict[str, int],
    fresh: _FreshEnds,
) -> str:
    """Whether an automatic scan has work for this cycle; skipping it must not change any outcome.

    Work means: a cycle owed since the backup exists that has no entry and is past its deadline; or
    has no entry and a report the last scan of the agent's day may not have seen that ended inside
    its window (nothing else decides a cycle before its deadline); or has an entry and its agent
    has a report around the day that the last scan of that day may not have seen. "May not have
    seen" compares the report's recording transaction with that scan's snapshot horizon, so a
    report committed by a concurrent scan while this one evaluated is never taken for seen.
    Everything else is idle: a scan with nothing new loads no report at all, and the first scan of
    a new day loads only the end times of yesterday's late reports.
    """
    if cycle.deadline < backup.created_at:
        return _NOT_OWED
    latest = activity.get(backup.agent_id)
    new_report = latest is not None and _unseen(latest, seen.get(backup.agent_id))
    if has_entry:
        return _OWED if new_report else _IDLE
    if cycle.is_due(ctx.as_of) or (new_report and fresh.ended_within(cycle)):
        return _OWED
    return _STILL_OPEN


def _unseen(recorded_xid: int, visible_below: int | None) -> bool:
    """Whether a report may have escaped the last scan that looked at the agent's day."""
    return visible_below is None or recorded_xid >= visible_below
