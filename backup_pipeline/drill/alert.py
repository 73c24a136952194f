"""The alerts a restore drill raises, recorded in the drill's own transaction (like a scan's, they
are then sent by the `notify` step): RESTORE_FAILED, RESTORE_SHRANK, RESTORE_SLOW (restored, slower
than its objective), RESTORE_RECOVERED when a drill restores again after a notified failure and
RESTORE_SLOW_RECOVERED when one is within its objective again after a notified slow one. A silence
that covers the drilled cycle holds them."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from backup_pipeline.config.jobs_file import BackupAlerting
from backup_pipeline.core import alerts
from backup_pipeline.core.alerts import AlertEvent
from backup_pipeline.core.drills import DrillOutcome
from backup_pipeline.storage import alerts as stored_alerts
from backup_pipeline.storage import drills as stored_drills
from backup_pipeline.storage.database import Session
from backup_pipeline.storage.drills import DrillTarget


def record_drill_alerts(
    session: Session,
    target: DrillTarget,
    drill: dict[str, Any],
    drill_id: int,
    *,
    as_of: datetime,
    run_id: str | None,
) -> int:
    """Record what this drill raises; returns how many alerts are new."""
    deadline = target.cycle_expected_at + timedelta(minutes=target.grace_minutes)
    held = BackupAlerting.from_stored(target.alerting).silence().reason(deadline)

    def row(event: AlertEvent, message: str) -> dict[str, Any]:
        return {
            "job_id": target.job_id,
            "entry_id": target.entry_id,
            "cycle_expected_at": target.cycle_expected_at,
            "event": event.value,
            "message": message,
            "held_by": held,
            "dagster_run_id": run_id,
            "raised_at": as_of,
        }

    rows = []
    slow = bool(drill.get("slow"))
    for event in alerts.drill_events(drill["outcome"], shrank=drill["shrank"], slow=slow):
        if event is AlertEvent.RESTORE_FAILED:
            message = drill["reason"]
        elif event is AlertEvent.RESTORE_SHRANK:
            message = drill["comparison"]
        else:
            message = _slow_message(drill)
        rows.append(row(event, _short(f"restore drill: {message}")))
    if drill["outcome"] == DrillOutcome.RESTORED:
        failed = _recovered_from(session, target, drill_id, slow=False)
        if failed is not None:
            rows.append(
                row(
                    AlertEvent.RESTORE_RECOVERED,
                    "restore drill: restores again after RESTORE_FAILED "
                    f"(cycle {failed:%Y-%m-%dT%H:%MZ}): "
                    f"{drill['tables']} table(s), {drill['rows']:,} row(s), {drill['bytes']:,} bytes",
                )
            )
        was_slow = _recovered_from(session, target, drill_id, slow=True) if not slow else None
        if was_slow is not None and drill.get("objective_seconds") is not None:
            rows.append(
                row(
                    AlertEvent.RESTORE_SLOW_RECOVERED,
                    f"restore drill: within its objective again after RESTORE_SLOW (cycle "
                    f"{was_slow:%Y-%m-%dT%H:%MZ}): {drill['duration_seconds']:.0f} s, objective "
                    f"{drill['objective_seconds']:.0f} s",
                )
            )
    return stored_alerts.insert_alerts(session, rows)


def _recovered_from(session: Session, target: DrillTarget, drill_id: int, *, slow: bool) -> datetime | None:
    """The cycle of the notified problem (a failure, or with `slow` a slow restore) this drill ends,
    if it ends one."""
    context = stored_drills.drill_alert_context(
        session, target.job_id, target.cycle_expected_at, drill_id, slow=slow
    )
    ends = alerts.recovers(
        target.cycle_expected_at,
        last_problem=context.last_failure,
        last_problem_held=context.last_failure_held,
        last_recovery=context.last_recovery,
        previous_success=context.previous_pass,
    )
    return context.last_failure if ends else None


def _slow_message(drill: dict[str, Any]) -> str:
    return (
        f"restored in {drill['duration_seconds']:.0f} s, over its objective of "
        f"{drill['objective_seconds']:.0f} s (restore_drill.objective_minutes)"
    )


ALERT_MESSAGE_CAP = 500  # an alert is read in a chat or a mail subject line: the drill keeps the rest


def _short(text: str) -> str:
    return text if len(text) <= ALERT_MESSAGE_CAP else text[: ALERT_MESSAGE_CAP - 1] + "…"
