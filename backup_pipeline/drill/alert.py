"""The alerts a restore drill raises, recorded in the drill's own transaction (like a scan's, they
are then sent by the `notify` step): RESTORE_FAILED, RESTORE_SHRANK, and RESTORE_RECOVERED when a
drill restores again after a notified failure. A silence that covers the drilled cycle holds them."""

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
    for event in alerts.drill_events(drill["outcome"], shrank=drill["shrank"]):
        message = drill["reason"] if event is AlertEvent.RESTORE_FAILED else drill["comparison"]
        rows.append(row(event, _short(f"restore drill: {message}")))
    if drill["outcome"] == DrillOutcome.RESTORED:
        context = stored_drills.drill_alert_context(
            session, target.job_id, target.cycle_expected_at, drill_id
        )
        if alerts.recovers(
            target.cycle_expected_at,
            last_problem=context.last_failure,
            last_problem_held=context.last_failure_held,
            last_recovery=context.last_recovery,
            previous_success=context.previous_pass,
        ):
            assert context.last_failure is not None
            rows.append(
                row(
                    AlertEvent.RESTORE_RECOVERED,
                    "restore drill: restores again after RESTORE_FAILED "
                    f"(cycle {context.last_failure:%Y-%m-%dT%H:%MZ}): "
                    f"{drill['tables']} table(s), {drill['rows']:,} row(s), {drill['bytes']:,} bytes",
                )
            )
    return stored_alerts.insert_alerts(session, rows)


ALERT_MESSAGE_CAP = 500  # an alert is read in a chat or a mail subject line: the drill keeps the rest


def _short(text: str) -> str:
    return text if len(text) <= ALERT_MESSAGE_CAP else text[: ALERT_MESSAGE_CAP - 1] + "…"
