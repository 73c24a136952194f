"""The shipped Prometheus configuration and alerting rules: valid for promtool, their own unit tests
pass, and they only name metrics the exporter exports (so a renamed metric cannot silence an alert)."""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime, timedelta

import yaml

from backup_pipeline.metrics.exposition import encode
from backup_pipeline.metrics.fleet import fleet_families
from backup_pipeline.storage.metrics import BackupState, DrillState, FleetSnapshot, LastScan, ScanTotals
from backup_pipeline_tests.support.paths import PROJECT_ROOT
from backup_pipeline_tests.support.prometheus import PROMTOOL, RULES, require

DEPLOY = PROJECT_ROOT / "deploy" / "prometheus"
NOW = datetime(2025, 11, 21, 14, 0, tzinfo=UTC)
# One expected backup, daily at 13:00 UTC: its state and its latest drill.
IDENTITY = {
    "agent_id": "A_B_C",
    "database_name": "db",
    "name": "1300",
    "schedule": None,
    "timezone": "UTC",
    "expected_hour_utc": 13,
    "expected_minute_utc": 0,
}


def _promtool(*args: str) -> str:
    done = subprocess.run([require(PROMTOOL), *args], cwd=DEPLOY, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_the_rules_and_the_example_configuration_are_valid() -> None:
    assert "SUCCESS: 9 rules found" in _promtool("check", "rules", str(RULES))
    assert "is valid prometheus config file syntax" in _promtool("check", "config", "prometheus.yml")


def test_the_rules_unit_tests_pass() -> None:
    assert "SUCCESS" in _promtool("test", "rules", "backup_pipeline.rules.test.yml")


def test_every_metric_the_rules_name_is_exported() -> None:
    backup = BackupState(
        **IDENTITY,
        early_minutes=60,
        grace_minutes=60,
        current_status="OK",
        created_at=NOW - timedelta(days=3),
        last_checked=NOW,
        last_success=NOW - timedelta(hours=1),
        latest_cycle_status="SUCCESS",
        latest_cycle_at=NOW - timedelta(hours=1),
        last_staged_size=1024,
        size_anomaly=None,
    )
    scans = ScanTotals(LastScan(NOW - timedelta(seconds=30), NOW, "succeeded"), NOW, {"succeeded": 1})
    drill = DrillState(
        **IDENTITY,
        outcome="RESTORED",
        shrank=False,
        finished_at=NOW,
        duration_seconds=12.5,
        rows=1000,
        bytes=8_000_000,
        slow=False,
        objective_seconds=300.0,
    )
    snapshot = FleetSnapshot([backup], scans, {True: 3, False: 1}, {"sent": 2}, [drill])

    exported = set(re.findall(r"^# TYPE (\S+) ", encode(fleet_families(snapshot)).decode(), re.MULTILINE))
    expressions = [
        rule["expr"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]
    named = {
        name
        for expr in expressions
        for name in re.findall(r"\b([a-z_]+)\s*(?:\{|\[|\)|$|\s|>|==)", expr)
        if name.startswith("backup_")
    }
    assert named and named <= exported, named - exported
    assert {
        "backup_job_status",
        "backup_job_last_success_timestamp_seconds",
        "backup_scan_last_successful_end_timestamp_seconds",
        "backup_notification_deliveries",
    } <= named
