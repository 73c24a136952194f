"""Run every benchmark: `python -m benchmarks [fleet bytes events history sensor code_location scrape
celery drills archive bomb mariadb_drills startup]`.

Prints each benchmark's table and writes all figures, with the machine's description, to
benchmarks/out/results.json. Scratch data goes to benchmarks/out/ (or BENCH_SCRATCH); it is
gitignored and reused where that is safe (the bytes benchmark keeps its 4 GiB of dumps).
"""

from __future__ import annotations

import importlib
import json
import sys

from benchmarks.common import SCRATCH, machine, write_results

ALL = [
    "fleet", "bytes", "events", "history", "sensor", "code_location", "scrape", "celery", "drills", "archive",
    "bomb", "mariadb_drills", "startup",
]  # fmt: skip


def main(argv: list[str]) -> None:
    names = argv or ALL
    unknown = [n for n in names if n not in ALL]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; choose from {ALL}")
    print("machine:", json.dumps(machine()))
    reports = [importlib.import_module(f"benchmarks.{name}").main([]) for name in names]
    path = SCRATCH / "results.json"
    write_results(reports, path)
    missed = [f"{r.benchmark}: {f.name}" for r in reports for f in r.figures if f.met is False]
    print(f"\nresults written to {path}")
    print("every target met" if not missed else "targets missed:\n  " + "\n  ".join(missed))


if __name__ == "__main__":
    main(sys.argv[1:])
