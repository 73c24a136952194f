"""Helpers shared by the benchmarks: timing, peak memory, a scratch workspace, result printing."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = Path(os.environ.get("BENCH_SCRATCH", ROOT / "benchmarks" / "out"))
PYTHON = sys.executable


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None
    note: str = ""


@dataclass
class Report:
    benchmark: str
    figures: list[Figure] = field(default_factory=list)

    def add(
        self, name: str, value: float, unit: str, target: str = "", met: bool | None = None, note: str = ""
    ) -> None:
        self.figures.append(Figure(name, value, unit, target, met, note))

    def print(self) -> None:
        print(f"\n== {self.benchmark}")
        width = max(len(f.name) for f in self.figures)
        for f in self.figures:
            verdict = "" if f.met is None else ("  OK" if f.met else "  MISSED")
            target = f"  (target {f.target})" if f.target else ""
            note = f"  — {f.note}" if f.note else ""
            print(f"  {f.name:<{width}}  {f.value:>12.3f} {f.unit}{target}{verdict}{note}")

    def as_json(self) -> dict[str, Any]:
        return {"benchmark": self.benchmark, "figures": [f.__dict__ for f in self.figures]}


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    with suppress(OSError, ValueError, IndexError):
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


@contextmanager
def timed() -> Iterator[Callable[[], float]]:
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())


def run(command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[float, str]:
    """Run a command, return (wall seconds, stdout); raise with its output when it fails."""
    start = time.perf_counter()
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return elapsed, result.stdout


def peak_rss_mib_children() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def write_results(reports: list[Report], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": machine(), "results": [r.as_json() for r in reports]}, indent=1))
