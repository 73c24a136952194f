"""The exporter on a scanned fleet: what `metrics dump` and `/metrics` say, checked against the CLI's
own view of the same database, Prometheus' linter, and a query count that does not grow with the fleet."""

from __future__ import annotations

import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from datetime import datetime

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import event

from backup_pipeline.config.settings import load_settings
from backup_pipeline.defs import SCAN_JOB, build_definitions
from backup_pipeline.defs.scan_job import ScanConfig, scan_run_config
from backup_pipeline.metrics.collector import BackupCollector
from backup_pipeline.storage.database import open_database
from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.metrics_fleet import (
    DAY,
    DOUALA,
    LIMBE,
    YAOUNDE,
    build_fleet,
    exporter,
    job,
    parse,
    value,
    values,
)

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
STATUSES = ["OK", "FAILED", "TRANSFER_INTEGRITY_FAILED", "MISSING", "UNKNOWN"]


@pytest.fixture
def fleet(workspace: Workspace) -> Workspace:
    build_fleet(workspace)
    return workspace


def _dump(ws: Workspace) -> str:
    return ws.cli("metrics", "dump").stdout


def test_every_active_expected_backup_is_exported_with_its_status(fleet: Workspace) -> None:
    series = parse(_dump(fleet))
    status = {(r["agent_id"], r["database_name"], int(r["name"][:2])): r for r in fleet.json("status")}
    expected = {
        (DOUALA, "compta_db", "13:00 UTC"): "OK",
        (DOUALA, "compta_db", "20:00 UTC"): "FAILED",
        (DOUALA, "paie_db", "13:00 UTC"): "TRANSFER_INTEGRITY_FAILED",
        (YAOUNDE, "compta_db", "13:00 UTC"): "MISSING",
        (LIMBE, "stock_db", "23:30 UTC"): "UNKNOWN",
    }
    exported = {
        (s.labels["agent_id"], s.labels["database"], s.labels["schedule"]): s.labels["status"]
        for s in series
        if s.name == "backup_job_status" and s.value == 1
    }
    assert exported == expected
    assert {(a, d, int(s[:2])): v for (a, d, s), v in expected.items()} == {
        k: r["current_status"] for k, r in status.items()
    }
    for agent, database, schedule in expected:  # one series per possible status, exactly one at 1
        key = {"agent_id": agent, "database": database, "schedule": schedule}
        assert sorted(values(series, "backup_job_status", **key)) == [0, 0, 0, 0, 1]
        assert value(series, "backup_job_up", **key) == (expected[agent, database, schedule] == "OK")
        assert value(series, "backup_job_period_seconds", **key) == 86400
        assert value(series, "backup_job_early_seconds", **key) == 3600
        assert value(series, "backup_job_grace_seconds", **key) == 3600
    # The inactive expected backup (old_db, removed from the jobs file) is not exported at all.
    assert not [s for s in series if s.labels.get("database") == "old_db"]


def test_timestamps_sizes_and_latest_cycles_are_the_databases(fleet: Workspace) -> None:
    series = parse(_dump(fleet))
    rows = {(r["agent_id"], r["database_name"], int(r["name"][:2])): r for r in fleet.json("status")}
    ok = {"agent_id": DOUALA, "database": "compta_db", "schedule": "13:00 UTC"}
    success = rows[(DOUALA, "compta_db", 13)]["last_successful_backup_timestamp"]
    assert value(series, "backup_job_last_success_timestamp_seconds", **ok) == _epoch(success)
    checked = rows[(DOUALA, "compta_db", 13)]["last_checked_timestamp"]
    assert value(series, "backup_job_last_check_timestamp_seconds", **ok) == _epoch(checked)
    (entry,) = [
        e for e in fleet.entries(agent=DOUALA, database="compta_db") if "T13:00" in e["cycle_expected_at"]
    ]
    assert value(series, "backup_job_last_staged_size_bytes", **ok) == entry["server_calculated_staged_size"]
    assert value(series, "backup_job_size_anomaly", **ok) == 0
    assert value(series, "backup_job_latest_cycle_status", status="SUCCESS", **ok) == 1
    assert value(series, "backup_job_latest_cycle_timestamp_seconds", **ok) == _epoch(f"{DAY}T13:00:00Z")
    # Never successful: no last-success series rather than a zero; not yet evaluated: no cycle status.
    missing = {"agent_id": YAOUNDE, "database": "compta_db"}
    assert values(series, "backup_job_last_success_timestamp_seconds", **missing) == []
    assert value(series, "backup_job_latest_cycle_status", status="MISSING", **missing) == 1
    assert values(series, "backup_job_latest_cycle_status", agent_id=LIMBE) == []
    assert value(series, "backup_job_expected_since_timestamp_seconds", agent_id=LIMBE) == _epoch(
        f"{DAY}T01:00:00Z"
    )


def test_fleet_totals_reports_scans_and_notifications(fleet: Workspace) -> None:
    series = parse(_dump(fleet))
    assert {s.labels["status"]: s.value for s in series if s.name == "backup_fleet_jobs"} == {
        "OK": 1,
        "FAILED": 1,
        "TRANSFER_INTEGRITY_FAILED": 1,
        "MISSING": 1,
        "UNKNOWN": 1,
    }
    assert value(series, "backup_fleet_agents") == 3
    reports = fleet.json("reports")
    assert (
        value(series, "backup_reports_total", outcome="accepted") == sum(r["accepted"] for r in reports) == 2
    )
    assert value(series, "backup_reports_total", outcome="rejected") == 1
    # One automatic scan: a run per day it owed, every one succeeded.
    assert value(series, "backup_scans_total", outcome="succeeded") >= 1
    assert value(series, "backup_scans_total", outcome="failed") == 0
    assert value(series, "backup_scan_last_success") == 1
    ended = value(series, "backup_scan_last_end_timestamp_seconds")
    assert value(series, "backup_scan_last_successful_end_timestamp_seconds") == ended
    assert abs(ended - datetime.now().timestamp()) < 600  # a wall-clock time, not the scan's `--at`
    assert 0 < value(series, "backup_scan_last_duration_seconds") < 300
    # No target configured: every alert is unaddressed, nothing is pending.
    assert {s.labels["state"]: s.value for s in series if s.name == "backup_notification_deliveries"} == {
        "pending": 0,
        "sent": 0,
        "failed": 0,
        "abandoned": 0,
    }


def test_a_failed_scan_run_is_the_last_scan_and_counted(fleet: Workspace) -> None:
    succeeded = value(parse(_dump(fleet)), "backup_scans_total", outcome="succeeded")
    settings = load_settings()
    job_def = build_definitions(settings).resolve_job_def(SCAN_JOB)
    result = job_def.execute_in_process(
        partition_key=DAY,
        run_config=scan_run_config(ScanConfig(as_of="the day after tomorrow")),
        raise_on_error=False,
    )
    assert not result.success
    series = parse(_dump(fleet))
    assert value(series, "backup_scan_last_success") == 0
    assert value(series, "backup_scans_total", outcome="failed") == 1
    assert value(series, "backup_scans_total", outcome="succeeded") == succeeded
    # The last success is still the earlier scan's.
    assert value(series, "backup_scan_last_successful_end_timestamp_seconds") < value(
        series, "backup_scan_last_end_timestamp_seconds"
    )


def test_the_exposition_is_byte_for_byte_the_librarys(fleet: Workspace) -> None:
    """The exporter writes the text format itself (for speed); prometheus_client, given the same
    families through the collector, writes exactly the same bytes."""
    database = open_database(load_settings())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BackupCollector(lambda: database))
    assert _dump(fleet).encode() == generate_latest(registry)


def test_promtool_accepts_the_exposition(fleet: Workspace) -> None:
    """Names, types, units, help texts: Prometheus' own linter has nothing to say."""
    checked = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=_dump(fleet), capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0 and checked.stdout + checked.stderr == "", checked.stdout + checked.stderr


def test_a_scrape_costs_the_same_queries_for_5_or_500_expected_backups(workspace: Workspace) -> None:
    def statements_per_scrape() -> int:
        engine = open_database(load_settings()).engine
        seen: list[str] = []

        def count(*args: object) -> None:
            seen.append(str(args[2]))

        event.listen(engine, "before_cursor_execute", count)
        try:
            workspace.cli("metrics", "dump")
        finally:
            event.remove(engine, "before_cursor_execute", count)
        return len(seen)

    workspace.write_jobs([job(DOUALA, f"db_{i}", 13) for i in range(5)])
    workspace.cli("backups", "sync")
    small = statements_per_scrape()
    workspace.write_jobs(
        [job(f"SITE_CITY_Q{a}", f"db_{i}", 1 + i % 20) for a in range(50) for i in range(10)]
    )
    workspace.cli("backups", "sync")
    assert statements_per_scrape() == small <= 8
    assert value(parse(_dump(workspace)), "backup_fleet_jobs", status="UNKNOWN") == 500


def test_the_http_endpoints(fleet: Workspace) -> None:
    with exporter() as url:
        with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            scraped = parse(response.read().decode())
        assert (
            value(scraped, "backup_job_up", agent_id=DOUALA, database="compta_db", schedule="13:00 UTC") == 1
        )
        with urllib.request.urlopen(f"{url}/healthz", timeout=30) as response:
            assert response.status == 200 and response.read() == b"ok\n"
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{url}/nothing-here", timeout=30)
        assert missing.value.code == 404


def test_an_unreachable_database_is_a_503_with_one_line(
    fleet: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKUP_PIPELINE_DATABASE_URL", "postgresql://nobody:secret@127.0.0.1:9/nowhere")
    with exporter() as url:
        for path in ("/metrics", "/healthz", f"/badge/{DOUALA}.svg"):
            with pytest.raises(urllib.error.HTTPError) as failed:
                urllib.request.urlopen(f"{url}{path}", timeout=30)
            said = failed.value.read().decode()
            assert failed.value.code == 503, path
            assert said.startswith("PostgreSQL unreachable") and said.count("\n") == 1, said
            assert "secret" not in said and "Traceback" not in said


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_serve_binds_to_loopback_by_default_and_says_when_it_cannot(workspace: Workspace) -> None:
    assert "[default: 127.0.0.1]" in " ".join(workspace.cli("metrics", "serve", "--help").stdout.split())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = workspace.cli("metrics", "serve", "--port", str(port), expect_ok=False)
    assert refused.exit_code == 1
    assert refused.stderr.strip() == f"Error: cannot serve on 127.0.0.1:{port}: Address already in use"
