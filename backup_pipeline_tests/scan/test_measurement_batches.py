"""Staged files are measured by their own steps, in batches sized by bytes, before the evaluation of
whole agents reuses the measurements: one agent's many dumps spread over several steps, and the
verdicts do not depend on how the work was split."""

from __future__ import annotations

import os
from typing import Any

import pytest
import sqlalchemy as sa
from dagster import DagsterInstance, ExecuteInProcessResult

from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.dagster_runs import run_scan_job
from backup_pipeline_tests.support.deposit_builder import Agent, gz, utc, zst

BIG = "SIRPACAM_DOUALA_NEWBELL"  # many dumps
SMALL = "SOCIA_BLU_GARE_4"
DAY, AT = "2025-11-21", "2025-11-21T23:00:00Z"
DUMP = 200_000  # bytes of incompressible content: each staged file is about this size


def write_fleet(workspace: Workspace) -> None:
    jobs = [(BIG, f"db_{i}") for i in range(6)] + [(SMALL, "compta_db")]
    workspace.write_jobs(
        [
            {"agent_id": a, "database_name": d, "expected_hour_utc": 13, "expected_minute_utc": 0}
            for a, d in jobs
        ]
    )
    workspace.cli("backups", "sync", "--at", "2025-11-20T00:00:00Z")
    big, small = Agent(workspace.root, BIG), Agent(workspace.root, SMALL)
    sections = {}
    for i in range(6):
        packed = zst(os.urandom(DUMP)) if i % 2 else gz(os.urandom(DUMP))
        name = f"db_{i}.{'zst' if i % 2 else 'sql.gz'}"
        big.stage(name, packed)
        # db_4's dump was damaged after the agent hashed it: the measurement must say so
        sections[f"db_{i}"] = big.database_section(name, packed, agent_hash="00" * 32 if i == 4 else None)
    big.report(utc(f"{DAY}T13:05:00Z"), sections)
    small.backup(utc(f"{DAY}T13:04:00Z"), "compta_db", os.urandom(DUMP))


def scan(monkeypatch: pytest.MonkeyPatch, batch_bytes: int, **config: Any) -> ExecuteInProcessResult:
    monkeypatch.setenv("BACKUP_PIPELINE_MEASURE_BATCH_BYTES", str(batch_bytes))
    with DagsterInstance.ephemeral() as instance:
        result = run_scan_job(DAY, AT, instance, **config)
    assert result.success
    return result


def outputs(result: ExecuteInProcessResult, node: str) -> list[Any]:
    if node == "plan_evaluation":  # its measurement batches: none at all when nothing was spread
        steps = {e.step_key for e in result.all_events if e.is_step_success}
        if not any(s.startswith("measure_staged_files[") for s in steps):
            return []
    found = result.output_for_node(node, "measurements" if node == "plan_evaluation" else "result")
    return list(found.values()) if isinstance(found, dict) else [found]


def entries(workspace: Workspace) -> list[tuple[Any, ...]]:
    keys = ("agent_id", "database_name", "status", "message", "server_calculated_staged_hash", "measured_at")
    return sorted(tuple(e[k] for k in keys) for e in workspace.entries())


def pending_measurements(workspace: Workspace) -> int:
    engine = sa.create_engine(workspace.database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM staged_file_measurements")).scalar_one()
    finally:
        engine.dispose()


def test_one_agents_dumps_are_measured_in_several_steps_and_evaluation_reuses_them(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_fleet(workspace)

    result = scan(monkeypatch, batch_bytes=2 * DUMP)

    batches = outputs(result, "plan_evaluation")
    assert len(batches) == 4  # 7 files of ~DUMP bytes at 2 x DUMP a step: ceil(3.5)
    assert sorted(len(b.files) for b in batches) == [1, 2, 2, 2]
    assert len([b for b in batches if any(f.agent_id == BIG for f in b.files)]) >= 3
    measured = outputs(result, "measure_staged_files")
    assert sum(m.files for m in measured) == sum(m.stored for m in measured) == 7
    # The evaluation, in batches of whole agents, measured nothing itself.
    assert [b.measured_files for b in outputs(result, "evaluate")] == [0, 0]
    statuses = {(a, d): s for a, d, s, *_ in entries(workspace)}
    assert statuses == {(BIG, f"db_{i}"): "SUCCESS" for i in range(6) if i != 4} | {
        (BIG, "db_4"): "TRANSFER_INTEGRITY_FAILED",
        (SMALL, "compta_db"): "SUCCESS",
    }
    assert pending_measurements(workspace) == 0  # the entries hold them now


def test_verdicts_do_not_depend_on_how_measurement_was_split(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_fleet(workspace)
    scan(monkeypatch, batch_bytes=1, automatic=True)  # one file per step
    split = entries(workspace)

    # The same day re-evaluated with a re-hash: the reports claim less than one step's worth, so
    # there is no measurement step and the evaluation measures every file itself, as it always did.
    result = scan(monkeypatch, batch_bytes=10**12, rehash=True)
    assert outputs(result, "plan_evaluation") == []
    assert sum(b.measured_files for b in outputs(result, "evaluate")) == 7
    assert entries(workspace) == split
