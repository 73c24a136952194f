"""The simulator's real dumps against the drills, end to end through the CLI: pg_dump and mariadb-dump
output of small real databases, plain, custom and MariaDB's, gzip and zstd, with every restore-drill
failure kind; the scan
gives each cycle its intended status, and drilling every good cycle in order gives each the drill
outcome the simulator meant (`expected_drill`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from backup_pipeline.app.simulator import DRILL_FAULTS
from backup_pipeline_tests.conftest import Workspace

AT = datetime(2025, 11, 21, 23, 30, tzinfo=UTC)
DAYS = 3
SEED = 8  # gives every drill failure kind (checked below, so the test cannot turn vacuous)


def simulate(ws: Workspace, monkeypatch: pytest.MonkeyPatch, compression: str) -> list[dict[str, Any]]:
    ws.cli(
        "simulate", "--root", str(ws.root), "--at", AT.strftime("%Y-%m-%dT%H:%M:%SZ"), "--agents", "2",
        "--databases", "3", "--days", str(DAYS), "--size", "4096", "--seed", str(SEED),
        "--dumps", "real", "--drill-faults", "0.7", "--compression", compression,
    )  # fmt: skip
    monkeypatch.setenv("BACKUP_PIPELINE_JOBS_FILE", str(ws.root / "jobs.yaml"))
    return json.loads((ws.root / "expected_outcomes.json").read_text())


@pytest.mark.slow
def test_drilling_every_simulated_cycle_in_order_gives_the_intended_outcome(
    drill_workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = drill_workspace
    outcomes = simulate(ws, monkeypatch, "zst")
    assert {o["drill_fault"] for o in outcomes} - {None} == set(DRILL_FAULTS)
    assert {o["dump_format"] for o in outcomes} == {"plain", "custom", "mariadb"}  # .ci/run installs MariaDB
    days = sorted({o["cycle_expected_at"][:10] for o in outcomes})
    ws.cli(
        "scan", "--at", (AT + timedelta(hours=1)).isoformat(), *[a for d in days for a in ("--partition", d)]
    )
    entries = {(e["agent_id"], e["database_name"], e["cycle_expected_at"]): e for e in ws.entries()}
    assert {k: entries[k]["status"] for k in entries} == {
        (o["agent_id"], o["database_name"], o["cycle_expected_at"]): o["expected_status"] for o in outcomes
    }

    found: dict[tuple[str, str, str], str] = {}
    for agent, cycle in sorted(
        {(o["agent_id"], o["cycle_expected_at"]) for o in outcomes}, key=lambda p: p[1]
    ):
        for row in ws.json("drill", "--agent", agent, "--cycle", cycle):
            outcome = "RESTORE_SHRANK" if row["shrank"] else row["outcome"]
            found[(row["agent_id"], row["database_name"], row["cycle_expected_at"])] = outcome
    expected = {
        (o["agent_id"], o["database_name"], o["cycle_expected_at"]): o["expected_drill"]
        for o in outcomes
        if o["expected_drill"]
    }
    mismatches = {k: (expected[k], found.get(k)) for k in expected if found.get(k) != expected[k]}
    assert not mismatches, mismatches
