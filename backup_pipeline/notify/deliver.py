"""The scan's last step: send the recorded alerts through Apprise, grouped in one message per target.

Alerts are recorded by evaluation, in the transaction of the entries that raise them
(`scan.alert.record_alerts`). This step then:

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

from pydantic import BaseModel

from backup_pipeline.adapters.notify_targets import Target, send, split_urls, targets
from backup_pipeline.config.settings import Settings
from backup_pipeline.core.alerts import AlertEvent, AlertLine, Level, Notice, compose, retry_delay
from backup_pipeline.core.names import asset_path, per_database_assets
from backup_pipeline.storage import alerts as stored_alerts
from backup_pipeline.storage.database import Database
from backup_pipeline.storage.locks import Lock, advisory_lock
from backup_pipeline.storage.orm import AlertRow, ExpectedBackupRow

log = logging.getLogger(__name__)


class TargetResult(BaseModel):
    target: str  # redacted label
    target_id: str  # first characters of the target's digest, to tell similar labels apart
    alerts: int = 0
    sent: bool = False
    error: str | None = None


class NotifySummary(BaseModel):
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


def backup_targets(backup: ExpectedBackupRow | Any) -> list[Target]:
    return targets((getattr(backup, "alerting", None) or {}).get("notify", []))


def notify(settings: Settings, database: Database, run_id: str | None) -> NotifySummary:
    """Dispatch new alerts, then send everything due; never raises for a target's failure."""
    with advisory_lock(database, Lock.NOTIFY, wait=False) as held:
        if not held:
            return NotifySummary(skipped="another scan is sending notifications")
        return _Delivery(settings, run_id).run(database)


class _Delivery:
    """One notify step: what it was given, and what it did."""

    def __init__(self, settings: Settings, run_id: str | None) -> None:
        self.settings, self.run_id = settings, run_id
        self.summary = NotifySummary()

    def run(self, database: Database) -> NotifySummary:
        everywhere = global_targets(self.settings)
        with database.sessions() as session:
            self._dispatch(session, everywhere)
            session.commit()
            due = stored_alerts.due_deliveries(session)
            if not due:
                return self.summary
            known = {t.key: t for t in everywhere}
            for _, urls in stored_alerts.configured_backup_targets(session):
                known.update({t.key: t for t in targets(urls)})
            links = _Links(self.settings, session)
            by_target: dict[str, list[Any]] = defaultdict(list)
            for delivery, alert, backup in due:
                by_target[delivery.target_key].append((delivery, alert, backup))
            for key, group in by_target.items():
                self._deliver(session, known.get(key), group, links)
                session.commit()
        return self.summary

    def _deliver(self, session: Any, target: Target | None, group: list[Any], links: _Links) -> None:
        deliveries = [d for d, _, _ in group]
        if target is None:
            _abandon(session, deliveries, "the target is no longer configured")
            self.summary.abandoned += len(group)
        elif self._backing_off(deliveries):
            self.summary.deferred += len(group)
        else:
            self.summary.targets.append(self._send(session, target, group, links))

    def _backing_off(self, deliveries: Sequence[Any]) -> bool:
        """Whether the target's latest failure is too recent to try again (new alerts wait with the
        failed ones: they would go to the same failing target)."""
        failed = [d for d in deliveries if d.state == "failed" and d.last_attempt_at is not None]
        if not failed:
            return False
        streak = max(d.attempts for d in failed)  # failures in a row (they are sent together)
        delay = retry_delay(streak, timedelta(seconds=self.settings.notify_retry_seconds))
        return datetime.now(UTC) < max(d.last_attempt_at for d in failed) + delay

    def _dispatch(self, session: Any, everywhere: Sequence[Target]) -> None:
        new = stored_alerts.undispatched_alerts(session)
        rows = []
        for alert, backup in new:
            if alert.held_by:
                self.summary.held += 1
                continue
            addressed = targets([t.configured for t in [*everywhere, *backup_targets(backup)]])
            if not addressed:
                self.summary.unaddressed += 1
            else:
                self.summary.dispatched += 1
            rows += [
                {
                    "alert_id": alert.id,
                    "target_key": t.key,
                    "target": t.label,
                    "state": "pending",
                    "attempts": 0,
                }
                for t in addressed
            ]
        stored_alerts.create_deliveries(session, rows)
        stored_alerts.mark_dispatched(session, [a.id for a, _ in new], datetime.now(UTC))

    def _send(self, session: Any, target: Target, group: list[Any], links: _Links) -> TargetResult:
        lines = [
            AlertLine(
                event=AlertEvent(alert.event),
                agent_id=backup.agent_id_responsible,
                database_name=backup.database_name,
                cycle_expected_at=alert.cycle_expected_at,
                reason=alert.message,
                link=links.to(alert, backup),
            )
            for _, alert, backup in group
        ]
        error = send(target, compose(lines))
        now = datetime.now(UTC)
        message_id = str(uuid.uuid4())
        updates = [self._outcome(delivery, error, now) for delivery, _, _ in group]
        attempts = [
            {
                "delivery_id": delivery.id,
                "kind": "alert",
                "target_key": target.key,
                "target": target.label,
                "message_id": message_id,
                "ok": error is None,
                "error": error,
                "dagster_run_id": self.run_id,
                "attempted_at": now,
            }
            for delivery, _, _ in group
        ]
        stored_alerts.update_deliveries(session, updates)
        stored_alerts.record_attempts(session, attempts)
        if error is None:
            log.info("sent %d alert(s) to %s", len(group), target.label)
        else:
            log.warning("could not notify %s (%d alert(s)): %s", target.label, len(group), error)
        return TargetResult(
            target=target.label, target_id=target.id, alerts=len(group), sent=error is None, error=error
        )

    def _outcome(self, delivery: Any, error: str | None, now: datetime) -> dict[str, Any]:
        """A delivery's new state after one attempt."""
        tries = delivery.attempts + 1
        state, last_error = ("sent", None) if error is None else ("failed", error)
        if error is not None and tries >= self.settings.notify_max_attempts:
            state, last_error = "abandoned", f"gave up after {tries} attempt(s): {error}"
            self.summary.abandoned += 1
        return {
            "id": delivery.id,
            "state": state,
            "attempts": tries,
            "last_error": last_error,
            "last_attempt_at": now,
            "sent_at": now if error is None else None,
        }


def _abandon(session: Any, deliveries: Sequence[Any], reason: str) -> None:
    stored_alerts.update_deliveries(
        session, [{"id": d.id, "state": "abandoned", "last_error": reason} for d in deliveries]
    )


class _Links:
    """Links to the assets in the Dagster UI, when BACKUP_PIPELINE_DAGSTER_URL is set."""

    def __init__(self, settings: Settings, session: Any) -> None:
        self.base = (settings.dagster_url or "").rstrip("/")
        # The definitions' own rule, over the same synced fleet (`defs.fleet.FleetAssets`).
        self.per_database = bool(self.base) and per_database_assets(
            stored_alerts.active_backup_count(session), settings.per_database_assets_max
        )

    def to(self, alert: AlertRow, backup: ExpectedBackupRow) -> str | None:
        if not self.base:
            return None
        path = asset_path(
            backup.agent_id_responsible, backup.database_name, backup.name, per_database=self.per_database
        )
        day = alert.cycle_expected_at.astimezone(UTC).date().isoformat()
        return f"{self.base}/assets/{'/'.join(path)}?view=partitions&partition={day}"


# ---------------------------------------------------------------- `notify test`


class ProbeResult(BaseModel):
    target: str
    target_id: str
    source: str
    sent: bool
    error: str | None = None


def all_targets(settings: Settings, backup_urls: Sequence[Sequence[str]]) -> list[tuple[Target, str]]:
    """Every configured target with where it is configured (the environment, or how many expected
    backups list it)."""
    sources: dict[str, list[str]] = defaultdict(list)
    found: dict[str, Target] = {}
    for target in global_targets(settings):
        found.setdefault(target.key, target)
        sources[target.key].append("environment")
    counts: dict[str, int] = defaultdict(int)
    for urls in backup_urls:
        for target in targets(urls):
            found.setdefault(target.key, target)
            counts[target.key] += 1
    for key, n in counts.items():
        sources[key].append(f"{n} expected backup(s)")
    return [(target, ", ".join(sources[key])) for key, target in found.items()]


def send_test(
    settings: Settings, database: Database, backup_urls: Sequence[Sequence[str]]
) -> list[ProbeResult]:
    """A test message to every configured target, each attempt recorded."""
    results, rows = [], []
    host = socket.gethostname()
    for target, source in all_targets(settings, backup_urls):
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
        stored_alerts.record_attempts(session, rows)
        session.commit()
    return results
