"""Archive: moving reports into an agent's log/_archive/ costs the same with 100,000 archived reports as
with none.

Archiving used to list the whole `_archive/` folder for every report (0.09 ms per report with it
empty, 97 ms with 100,000 files in it: an agent's 25,000 junk reports made a 157 s scan). It now
looks up the report's own name and its clash copies only. This benchmark archives the same reports,
as a scan's archive phase does (check the file still holds what was recorded, then move it), into an
empty archive and into one holding 100,000 reports, in the same run, and prints the ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path

from benchmarks.common import SCRATCH, Report, timed

AGENT = "SIRPACAM_DOUALA_NEWBELL"
ARCHIVED = 100_000
REPORTS = 2_000


def agent_folder(root: Path, archived: int) -> Path:
    """An agent folder whose log/_archive/ holds `archived` reports (kept between runs)."""
    folder = root / f"archived_{archived}" / AGENT
    archive = folder / "log" / "_archive"
    done = archive.parent / ".built"
    if not done.exists():
        if folder.exists():
            shutil.rmtree(folder)
        archive.mkdir(parents=True)
        for n in range(archived):
            (archive / f"2024{n:010d}_{AGENT}.json").write_bytes(b"{}")
        done.touch()
    return folder


def deposit_reports(folder: Path) -> list[tuple[str, str]]:
    """Fresh reports in log/ (names no archived report has): (name, content hash)."""
    log = folder / "log"
    for leftover in log.glob("20251121_*.json"):
        leftover.unlink()
    for leftover in (log / "_archive").glob("20251121_*.json"):
        leftover.unlink()
    reports = []
    for n in range(REPORTS):
        name = f"20251121_{n:06d}_{AGENT}.json"
        content = json.dumps({"agent_id": AGENT, "n": n}).encode()
        (log / name).write_bytes(content)
        reports.append((name, hashlib.sha256(content).hexdigest()))
    return reports


def archive_all(folder: Path, reports: list[tuple[str, str]]) -> float:
    from backup_pipeline.adapters.deposit import AgentFolder, archive_report, holds_report

    agent = AgentFolder(AGENT, folder)
    with timed() as elapsed:
        for name, digest in reports:
            assert holds_report(agent, name, name, digest, archived=False)
            assert archive_report(agent, name, digest) is not None
    return elapsed()


def bare_moves(folder: Path) -> float:
    """The reference: the file system's own cost of the same moves (look the name up in the archive,
    hard-link it there, unlink it from log/), with no check at all."""
    log, archive = folder / "log", folder / "log" / "_archive"
    names = [name for name, _ in deposit_reports(folder)]
    with timed() as elapsed:
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.lstat(archive / name)
            os.link(log / name, archive / name)
            os.unlink(log / name)
    return elapsed()


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=SCRATCH / "archive")
    args = parser.parse_args(argv)
    root = args.dir.resolve()
    empty, full = agent_folder(root, 0), agent_folder(root, ARCHIVED)
    times: dict[int, list[float]] = {0: [], ARCHIVED: []}
    bare: dict[int, list[float]] = {0: [], ARCHIVED: []}
    for _ in range(5):  # alternated, so that the machine's load weighs on both alike
        for archived, folder in ((0, empty), (ARCHIVED, full)):
            times[archived].append(archive_all(folder, deposit_reports(folder)))
            bare[archived].append(bare_moves(folder))
    best = {k: min(v) for k, v in times.items()}
    reference = {k: min(v) for k, v in bare.items()}
    per_empty, per_full = best[0] / REPORTS * 1000, best[ARCHIVED] / REPORTS * 1000
    ratio = best[ARCHIVED] / best[0]
    report = Report(f"archive: {REPORTS} reports moved into log/_archive/, best of 5")
    report.add("per report, empty archive", per_empty, "ms")
    report.add(f"per report, {ARCHIVED:,} archived reports", per_full, "ms")
    report.add(f"{ARCHIVED:,} archived / empty", ratio, "x", target="<= 1.2", met=ratio <= 1.2)
    report.add(
        f"reference: bare lookup + link + unlink, {ARCHIVED:,} / empty",
        reference[ARCHIVED] / reference[0],
        "x",
        note=f"{reference[0] / REPORTS * 1e3:.3f} vs {reference[ARCHIVED] / REPORTS * 1e3:.3f} ms per report",
    )
    with timed() as listing:
        files = len(os.listdir(full / "log" / "_archive"))
    before = "what every report cost before"
    report.add("reference: one listing of the full archive", listing() * 1000, "ms", note=before)
    report.add("files in the full archive", float(files), "files")
    report.print()
    return report


if __name__ == "__main__":
    main()
