"""History: a day's scan with 30 days of recorded history vs with none.

Same fleet as `fleet.py` (1,000 agents × 20 databases). Workspace A scans day D with an empty
history. Workspace B first gets 29 earlier days recorded (one report per agent and one entry per
job and day, inserted in bulk in PostgreSQL: 29,000 reports, 580,000 entries), then scans day D
on the same simulated deposit. Target: B within 1.2× of A (a scan costs its new work, not the
history's length).
"""

from __future__ import annotations

import argparse
import os
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from benchmarks.common import SCRATCH, Report, run, timed
from benchmarks.fleet import AT, DAY, _cli, _stop_embedded_server, latest_run_stats, prepare

HISTORY_DAYS = 29

REPORTS_SQL = """
INSERT INTO status_reports (agent_id, file_name, content_sha256, size, accepted, notes, payload,
                            operation_end_time, file_name_time, file_mtime, archived_path)
SELECT a.agent,
       to_char(d, 'YYYYMMDD') || '_000000_' || a.agent || '.json',
       md5(a.agent || d::text) || md5(d::text || a.agent),
       4096, true, '[]'::jsonb,
       jsonb_build_object('agent_id', a.agent,
                          'operation_end_time', to_char(d + a.at, 'YYYY-MM-DD"T"HH24:MI:SS+00:00'),
                          'operation_start_time', null, 'overall_status', 'completed',
                          'databases', a.sections),
       d + a.at, (d + a.at)::timestamp, d + a.at, '/archive/' || a.agent
FROM (
    SELECT agent_id_responsible AS agent,
           make_interval(hours => min(expected_hour_utc), mins => min(expected_minute_utc)) AS at,
           jsonb_object_agg(database_name, jsonb_build_object(
               'steps', '{}'::jsonb, 'staged_file_name', database_name || '.sql.gz',
               'logs_summary', null, 'problems', '[]'::jsonb)) AS sections
    FROM expected_jobs GROUP BY agent_id_responsible
) a
CROSS JOIN generate_series(CAST(:first AS timestamptz), CAST(:last AS timestamptz), interval '1 day') d
"""

ENTRIES_SQL = """
INSERT INTO backup_entries (job_id, cycle_expected_at, status, message, report_file,
                            server_calculated_staged_hash, server_calculated_staged_size,
                            server_content_fingerprint, measured_at, evaluated_at, staged_file_name)
SELECT j.id, c.t, 'SUCCESS', 'backup verified', 'history.json',
       md5(j.id::text || c.t::text) || md5(c.t::text), m.size, m.fingerprint, c.t, c.t,
       j.database_name || '.sql.gz'
FROM expected_jobs j
JOIN measured m ON m.agent_id = j.agent_id_responsible AND m.database_name = j.database_name
CROSS JOIN generate_series(CAST(:first AS timestamptz), CAST(:last AS timestamptz), interval '1 day') d
CROSS JOIN LATERAL (
    SELECT d + make_interval(hours => j.expected_hour_utc, mins => j.expected_minute_utc) AS t
) c
"""


def measured_today(root: Path) -> list[dict[str, object]]:
    """Size and content fingerprint of each staged dump, so past cycles look like today's.

    With the same content and sizes in the history, day D's decisions (SUCCESS, no HASH_MISMATCH,
    no size anomaly, no alert) are those of the 1-day run: only the history's length differs.
    """
    from backup_pipeline.adapters.staged_files import StagedFileRequest, check_staged_file

    rows = []
    for agent in sorted(p for p in root.iterdir() if (p / "database").is_dir()):
        for dump in sorted((agent / "database").iterdir()):
            check = check_staged_file(StagedFileRequest(agent, dump.name))
            database = dump.name.removesuffix(".sql.gz").removesuffix(".zst")
            rows.append({"a": agent.name, "d": database, "s": check.size, "f": check.content_fingerprint})
    return rows


def record_history(days: int, root: Path) -> tuple[float, int]:
    from backup_pipeline.config.settings import load_settings
    from backup_pipeline.storage.database import open_database

    database = open_database(load_settings())
    last = datetime.fromisoformat(DAY + "T00:00:00+00:00") - timedelta(days=1)
    first = last - timedelta(days=days - 1)
    measured = measured_today(root)
    with timed() as elapsed, database.engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TEMP TABLE measured "
                "(agent_id text, database_name text, size bigint, fingerprint text)"
            )
        )
        conn.execute(sa.text("INSERT INTO measured VALUES (:a, :d, :s, :f)"), measured)
        conn.execute(sa.text(REPORTS_SQL), {"first": first, "last": last})
        inserted = conn.execute(sa.text(ENTRIES_SQL), {"first": first, "last": last}).rowcount
    # A month of history accumulates with autovacuum keeping up; a bulk load does not. Vacuum and
    # checkpoint now, so the timed scan does not share the two cores with the load's maintenance.
    with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM (ANALYZE)"))
        conn.execute(sa.text("CHECKPOINT"))
    return elapsed(), inserted


def scan_day(work: Path, with_history: bool) -> tuple[float, float, int]:
    env, _ = prepare(work)
    run([*_cli(), "jobs", "sync", "--at", "2025-10-01T00:00:00Z"], env=env)
    inserted = 0
    if with_history:
        _, inserted = record_history(HISTORY_DAYS, work / "deposit")
    wall, _ = run([*_cli(), "scan", "--at", AT, "--partition", DAY], env=env)
    seconds = latest_run_stats().seconds
    steps = step_seconds()
    _stop_embedded_server(work / "home" / "pgdata")  # the CLI left it running: nothing else will use it
    return wall, seconds, inserted, steps


def step_seconds() -> dict[str, float]:
    """Seconds per step of the latest scan run (evaluate batches summed): where a difference lies."""
    from dagster import DagsterInstance, RunsFilter

    instance = DagsterInstance.get()
    record = instance.get_run_records(RunsFilter(job_name="backup_scan"), limit=1)[0]
    totals: dict[str, float] = {}
    for stat in instance.get_run_step_stats(record.dagster_run.run_id):
        name = stat.step_key.split("[")[0]
        totals[name] = totals.get(name, 0.0) + (stat.end_time or 0) - (stat.start_time or 0)
    return totals


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=SCRATCH / "history")
    args = parser.parse_args(argv)
    work = args.dir.resolve()
    wall_1, run_1, _, steps_1 = scan_day(work / "one_day", with_history=False)
    wall_30, run_30, inserted, steps_30 = scan_day(work / "thirty_days", with_history=True)
    for sub in ("one_day", "thirty_days"):
        shutil.rmtree(work / sub / "deposit", ignore_errors=True)
    report = Report("history: a day's scan with 30 days of history vs 1 day")
    report.add("1 day: scan, Dagster run", run_1, "s", note=f"whole command {wall_1:.1f} s")
    report.add(
        "30 days: scan, Dagster run",
        run_30,
        "s",
        note=f"whole command {wall_30:.1f} s, {inserted} past entries",
    )
    report.add("ratio 30 days / 1 day", run_30 / run_1, "x", target="<= 1.2", met=run_30 / run_1 <= 1.2)
    report.add("ratio, whole commands", wall_30 / wall_1, "x")
    for step in sorted(steps_1, key=lambda k: -steps_1[k]):
        if step in steps_30:
            note = f"{steps_1[step]:.1f} s → {steps_30[step]:.1f} s (steps summed)"
            ratio = steps_30[step] / max(steps_1[step], 1e-3)
            report.add(f"step {step}: 30 days / 1 day", ratio, "x", note=note)
    report.print()
    os.environ.pop("DAGSTER_HOME", None)
    return report


if __name__ == "__main__":
    main()
