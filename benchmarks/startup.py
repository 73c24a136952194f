"""Start-up: the CPU a process spends loading the product, against Dagster alone.

Every command, code server, run worker and step process pays it, so it sets the floor of a command's
time and of a test suite that starts hundreds of them. Each figure is the median CPU time (user +
system, the process and its children) of `--repeat` fresh interpreters:

- reference: `import dagster`, the framework alone;
- the code location as a code server loads it (`import backup_pipeline.definitions`);
- the same with Python's garbage-collector defaults, without the product's settings of it
  (`backup_pipeline/__init__.py`: rarer young collections, everything frozen at exit), to show what
  they save;
- `backup-pipeline --help`, the shell alone.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.common import PYTHON, ROOT, Report

CLI = str(Path(sys.executable).parent / "backup-pipeline")

CASES = {
    "reference: import dagster": [PYTHON, "-c", "import dagster"],
    "import backup_pipeline.definitions": [PYTHON, "-c", "import backup_pipeline.definitions"],
    "the same, Python's collector defaults": [
        PYTHON, "-c", "import atexit, gc, backup_pipeline; gc.set_threshold(700); "
        "atexit.unregister(gc.freeze); import backup_pipeline.definitions",
    ],
    "backup-pipeline --help": [CLI, "--help"],
}  # fmt: skip


def cpu_seconds(command: list[str]) -> float:
    """User + system CPU of one run of `command` and whatever it started."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, env=dict(os.environ))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    for command in CASES.values():  # warm the page cache and write any missing bytecode first
        cpu_seconds(command)
    medians = {}
    for _ in range(args.repeat):  # interleaved, so that a busy moment of the machine hits every case
        for name, command in CASES.items():
            medians.setdefault(name, []).append(cpu_seconds(command))
    figures = {name: statistics.median(runs) for name, runs in medians.items()}
    reference = figures["reference: import dagster"]
    report = Report(f"start-up: median CPU of {args.repeat} fresh processes")
    for name, value in figures.items():
        report.add(name, value, "s")
    loaded = figures["import backup_pipeline.definitions"]
    report.add(
        "definitions / reference", loaded / reference, "x", target="<= 1.5", met=loaded / reference <= 1.5
    )
    report.add(
        "saved by the collector settings", figures["the same, Python's collector defaults"] - loaded, "s"
    )
    report.print()
    return report


if __name__ == "__main__":
    main()
