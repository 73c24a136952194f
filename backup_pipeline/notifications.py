"""The scan's last step: send the recorded alerts through Apprise, grouped in one message per target.

Alerts are recorded by evaluation, in the transaction of the entries that raise them
(`alerting.record_alerts`). This step then:

1. dispatches every alert not yet dispatched: one delivery per target (the global targets of
   BACKUP_PIPELINE_NOTIFY_URLS plus the job's own `notify:` list), or none when a silence holds it;
2. sends every delivery still due (new, or failed in an earlier scan) as one message per target,
   listing its alerts;
3. records every attempt (target label, the alerts' cycles and events, sent or failed, the error).

A target that fails is recorded and retried by the next scans (up to BACKUP_PIPELINE_NOTIFY_MAX_ATTEMPTS)
and never stops the other targets nor fails the scan. Only redacted labels are ever logged or returned.
"""

from __future__ import annotations

import logging
import socket
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from backup_pipeline.core.alerts import AlertEvent, AlertLine, Level, Notice, compose, retry_delay
from backup_pipeline.notify_targets import Target, send, split_urls, targets
from backup_pipeline.scan_context import ScanContext, Summary
from backup_pipeline.settings import Settings
from backup_pipeline.storage import alert_store
from backup_pipeline.storage.database import Database
from backup_pipeline.storage.orm import AlertRow, ExpectedJobRow

log = logging.getLogger(__name__)

NOTIFY_LOCK = 0x6E6F7469  # "noti": one notifier at a time, whatever process runs the scan


class TargetResult(Summary):
    target: str  # redacted label
    target_id: str  # first characters of the target's digest, to tell similar labels apart
    alerts: int = 0
    sent: bool = False
    error: str | None = None


class NotifySummary(Summary):
    dispatched: int = 0  # new alerts handed to their targets
    held: int = 0  # new alerts held by a silence (recorded, never sent)
    unaddressed: int = 0  # new alerts with no target configured
    abandoned: int = 0  # deliveries given up (target gone, or too many attempts)
    deferred: int = 0  # deliveries left for a later scan: their target failed moments ago
    targets: list[TargetResult] = []
    skipped: str | None = None

    @property
    def sent(self) -> int:
        return sum(t.alerts for t in self.targets if t.sent)

    @property
    def failed(self) -> int:
        return sum(t.alerts for t in self.targets if not t.sent)


def global_targets(settings: Settings) -> list[Target]:
    return targets(split_urls(settings.notify_urls.get_secret_value()))


def job_targets(job: ExpectedJobRow | Any) -> list[Target]:
    return targets((getattr(job, "alerting", None) or {}).get("notify", []))


def notify(ctx: ScanContext) -> NotifySummary:
    """Dispatch new alerts, then send everything due; never raises for a target's failure."""
    with ctx.database.engine.connect() as conn:
        if not conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": NOTIFY_LOCK}).scalar():
            return NotifySummary(skipped="another scan is sending notifications")
        try:
            return _notify(ctx)
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": NOTIFY_LOCK})
            conn.commit()


def _notify(ctx: ScanContext) -> NotifySummary:
    summary = NotifySummary()
    everywhere = global_targets(ctx.settings)
    with ctx.database.sessions() as session:
        _dispatch(session, ctx, everywhere, summary)
        session.commit()
        due = alert_store.due_deliveries(session)
        if not due:
            return summary
        known = {t.key: t for t in everywhere}
        for _, urls in alert_store.configured_job_targets(session):
            known.update({t.key: t for t in targets(urls)})
        links = _Links(ctx.settings, session)
        by_target: dict[str, list[Any]] = defaultdict(list)
        for delivery, alert, job in due:
            by_target[delivery.target_key].append((delivery, alert, job))
        for key, group in by_target.items():
            target = known.get(key)
            if target is None:
                _abandon(session, [d for d, _, _ in group], "the target is no longer configured")
                summary.abandoned += len(group)
            elif _backing_off(ctx, [d for d, _, _ in group]):
                summary.deferred += len(group)
            else:
                summary.targets.append(_send(session, ctx, target, group, links, summary))
            session.commit()
    return summary


def _backing_off(ctx: ScanContext, deliveries: Sequence[Any]) -> bool:
    """Whether the target's latest failure is too recent to try again (new alerts wait with the
    failed ones: they would go to the same failing target)."""
    failed = [d for d in deliveries if d.state == "failed" and d.last_attempt_at is not None]
    if not failed:
        return False
    streak = max(d.attempts for d in failed)  # failures in a row (they are sent together)
    delay = retry_delay(streak, timedelta(seconds=ctx.settings.notify_retry_seconds))
    return datetime.now(UTC) < max(d.last_attempt_at for d in failed) + delay


def _dispatch(session: Any, ctx: ScanContext, everywhere: Sequence[Target], summary: NotifySummary) -> None:
    new = alert_store.undispatched_alerts(session)
    rows = []
    for alert, job in new:
        if alert.held_by:
            summary.held += 1
            continue
        addressed = targets([t.configured for t in [*everywhere, *job_targets(job)]])
        if not addressed:
            summary.unaddressed += 1
        else:
            summary.dispatched += 1
        rows += [
            {"alert_id": alert.id, "target_key": t.key, "target": t.label, "state": "pending", "attempts": 0}
            for t in addressed
        ]
    alert_store.create_deliveries(session, rows)
    alert_store.mark_dispatched(session, [a.id for a, _ in new], datetime.now(UTC))


def _send(
    session: Any,
    ctx: ScanContext,
    target: Target,
    group: list[Any],
    links: _Links,
    summary: NotifySummary,
) -> TargetResult:
    lines = [
        AlertLine(
            event=AlertEvent(alert.event),
            agent_id=job.agent_id_responsible,
            database_name=job.database_name,
            cycle_expected_at=alert.cycle_expected_at,
            reason=alert.message,
            link=links.to(alert, job),
        )
        for _, alert, job in group
    ]
    error = send(target, compose(lines))
    now = datetime.now(UTC)
    message_id = str(uuid.uuid4())
    attempts, updates = [], []
    for delivery, _, _ in group:
        tries = delivery.attempts + 1
        state = "sent" if error is None else "failed"
        last_error = error
        if error is not None and tries >= ctx.settings.notify_max_attempts:
            state, last_error = "abandoned", f"gave up after {tries} attempt(s): {error}"
            summary.abandoned += 1
        updates.append(
            {
                "id": delivery.id,
                "state": state,
                "attempts": tries,
                "last_error": last_error,
                "last_attempt_at": now,
                "sent_at": now if error is None else None,
            }
        )
        attempts.append(
            {
                "delivery_id": delivery.id,
                "kind": "alert",
                "target_key": target.key,
                "target": target.label,
                "message_id": message_id,
                "ok": error is None,
                "error": error,
                "dagster_run_id": ctx.run_id,
                "attempted_at": now,
            }
        )
    alert_store.update_deliveries(session, updates)
    alert_store.record_attempts(session, attempts)
    if error is None:
        log.info("sent %d alert(s) to %s", len(group), target.label)
    else:
        log.warning("could not notify %s (%d alert(s)): %s", target.label, len(group), error)
    return TargetResult(
        target=target.label, target_id=target.id, alerts=len(group), sent=error is None, error=error
    )


def _abandon(session: Any, deliveries: Sequence[Any], reason: str) -> None:
    alert_store.update_deliveries(
        session, [{"id": d.id, "state": "abandoned", "last_error": reason} for d in deliveries]
    )


class _Links:
    """Links to the assets in the Dagster UI, when BACKUP_PIPELINE_DAGSTER_URL is set."""

    def __init__(self, settings: Settings, session: Any) -> None:
        self.base = (settings.dagster_url or "").rstrip("/")
        self.per_database = (
            bool(self.base) and alert_store.active_job_count(session) <= settings.per_database_assets_max
        )

    def to(self, alert: AlertRow, job: ExpectedJobRow) -> str | None:
        if not self.base:
            return None
        from backup_pipeline.dagster_assets import agent_asset_key, asset_key

        key = (
            asset_key(
                job.agent_id_responsible, job.database_name, job.expected_hour_utc, job.expected_minute_utc
            )
            if self.per_database
            else agent_asset_key(job.agent_id_responsible)
        )
        day = alert.cycle_expected_at.astimezone(UTC).date().isoformat()
        return f"{self.base}/assets/{'/'.join(key.path)}?view=partitions&partition={day}"


# ---------------------------------------------------------------- `notify test`


class ProbeResult(Summary):
    target: str
    target_id: str
    source: str
    sent: bool
    error: str | None = None


def all_targets(settings: Settings, job_urls: Sequence[Sequence[str]]) -> list[tuple[Target, str]]:
    """Every configured target with where it is configured (the environment, or how many jobs)."""
    sources: dict[str, list[str]] = defaultdict(list)
    found: dict[str, Target] = {}
    for target in global_targets(settings):
        found.setdefault(target.key, target)
        sources[target.key].append("environment")
    counts: dict[str, int] = defaultdict(int)
    for urls in job_urls:
        for target in targets(urls):
            found.setdefault(target.key, target)
            counts[target.key] += 1
    for key, n in counts.items():
        sources[key].append(f"{n} job(s)")
    return [(target, ", ".join(sources[key])) for key, target in found.items()]


def send_test(settings: Settings, database: Database, job_urls: Sequence[Sequence[str]]) -> list[ProbeResult]:
    """A test message to every configured target, each attempt recorded."""
    results, rows = [], []
    host = socket.gethostname()
    for target, source in all_targets(settings, job_urls):
        notice = Notice(
            title="[backup_pipeline] test notification",
            body=(
                f"This is a test message from backup_pipeline on {host}, "
                f"sent at {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC to {target.label}.\n"
                "Alerts about failed, missing or tampered backups, size anomalies and recoveries "
                "will reach you here."
            ),
            level=Level.INFO,
        )
        error = send(target, notice)
        results.append(
            ProbeResult(
                target=target.label, target_id=target.id, source=source, sent=error is None, error=error
            )
        )
        rows.append(
            {
                "delivery_id": None,
                "kind": "test",
                "target_key": target.key,
                "target": target.label,
                "message_id": str(uuid.uuid4()),
                "ok": error is None,
                "error": error,
                "dagster_run_id": None,
                "attempted_at": datetime.now(UTC),
            }
        )
    with database.sessions() as session:
        alert_store.record_attempts(session, rows)
        session.commit()
    return results


# ---------------------------------------------------------------- views


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def attempt_rows(database: Database, limit: int) -> list[dict[str, Any]]:
    with database.sessions() as session:
        rows = alert_store.attempt_log(session, limit)
    return [
        {
            "attempted_at": _iso(r.attempt.attempted_at),
            "target": r.attempt.target,
            "target_id": r.attempt.target_key[:8],
            "kind": r.attempt.kind,
            "agent_id": r.job.agent_id_responsible if r.job else None,
            "database_name": r.job.database_name if r.job else None,
            "cycle_expected_at": _iso(r.alert.cycle_expected_at) if r.alert else None,
            "event": r.alert.event if r.alert else None,
            "result": "sent" if r.attempt.ok else "failed",
            "error": r.attempt.error,
            "dagster_run_id": r.attempt.dagster_run_id,
        }
        for r in rows
    ]


def alert_rows(database: Database, limit: int) -> list[dict[str, Any]]:
    with database.sessions() as session:
        pairs = alert_store.alerts_of(session, limit)
        states = _delivery_states(session, [a.id for a, _ in pairs])
    return [
        {
            "raised_at": _iso(alert.raised_at),
            "agent_id": job.agent_id_responsible,
            "database_name": job.database_name,
            "cycle_expected_at": _iso(alert.cycle_expected_at),
            "event": alert.event,
            "held_by": alert.held_by,
            "deliveries": states.get(alert.id, "held" if alert.held_by else "none"),
            "message": alert.message,
        }
        for alert, job in pairs
    ]


def _delivery_states(session: Any, alert_ids: list[int]) -> dict[int, str]:
    from backup_pipeline.storage.orm import NotificationDeliveryRow

    if not alert_ids:
        return {}
    rows = session.execute(
        sa.select(
            NotificationDeliveryRow.alert_id, NotificationDeliveryRow.target, NotificationDeliveryRow.state
        )
        .where(NotificationDeliveryRow.alert_id.in_(alert_ids))
        .order_by(NotificationDeliveryRow.id)
    )
    states: dict[int, list[str]] = defaultdict(list)
    for alert_id, target, state in rows:
        states[alert_id].append(f"{target}: {state}")
    return {alert_id: "; ".join(parts) for alert_id, parts in states.items()}
