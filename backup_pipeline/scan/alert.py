"""What evaluation adds for alerts: size anomalies, silences, and the alerts to notify.

Called by `evaluate.evaluate_batch` inside its transaction, so an entry and the alerts it raises
are committed together (a transactional outbox): a crash after the commit loses no alert, since the
scan's `notify` step (or the next scan's) sends whatever is recorded and not yet dispatched.

- Size anomalies: after each successful cycle, the staged size is compared with the median of the
  backup's last N successful cycles *before* it (over the stored history), so re-evaluating a
  past day during a backfill gives the same answer whatever was evaluated since.
- Silences: a MISSING whose deadline falls in a maintenance window names it in its message; every
  alert of a silenced cycle is recorded as held and never sent.
- Alerts: one per (backup, cycle, event) for created or changed entries, plus RECOVERED when a
  successful cycle ends a problem that was notified.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from statistics import median
from typing import Any

from backup_pipeline.config.jobs_file import BackupAlerting
from backup_pipeline.config.settings import Settings
from backup_pipeline.core import alerts
from backup_pipeline.core.alerts import AlertEvent, SizeAssessment, SizePolicy
from backup_pipeline.core.cycles import Cycle
from backup_pipeline.core.domain import SUCCESS_STATUSES, EntryStatus
from backup_pipeline.scan.context import ScanContext
from backup_pipeline.storage import alerts as stored_alerts
from backup_pipeline.storage.database import Session
from backup_pipeline.storage.orm import ExpectedBackupRow

SIZE_COLUMNS = ("size_anomaly", "size_median", "size_ratio", "size_history")


def environment_policy(settings: Settings) -> SizePolicy:
    return SizePolicy(
        enabled=True,
        history=settings.size_history,
        min_history=min(settings.size_min_history, settings.size_history),
        below=settings.size_below_ratio,
        above=settings.size_above_ratio,
    )


def backup_alerting(backup: Any) -> BackupAlerting:
    """A stored expected backup's alerting settings (its `alerting` JSON, validated)."""
    return BackupAlerting.from_stored(getattr(backup, "alerting", None))


@dataclass
class SizeBaseline:
    """Each backup's trailing median of successful staged sizes before the cycle being evaluated: the
    stored history before the day, then the day's earlier cycles as the batch decides them in order
    (a backup expected every 6 hours compares with its previous cycles, not its previous days)."""

    medians: dict[int, tuple[float, int]] = field(default_factory=dict)  # backup -> (median, count)
    policies: dict[int, SizePolicy] = field(default_factory=dict)
    history: dict[int, list[tuple[int, datetime, int, int]]] = field(default_factory=dict)  # ranked rows

    @classmethod
    def load(
        cls, session: Session, settings: Settings, backups: Iterable[ExpectedBackupRow], before: datetime
    ) -> SizeBaseline:
        base = environment_policy(settings)
        policies = {backup.id: backup_alerting(backup).size_anomaly.policy(base) for backup in backups}
        wanted = {job_id: p.history for job_id, p in policies.items() if p.enabled}
        if not wanted:
            return cls({}, policies)
        rows = stored_alerts.size_history(session, list(wanted), before, max(wanted.values()))
        history: dict[int, list[tuple[int, datetime, int, int]]] = {}
        for row in rows:
            history.setdefault(row[0], []).append(row)
        return cls(trailing_medians(rows, wanted), policies, history)

    def assess(self, job_id: int, size: int | None) -> SizeAssessment | None:
        policy = self.policies.get(job_id)
        median, count = self.medians.get(job_id, (None, 0))
        if policy is None:
            return None
        return alerts.assess_size(size, median, count, policy)

    def record(self, job_id: int, cycle: datetime, size: int | None) -> None:
        """A successful cycle of the batch: it is history for the backup's later cycles."""
        policy = self.policies.get(job_id)
        if policy is None or not policy.enabled or size is None:
            return
        rows = [(job, at, bytes_, rank + 1) for job, at, bytes_, rank in self.history.get(job_id, [])]
        rows = [(job_id, cycle, size, 1), *rows][: policy.history]
        self.history[job_id] = rows
        self.medians.update(trailing_medians(rows, {job_id: policy.history}))


def trailing_medians(
    rows: Sequence[tuple[int, datetime, int, int]], depth: dict[int, int]
) -> dict[int, tuple[float, int]]:
    """Per backup, the median and count of its sizes ranked within its own depth (rank 1 = latest).
    Plain Python: it runs once per successful cycle a batch decides, where a data frame's set-up
    cost (milliseconds) dwarfed the few sizes it compares."""
    sizes: dict[int, list[int]] = {}
    for job_id, _cycle, size, rank in rows:
        if rank <= depth[job_id]:
            sizes.setdefault(job_id, []).append(size)
    return {job_id: (float(median(values)), len(values)) for job_id, values in sizes.items()}


def annotate(values: dict[str, Any], backup: ExpectedBackupRow, cycle: Cycle, baseline: SizeBaseline) -> None:
    """Add the size assessment columns to an entry's values and complete its message."""
    status = values["status"]
    assessment = (
        baseline.assess(backup.id, values.get("server_calculated_staged_size"))
        if status in SUCCESS_STATUSES
        else None
    )
    values["size_anomaly"] = assessment.kind.value if assessment and assessment.kind else None
    values["size_median"] = assessment.median if assessment else None
    values["size_ratio"] = assessment.ratio if assessment else None
    values["size_history"] = assessment.history if assessment else None
    silenced = (
        backup_alerting(backup).silence().reason(cycle.deadline) if status == EntryStatus.MISSING else None
    )
    values["message"] = alerts.annotate_message(status, values["message"], silenced=silenced, size=assessment)


@dataclass(frozen=True)
class Written:
    """An entry this batch created or changed."""

    backup: ExpectedBackupRow
    cycle: Cycle
    values: dict[str, Any]
    entry_id: int


def record_alerts(session: Session, ctx: ScanContext, written: Sequence[Written]) -> int:
    """Record the alerts raised by created or changed entries (in the caller's transaction)."""
    rows: list[dict[str, Any]] = []
    successes: dict[tuple[int, datetime], Written] = {}
    for item in written:
        settings = backup_alerting(item.backup)
        held = settings.silence().reason(item.cycle.deadline)
        status = item.values["status"]
        for event in alerts.cycle_events(
            status, item.values.get("size_anomaly"), notify_hash_mismatch=settings.notify_hash_mismatch
        ):
            message = item.values["message"]
            if event is AlertEvent.SIZE_ANOMALY:
                message = alerts.size_part(message)
            rows.append(_alert(ctx, item, event, message, held))
        if status in SUCCESS_STATUSES:
            successes[(item.backup.id, item.cycle.expected_at)] = item
    # The batch's problems first: a later cycle of the same backup in this batch may recover from them.
    inserted = stored_alerts.insert_alerts(session, rows)
    rows = []
    contexts = stored_alerts.recovery_contexts(session, list(successes))
    for key, item in successes.items():
        context = contexts.get(key)
        if context is None or not alerts.recovers(
            item.cycle.expected_at,
            last_problem=context.last_problem,
            last_problem_held=context.last_problem_held,
            last_recovery=context.last_recovery,
            previous_success=context.previous_success,
        ):
            continue
        assert context.last_problem is not None
        message = (
            f"back to {item.values['status']} after {context.last_problem_event} "
            f"(cycle {context.last_problem:%Y-%m-%dT%H:%MZ}): {item.values['message']}"
        )
        held = backup_alerting(item.backup).silence().reason(item.cycle.deadline)
        rows.append(_alert(ctx, item, AlertEvent.RECOVERED, message, held))
    return inserted + stored_alerts.insert_alerts(session, rows)


def _alert(
    ctx: ScanContext, item: Written, event: AlertEvent, message: str, held: str | None
) -> dict[str, Any]:
    return {
        "job_id": item.backup.id,
        "entry_id": item.entry_id,
        "cycle_expected_at": item.cycle.expected_at,
        "event": event.value,
        "message": message,
        "held_by": held,
        "dagster_run_id": ctx.run_id,
        "raised_at": ctx.as_of,
    }
