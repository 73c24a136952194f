"""Code location: `dagster definitions validate` with a jobs file of 1,000 agents × 20 databases.

Times, as whole commands: validating the code location with the 20,000-job file (one asset per
agent above BACKUP_PIPELINE_PER_DATABASE_ASSETS_MAX), the same forced to one asset per database,
and as the reference the same command on a 20-job file (what Dagster itself costs).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

import yaml

from benchmarks.common import ROOT, SCRATCH, Report, run

AGENTS, DATABASES = 1000, 20


def write_jobs(path: Path, agents: int, databases: int) -> Path:
    from backup_pipeline.app.simulator import agent_names, database_names

    jobs = [
        {"agent_id": agent, "database_name": db, "expected_hour_utc": (i % 24), "expected_minute_utc": 0}
        for i, agent in enumerate(agent_names(agents, random.Random(0)))
        for db in database_names(databases)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"jobs": jobs}, default_flow_style=None, width=200))
    return path


def validate(jobs_file: Path, home: Path, **extra: str) -> float:
    env = (
        dict(os.environ)
        | {
            "BACKUP_PIPELINE_JOBS_FILE": str(jobs_file),
            "BACKUP_PIPELINE_HOME": str(home),  # its own jobs cache: the first load parses the YAML
        }
        | extra
    )
    env.pop("DAGSTER_HOME", None)
    dagster = str(Path(sys.executable).parent / "dagster")
    elapsed, _ = run(
        [dagster, "definitions", "validate", "-w", str(ROOT / "workspace.yaml")], env=env, cwd=home
    )
    return elapsed


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=SCRATCH / "code_location")
    args = parser.parse_args(argv)
    work = args.dir.resolve()
    big = write_jobs(work / "jobs_20000.yaml", AGENTS, DATABASES)
    small = write_jobs(work / "jobs_20.yaml", 1, DATABASES)
    for home in ("home", "home_cold"):
        (work / home).mkdir(parents=True, exist_ok=True)
    (work / "home_cold" / "cache").mkdir(exist_ok=True)
    for stale in (work / "home_cold" / "cache").iterdir():
        stale.unlink()
    reference = validate(small, work / "home")
    first = validate(big, work / "home_cold")
    cached = validate(big, work / "home_cold")
    per_database = validate(big, work / "home_cold", BACKUP_PIPELINE_PER_DATABASE_ASSETS_MAX="1000000")
    report = Report(f"code location: {AGENTS * DATABASES} jobs")
    report.add("reference: 20 jobs", reference, "s")
    report.add("20,000 jobs, per-agent assets, first load", first, "s", target="< 15", met=first < 15)
    report.add("20,000 jobs, per-agent assets, jobs cache warm", cached, "s", target="< 15", met=cached < 15)
    report.add(
        "20,000 jobs forced per-database assets", per_database, "s", note="why large fleets group per agent"
    )
    report.add("ratio 20,000 / 20 jobs", cached / reference, "x")
    report.print()
    return report


if __name__ == "__main__":
    main()
