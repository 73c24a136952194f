"""The simulator against the scanner, end to end through the CLI: every cycle the simulator meant
to produce ends as exactly one entry with the status it intended, and a scan leaves staged dumps alone
while archiving every report."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backup_pipeline.app.simulator import FAULTS
from backup_pipeline_tests.conftest import Workspace

# Late enough in the day that every simulated operation of the last day has ended (the latest
# expected time is 22:45, ending at most 25 min later), and the scan an hour later is past every
# deadline (window 60 min).
AT = datetime(2025, 11, 21, 23, 30, tzinfo=UTC)
SCAN_AT = AT + timedelta(hours=1)
DAYS = 3

# Which columns may legitimately change when the very same scan runs again.
RUN_COLUMNS = {"dagster_run_id", "updated_at"}
# With this seed, every combination below gets every fault kind the simulator knows (checked in the
# test, so a change of the simulator's randomness cannot silently make the test vacuous).
SEED = 7
ALL_FAULTS = {*FAULTS, "no_report", "invalid_report"}


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _simulated_days() -> list[date]:
    return [AT.date() - timedelta(days=offset) for offset in range(DAYS - 1, -1, -1)]


def _agent_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name != "incoming_tmp")


def _snapshot(paths: list[Path]) -> dict[str, tuple[str, int]]:
    return {str(p): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in paths}


def _staged_dumps(root: Path) -> list[Path]:
    return sorted(
        p
        for folder in _agent_folders(root)
        for sub in ("database", "databases")
        for p in folder.glob(f"{sub}/*")
    )


def _report_hashes(folder: Path) -> Counter[str]:
    return Counter(hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*.json") if p.is_file())


def _simulate(ws: Workspace, monkeypatch: pytest.MonkeyPatch, *args: str) -> list[dict[str, Any]]:
    ws.cli("simulate", "--root", str(ws.root), "--at", _iso(AT), *args)
    jobs_file = ws.root / "jobs.yaml"  # the simulator's default: DIR/jobs.yaml
    assert jobs_file.is_file()
    monkeypatch.setenv("BACKUP_PIPELINE_JOBS_FILE", str(jobs_file))
    outcomes = json.loads((ws.root / "expected_outcomes.json").read_text())
    assert outcomes, "the simulator produced no cycle"
    return outcomes


def _scan(ws: Workspace) -> None:
    partitions = [arg for day in _simulated_days() for arg in ("--partition", day.isoformat())]
    ws.cli("scan", "--at", _iso(SCAN_AT), *partitions)


def _mismatches(outcomes: list[dict[str, Any]], entries: list[dict[str, Any]]) -> list[str]:
    by_cycle: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for entry in entries:
        key = (entry["agent_id"], entry["database_name"], entry["cycle_expected_at"])
        by_cycle.setdefault(key, []).append(entry)
    problems = []
    for expected in outcomes:
        key = (expected["agent_id"], expected["database_name"], expected["cycle_expected_at"])
        found = by_cycle.get(key, [])
        if len(found) != 1:
            problems.append(f"{key} (fault {expected['fault']}): {len(found)} entries")
        elif found[0]["status"] != expected["expected_status"]:
            problems.append(
                f"{key} (fault {expected['fault']}): expected {expected['expected_status']}, "
                f"got {found[0]['status']}: {found[0]['message']}"
            )
    return problems


@pytest.mark.parametrize("style", ["canonical", "field", "mixed"])
@pytest.mark.parametrize("compression", ["gz", "zst"])
def test_every_simulated_cycle_gets_its_expected_status(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch, compression: str, style: str
) -> None:
    ws = workspace
    outcomes = _simulate(
        ws,
        monkeypatch,
        *("--agents", "4", "--databases", "4", "--days", str(DAYS), "--faults", "0.35"),
        *("--seed", str(SEED), "--compression", compression, "--style", style),
    )
    faults = {o["fault"] for o in outcomes} - {None}
    assert faults == ALL_FAULTS, f"seed {SEED} no longer produces every fault kind: pick another"
    extension = ".zst" if compression == "zst" else ".sql.gz"
    dumps = _staged_dumps(ws.root)
    assert dumps and all(p.name.endswith(extension) for p in dumps)
    dumps_before = _snapshot(dumps)
    reports_before = {folder.name: _report_hashes(folder / "log") for folder in _agent_folders(ws.root)}
    stray = ws.root / "incoming_tmp" / "log" / "notes.json"  # an invalid agent folder: never touched
    stray_before = _snapshot([stray])

    _scan(ws)

    entries = ws.json("entries")
    problems = _mismatches(outcomes, entries)
    assert not problems, "\n".join(problems)
    keys = [(e["agent_id"], e["database_name"], e["cycle_expected_at"]) for e in entries]
    assert len(keys) == len(set(keys)), "two entries for one cycle"

    # Staged dumps are never moved, rewritten or touched.
    assert _staged_dumps(ws.root) == dumps
    assert _snapshot(dumps) == dumps_before
    assert _snapshot([stray]) == stray_before

    # Every report (valid or not) is in log/_archive/ with its content, and none is left in log/.
    for folder in _agent_folders(ws.root):
        log = folder / "log"
        assert [p.name for p in log.iterdir()] == ["_archive"], f"files left in {log}"
        assert _report_hashes(log / "_archive") == reports_before[folder.name]
    reports = ws.json("reports")
    assert len(reports) == sum(sum(c.values()) for c in reports_before.values())
    assert all(r["archived_path"] for r in reports)
    invalid = {(o["agent_id"], o["cycle_expected_at"]) for o in outcomes if o["fault"] == "invalid_report"}
    assert sum(not r["accepted"] for r in reports) == len(invalid)

    # The very same scan again changes nothing: same entries, updated in place, no duplicates.
    _scan(ws)
    again = ws.json("entries")
    assert _stable(again) == _stable(entries)
    assert _snapshot(dumps) == dumps_before
    assert ws.json("reports") == reports

    # Nor does an automatic scan (no --partition) at the same instant: nothing new to judge.
    ws.cli("scan", "--at", _iso(SCAN_AT))
    assert _stable(ws.json("entries")) == _stable(entries)


def _stable(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if k not in RUN_COLUMNS} for e in entries]
