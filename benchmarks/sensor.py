"""Sensor: one tick of the deposit sensor on a tree of 1,000 agent folders.

The tree is simulated (one new report per agent, 20 staged dumps each). Times one tick that finds
everything new, one tick that finds nothing new, and as the reference `find` listing the same
report files in the same run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from benchmarks.common import SCRATCH, Report, run, timed

AGENTS = 1000


def build(work: Path) -> Path:
    root = work / "deposit"
    if not (root / "expected_outcomes.json").exists():
        if work.exists():
            shutil.rmtree(work)
        command = [
            str(Path(sys.executable).parent / "backup-pipeline"), "simulate", "--root", str(root),
            "--agents", str(AGENTS), "--databases", "20", "--size", "256", "--at", "2025-11-21T23:59:00Z",
        ]  # fmt: skip
        run(command)
    return root


def tick(root: Path, cursor: str | None) -> tuple[float, object]:
    from dagster import DagsterInstance, build_sensor_context

    from backup_pipeline.config.settings import load_settings
    from backup_pipeline.defs import build_definitions
    from backup_pipeline.defs.automation import DEPOSIT_SENSOR

    settings = load_settings().model_copy(update={"storage_root": root, "jobs_file": root / "jobs.yaml"})
    definitions = build_definitions(settings)
    sensor = definitions.resolve_sensor_def(DEPOSIT_SENSOR)
    with DagsterInstance.ephemeral() as instance:
        context = build_sensor_context(
            instance=instance, cursor=cursor, definitions=definitions, resources={"settings": settings}
        )
        with timed() as elapsed:
            result = sensor.evaluate_tick(context)
        return elapsed(), result


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=SCRATCH / "sensor")
    args = parser.parse_args(argv)
    root = build(args.dir.resolve())
    os.environ["BACKUP_STORAGE_ROOT"] = str(root)
    first, result = tick(root, None)
    requests = len(result.run_requests or [])
    idle, idle_result = tick(root, result.cursor)
    reference, _ = run(["find", str(root), "-mindepth", "3", "-maxdepth", "3", "-path", "*/log/*.json"])
    report = Report(f"sensor: one tick on {AGENTS} agent folders")
    report.add(
        "tick, every report new", first, "s", target="<= 1", met=first <= 1, note=f"{requests} run request(s)"
    )
    report.add(
        "tick, nothing new", idle, "s", target="<= 1", met=idle <= 1, note=str(idle_result.skip_message)
    )
    report.add("reference: find over the same files", reference, "s")
    report.add("tick vs find", first / reference, "x")
    report.print()
    return report


if __name__ == "__main__":
    main()
