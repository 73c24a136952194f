"""The fleet as Prometheus metric families, from one database snapshot.

Names, types, units and labels follow Prometheus' conventions (`promtool check metrics` passes): per
active expected backup, series labelled `agent_id`, `database` and `schedule` (e.g. `13:00 UTC`, which
tells apart the several expected backups of one database); the latest restore drill of each drilled
one; fleet totals; the last scan; recorded reports; notification deliveries. Inactive expected
backups are not exported. A timestamp that never happened (no success yet) is an absent series, not a
zero.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime

from backup_pipeline.core.domain import BackupStatus, EntryStatus
from backup_pipeline.core.drills import DrillOutcome
from backup_pipeline.metrics.families import NO_LABELS, Family, LabelSet
from backup_pipeline.metrics.schedule import period_seconds, schedule_label
from backup_pipeline.storage.metrics import BackupState, DrillState, FleetSnapshot, ScanTotals
from backup_pipeline.storage.scan_records import ScanOutcome

BACKUP_LABELS = ("agent_id", "database", "schedule")
DELIVERY_STATES = ("pending", "sent", "failed", "abandoned")  # NotificationDeliveryRow.state
BACKUP_STATUSES = [s.value for s in BackupStatus]
ENTRY_STATUSES = [s.value for s in EntryStatus]
ALL_STATUSES = sorted(set(BACKUP_STATUSES) | set(ENTRY_STATUSES))
DRILL_OUTCOMES = [o.value for o in DrillOutcome]


def fleet_families(snapshot: FleetSnapshot) -> list[Family]:
    return [
        *_backup_families(snapshot.backups),
        *_drill_families(snapshot.drills),
        *_fleet_families(snapshot),
    ]


def _per_backup(name: str, help_text: str, unit: str = "", extra: tuple[str, ...] = ()) -> Family:
    return Family(name, "gauge", help_text, (*BACKUP_LABELS, *extra), unit)


def _backup_labels(of: BackupState | DrillState) -> LabelSet:
    return LabelSet.of(agent_id=of.agent_id, database=of.database_name, schedule=schedule_label(of))


def _timestamp(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _backup_families(backups: Iterable[BackupState]) -> list[Family]:
    status = _per_backup(
        "backup_job_status",
        "1 for the expected backup's current status, 0 for the other possible statuses.",
        extra=("status",),
    )
    up = _per_backup("backup_job_up", "1 when the expected backup's current status is OK, else 0.")
    latest = _per_backup(
        "backup_job_latest_cycle_status",
        "1 for the status of the expected backup's latest evaluated cycle, 0 for the other entry statuses.",
        extra=("status",),
    )
    gauges = {
        "last_success": _per_backup(
            "backup_job_last_success_timestamp_seconds",
            "When the expected backup's last successful backup ended (absent before the first).",
            "seconds",
        ),
        "last_check": _per_backup(
            "backup_job_last_check_timestamp_seconds",
            "The instant a scan last evaluated the expected backup as of.",
            "seconds",
        ),
        "latest_cycle": _per_backup(
            "backup_job_latest_cycle_timestamp_seconds",
            "The expected instant of the expected backup's latest evaluated cycle.",
            "seconds",
        ),
        "size": _per_backup(
            "backup_job_last_staged_size_bytes",
            "The staged file's size at the expected backup's latest successful cycle.",
            "bytes",
        ),
        "anomaly": _per_backup(
            "backup_job_size_anomaly",
            "1 when the latest successful cycle's staged size was far from its trailing median, else 0.",
        ),
        "period": _per_backup(
            "backup_job_period_seconds",
            "The longest time between two consecutive cycles of the expected backup's schedule.",
            "seconds",
        ),
        "early": _per_backup(
            "backup_job_early_seconds",
            "How long before a cycle's expected instant a report may end and still count for it.",
            "seconds",
        ),
        "grace": _per_backup(
            "backup_job_grace_seconds",
            "How long after a cycle's expected instant a report may end: the cycle's deadline.",
            "seconds",
        ),
        "since": _per_backup(
            "backup_job_expected_since_timestamp_seconds",
            "When the expected backup was first declared (synced from the jobs file).",
            "seconds",
        ),
    }
    for backup in backups:
        key = _backup_labels(backup)
        with_status = {value: key.extended("status", value) for value in ALL_STATUSES}
        current, cycle = backup.current_status, backup.latest_cycle_status
        status.samples += [(with_status[v], 1.0 if current == v else 0.0) for v in BACKUP_STATUSES]
        up.add(key, 1.0 if current == BackupStatus.OK else 0.0)
        if cycle is not None:
            latest.samples += [(with_status[v], 1.0 if cycle == v else 0.0) for v in ENTRY_STATUSES]
        for name, value in _backup_values(backup).items():
            if value is not None:
                gauges[name].add(key, value)
    return [status, up, latest, *gauges.values()]


def _backup_values(backup: BackupState) -> dict[str, float | None]:
    measured = backup.last_staged_size is not None
    return {
        "last_success": _timestamp(backup.last_success),
        "last_check": _timestamp(backup.last_checked),
        "latest_cycle": _timestamp(backup.latest_cycle_at),
        "size": float(backup.last_staged_size) if measured else None,  # type: ignore[arg-type]
        "anomaly": (1.0 if backup.size_anomaly else 0.0) if measured else None,
        "period": float(period_seconds(backup)),
        "early": float(backup.early_minutes * 60),
        "grace": float(backup.grace_minutes * 60),
        "since": _timestamp(backup.created_at),
    }


def _drill_families(drills: list[DrillState]) -> list[Family]:
    """Only where drills exist: an expected backup never drilled has no drill series (not zeros)."""
    if not drills:
        return []
    outcome = _per_backup(
        "backup_drill_last_outcome",
        "1 for the outcome of the expected backup's latest restore drill, 0 for the other outcomes.",
        extra=("outcome",),
    )
    gauges = {
        "success": _per_backup(
            "backup_drill_last_success",
            "1 when the latest restore drill restored the dump without shrinking, else 0.",
        ),
        "shrank": _per_backup(
            "backup_drill_last_shrank",
            "1 when the latest restore drill restored far less than the previous one (RESTORE_SHRANK).",
        ),
        "slow": _per_backup(
            "backup_drill_last_slow",
            "1 when the latest restore drill restored slower than its objective (RESTORE_SLOW).",
        ),
        "objective": _per_backup(
            "backup_drill_objective_seconds",
            "The restore-time objective of the latest restore drill (restore_drill.objective_minutes).",
            "seconds",
        ),
        "finished": _per_backup(
            "backup_drill_last_timestamp_seconds", "When the latest restore drill ended.", "seconds"
        ),
        "duration": _per_backup(
            "backup_drill_last_duration_seconds", "How long the latest restore drill took.", "seconds"
        ),
        "rows": _per_backup(
            "backup_drill_last_restored_rows", "Rows the latest restore drill restored, all tables together."
        ),
        "bytes": _per_backup(
            "backup_drill_last_restored_size_bytes",
            "The size of the database the latest restore drill restored.",
            "bytes",
        ),
    }
    for drill in drills:
        key = _backup_labels(drill)
        outcome.samples += [
            (key.extended("outcome", value), 1.0 if drill.outcome == value else 0.0)
            for value in DRILL_OUTCOMES
        ]
        restored = drill.outcome == DrillOutcome.RESTORED
        values = {
            "success": 1.0 if restored and not drill.shrank else 0.0,
            "shrank": 1.0 if drill.shrank else 0.0,
            "slow": 1.0 if drill.slow else 0.0,
            "objective": drill.objective_seconds,
            "finished": drill.finished_at.timestamp(),
            "duration": drill.duration_seconds,
            "rows": float(drill.rows) if drill.rows is not None else None,
            "bytes": float(drill.bytes) if drill.bytes is not None else None,
        }
        for name, value in values.items():
            if value is not None:
                gauges[name].add(key, value)
    return [outcome, *gauges.values()]


def _counts(name: str, kind: str, help_text: str, label: str, counts: dict[str, int]) -> Family:
    family = Family(name, kind, help_text, (label,))
    for value, count in counts.items():
        family.add(LabelSet.of(**{label: value}), float(count))
    return family


def _single(name: str, help_text: str, value: float, unit: str = "") -> Family:
    return Family(name, "gauge", help_text, (), unit, [(NO_LABELS, value)])


def _fleet_families(snapshot: FleetSnapshot) -> list[Family]:
    statuses = Counter(b.current_status for b in snapshot.backups)
    return [
        _counts(
            "backup_fleet_jobs",
            "gauge",
            "Active expected backups per current status.",
            "status",
            {value: statuses[value] for value in BACKUP_STATUSES},
        ),
        _single(
            "backup_fleet_agents",
            "Agents with at least one active expected backup.",
            float(len({b.agent_id for b in snapshot.backups})),
        ),
        *_scan_families(snapshot.scans),
        _counts(
            "backup_reports_total",
            "counter",
            "Status report files recorded, accepted or rejected.",
            "outcome",
            {"accepted": snapshot.reports.get(True, 0), "rejected": snapshot.reports.get(False, 0)},
        ),
        _counts(
            "backup_notification_deliveries",
            "gauge",
            "Alert deliveries to notification targets per state (failed ones are retried; abandoned ones "
            "no longer are).",
            "state",
            {state: snapshot.deliveries.get(state, 0) for state in DELIVERY_STATES},
        ),
    ]


def _scan_families(scans: ScanTotals) -> list[Family]:
    ended = (ScanOutcome.SUCCEEDED.value, ScanOutcome.FAILED.value)
    found = [
        _counts(
            "backup_scans_total",
            "counter",
            "Scan runs (one per day scanned) that ended.",
            "outcome",
            {outcome: scans.runs.get(outcome, 0) for outcome in ended},
        )
    ]
    if scans.last is not None:
        last = scans.last
        found += [
            _single(
                "backup_scan_last_end_timestamp_seconds",
                "When the latest scan run that ended, ended (succeeded or failed).",
                last.ended_at.timestamp(),
                "seconds",
            ),
            _single(
                "backup_scan_last_duration_seconds",
                "How long the latest scan run that ended took.",
                (last.ended_at - last.started_at).total_seconds(),
                "seconds",
            ),
            _single(
                "backup_scan_last_success",
                "1 when the latest scan run that ended succeeded, 0 when it failed.",
                1.0 if last.outcome == ScanOutcome.SUCCEEDED else 0.0,
            ),
        ]
    if scans.last_success_end is not None:
        found.append(
            _single(
                "backup_scan_last_successful_end_timestamp_seconds",
                "When the latest successful scan run ended.",
                scans.last_success_end.timestamp(),
                "seconds",
            )
        )
    return found
