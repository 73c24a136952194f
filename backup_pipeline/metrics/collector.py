"""The Prometheus collector: reads PostgreSQL at scrape time and exports the fleet.

Nothing is cached between scrapes (nothing can go stale) and a scrape costs the same few queries
whatever the fleet's size (`storage.metrics.fleet_snapshot`). Names, types, units and labels follow
Prometheus' conventions (`promtool check metrics` passes): per expected backup, series labelled
`agent_id`, `database` and `schedule` (its time, e.g. `13:00 UTC`, which tells apart the several
expected backups of one database); fleet totals; the last scan; recorded reports; notification
deliveries. Inactive expected backups are not exported. A timestamp that never happened (no success
yet) is an absent series, not a zero.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from backup_pipeline.core.domain import BackupStatus, EntryStatus
from backup_pipeline.metrics.schedule import period_seconds, schedule_label
from backup_pipeline.storage.database import Database
from backup_pipeline.storage.metrics import BackupState, FleetSnapshot, ScanTotals, fleet_snapshot
from backup_pipeline.storage.scan_records import ScanOutcome

BACKUP_LABELS = ["agent_id", "database", "schedule"]
DELIVERY_STATES = ("pending", "sent", "failed", "abandoned")  # notify.deliver's delivery states


class BackupCollector(Collector):
    """A custom collector for a `prometheus_client` registry: one database snapshot per scrape."""

    def __init__(self, database: Callable[[], Database]) -> None:
        self._database = database

    def collect(self) -> Iterator[Metric]:
        with self._database().sessions() as session:
            snapshot = fleet_snapshot(session)
        yield from families(snapshot)


def families(snapshot: FleetSnapshot) -> list[Metric]:
    return [*_backup_families(snapshot.backups), *_fleet_families(snapshot)]


def _gauge(name: str, documentation: str, labels: list[str], unit: str = "") -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=labels, unit=unit)


def _timestamp(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _backup_families(backups: Iterable[BackupState]) -> list[Metric]:
    labels = BACKUP_LABELS
    status = _gauge(
        "backup_job_status",
        "1 for the expected backup's current status, 0 for the other possible statuses.",
        [*labels, "status"],
    )
    up = _gauge("backup_job_up", "1 when the expected backup's current status is OK, else 0.", labels)
    latest = _gauge(
        "backup_job_latest_cycle_status",
        "1 for the status of the expected backup's latest evaluated cycle, 0 for the other entry statuses.",
        [*labels, "status"],
    )
    gauges = {
        "last_success": _gauge(
            "backup_job_last_success_timestamp_seconds",
            "When the expected backup's last successful backup ended (absent before the first).",
            labels,
            "seconds",
        ),
        "last_check": _gauge(
            "backup_job_last_check_timestamp_seconds",
            "The instant a scan last evaluated the expected backup as of.",
            labels,
            "seconds",
        ),
        "latest_cycle": _gauge(
            "backup_job_latest_cycle_timestamp_seconds",
            "The expected instant of the expected backup's latest evaluated cycle.",
            labels,
            "seconds",
        ),
        "size": _gauge(
            "backup_job_last_staged_size_bytes",
            "The staged file's size at the expected backup's latest successful cycle.",
            labels,
            "bytes",
        ),
        "anomaly": _gauge(
            "backup_job_size_anomaly",
            "1 when the latest successful cycle's staged size was far from its trailing median, else 0.",
            labels,
        ),
        "period": _gauge(
            "backup_job_period_seconds",
            "The longest time between two consecutive cycles of the expected backup's schedule.",
            labels,
            "seconds",
        ),
        "window": _gauge(
            "backup_job_window_seconds",
            "The expected backup's window: a report ending this long before or after a cycle counts.",
            labels,
            "seconds",
        ),
        "since": _gauge(
            "backup_job_expected_since_timestamp_seconds",
            "When the expected backup was first declared (synced from the jobs file).",
            labels,
            "seconds",
        ),
    }
    backup_statuses = [s.value for s in BackupStatus]
    entry_statuses = [s.value for s in EntryStatus]
    for backup in backups:
        key = [backup.agent_id, backup.database_name, schedule_label(backup)]
        for value in backup_statuses:
            status.add_metric([*key, value], 1.0 if backup.current_status == value else 0.0)
        up.add_metric(key, 1.0 if backup.current_status == BackupStatus.OK else 0.0)
        if backup.latest_cycle_status is not None:
            for value in entry_statuses:
                latest.add_metric([*key, value], 1.0 if backup.latest_cycle_status == value else 0.0)
        for name, value in _backup_values(backup).items():
            if value is not None:
                gauges[name].add_metric(key, value)
    return [status, up, latest, *gauges.values()]


def _backup_values(backup: BackupState) -> dict[str, float | None]:
    measured = backup.last_staged_size is not None
    return {
        "last_success": _timestamp(backup.last_success),
        "last_check": _timestamp(backup.last_checked),
        "latest_cycle": _timestamp(backup.latest_cycle_at),
        "size": float(backup.last_staged_size) if measured else None,
        "anomaly": (1.0 if backup.size_anomaly else 0.0) if measured else None,
        "period": float(period_seconds(backup)),
        "window": float(backup.window_minutes * 60),
        "since": _timestamp(backup.created_at),
    }


def _fleet_families(snapshot: FleetSnapshot) -> list[Metric]:
    jobs = _gauge("backup_fleet_jobs", "Active expected backups per current status.", ["status"])
    counts = Counter(b.current_status for b in snapshot.backups)
    for value in BackupStatus:
        jobs.add_metric([value.value], float(counts[value.value]))
    agents = GaugeMetricFamily(
        "backup_fleet_agents",
        "Agents with at least one active expected backup.",
        value=len({b.agent_id for b in snapshot.backups}),
    )
    reports = CounterMetricFamily(
        "backup_reports", "Status report files recorded, accepted or rejected.", labels=["outcome"]
    )
    reports.add_metric(["accepted"], float(snapshot.reports.get(True, 0)))
    reports.add_metric(["rejected"], float(snapshot.reports.get(False, 0)))
    deliveries = _gauge(
        "backup_notification_deliveries",
        "Alert deliveries to notification targets per state (failed ones are retried; abandoned ones no "
        "longer are).",
        ["state"],
    )
    for state in DELIVERY_STATES:
        deliveries.add_metric([state], float(snapshot.deliveries.get(state, 0)))
    return [jobs, agents, *_scan_families(snapshot.scans), reports, deliveries]


def _scan_families(scans: ScanTotals) -> list[Metric]:
    runs = CounterMetricFamily(
        "backup_scans", "Scan runs (one per day scanned) that ended.", labels=["outcome"]
    )
    for outcome in (ScanOutcome.SUCCEEDED, ScanOutcome.FAILED):
        runs.add_metric([outcome.value], float(scans.runs.get(outcome.value, 0)))
    found: list[Metric] = [runs]
    if scans.last is not None:
        last = scans.last
        found += [
            GaugeMetricFamily(
                "backup_scan_last_end_timestamp_seconds",
                "When the latest scan run that ended, ended (succeeded or failed).",
                value=last.ended_at.timestamp(),
                unit="seconds",
            ),
            GaugeMetricFamily(
                "backup_scan_last_duration_seconds",
                "How long the latest scan run that ended took.",
                value=(last.ended_at - last.started_at).total_seconds(),
                unit="seconds",
            ),
            GaugeMetricFamily(
                "backup_scan_last_success",
                "1 when the latest scan run that ended succeeded, 0 when it failed.",
                value=1.0 if last.outcome == ScanOutcome.SUCCEEDED else 0.0,
            ),
        ]
    if scans.last_success_end is not None:
        found.append(
            GaugeMetricFamily(
                "backup_scan_last_successful_end_timestamp_seconds",
                "When the latest successful scan run ended.",
                value=scans.last_success_end.timestamp(),
                unit="seconds",
            )
        )
    return found
