"""Issue 5: a scan killed (SIGKILL) at any boundary converges on the next scan, as if never interrupted.

A small fleet (3 agents, 7 jobs, 2 days, gzip and zstd, successes, failures, a tampered dump, an
invalid report, an archive name clash, and a late report that turns yesterday's MISSING into a
SUCCESS) is scanned once; then new reports land and an automatic scan is killed at one boundary,
followed by a normal scan. The result must equal an uninterrupted control run on an identical deposit:
every report file exists exactly once (log/ or _archive/), is recorded once, every due cycle has
exactly one entry, and no status, message or job state differs.

The kill comes from a prelude that monkeypatches one product function in the scan's own process
(see scan_harness.py): no fault hook exists in the product.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from backup_pipeline_tests.support.deposit_builder import Agent, gz, utc
from backup_pipeline_tests.support.fleet import (
    A1,
    AT,
    D1,
    D2,
    Stage,
)
from backup_pipeline_tests.support.scan_harness import (
    ScanEnv,
    assert_converged,
    kill_at,
    ok,
    run_cli,
)


@pytest.fixture
def checked_control(control: dict[str, Any]) -> dict[str, Any]:
    """The uninterrupted run, with the report clash it must have kept."""
    assert len(control["reports"]) == 8
    assert sum(1 for p in control["files"] if p.endswith(".dup1.json")) == 1  # the clash kept both
    return control


# Where the scan dies: each boundary of the three phases. The automatic scan runs two partitions, D1
# (named by the late report) then D2, and only its last run archives; `nth` picks the run.
REPORTS = "backup_pipeline.storage.reports"
ENTRIES = "backup_pipeline.storage.entries"
DEFINITIONS = "backup_pipeline.defs.scan_job"
FAULTS = {
    "ingest-before-commit": kill_at(f"{REPORTS}:record_reports", when="before"),
    "ingest-after-commit": kill_at(f"{REPORTS}:record_reports"),
    "evaluate-while-hashing": kill_at("backup_pipeline.scan.evaluate:check_many", when="before"),
    "measure-while-hashing": kill_at("backup_pipeline.scan.measure:check_many", when="before"),
    "measured-not-evaluated": kill_at(f"{DEFINITIONS}:measure_batch"),
    "evaluate-written-not-committed": kill_at(f"{ENTRIES}:upsert_entries"),
    "evaluate-after-batch-1-commit": kill_at(f"{DEFINITIONS}:evaluate_batch", nth=1),
    "evaluate-after-batch-2-commit": kill_at(f"{DEFINITIONS}:evaluate_batch", nth=2),
    "after-last-commit-before-archive": kill_at(f"{DEFINITIONS}:archive", when="before"),
    "archive-linked-not-unlinked": kill_at("os:link", nth=2, only_if=".json"),
    "archive-two-moved-none-marked": kill_at("os:unlink", nth=2, only_if=".json"),
    "archive-all-moved-none-marked": kill_at(f"{REPORTS}:mark_archived", when="before"),
    "after-archive-before-notify": kill_at(f"{DEFINITIONS}:notify", nth=2, when="before"),
    "second-partition-after-ingest": kill_at(f"{REPORTS}:record_reports", nth=2),
    "second-partition-before-evaluate": kill_at(f"{DEFINITIONS}:evaluate_batch", nth=4, when="before"),
}


@pytest.mark.slow
@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_scan_killed_at_any_boundary_converges_on_the_next_scan(
    stage: Stage, checked_control: dict[str, Any], fault: str
) -> None:
    # The stage's dumps are small: the evaluation measures them itself unless told to spread them.
    env = stage.restore(
        **({"BACKUP_PIPELINE_MEASURE_BATCH_BYTES": "1"} if fault.startswith("measure") else {})
    )
    try:
        killed = run_cli(env, "scan", "--at", AT, prelude=FAULTS[fault])
        assert killed.returncode == -9, f"the fault never fired:\n{killed.stdout}\n{killed.stderr}"
        ok(run_cli(env, "scan", "--at", AT))
        assert_converged(env, checked_control)
    finally:
        stage.discard(env)


# ---------------------------------------------------------------- files still being written

ONE_JOB = [{"agent_id": A1, "database_name": "compta_db", "expected_hour_utc": 13, "expected_minute_utc": 0}]


def test_a_staged_file_still_being_uploaded_is_not_judged_until_it_settles(
    workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report landed, the dump is still growing: no verdict (and no stored measurement) yet."""
    monkeypatch.setenv("BACKUP_PIPELINE_SETTLE_SECONDS", "300")
    workspace.write_jobs(ONE_JOB)
    agent = Agent(workspace.root, A1)
    whole = gz(os.urandom(64 * 1024))
    staged = agent.stage("compta_db.sql.gz", whole[: len(whole) // 2])  # half uploaded, modified just now
    section = agent.database_section(staged.name, whole)
    report = agent.report(utc(f"{D2}T13:05:00Z"), {"compta_db": section})
    workspace.cli("scan", "--at", AT, "--partition", D2)
    assert workspace.entries() == [], "judged while still being written"
    assert [r["file_name"] for r in workspace.json("reports")] == [report.name]

    staged.write_bytes(whole)  # the upload completes; a verdict no longer waits for it to settle
    workspace.cli("scan", "--at", AT, "--partition", D2)
    (entry,) = workspace.entries()
    assert entry["status"] == "SUCCESS", entry["message"]


def test_a_staged_file_that_stopped_changing_is_judged_even_if_incomplete(
    workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKUP_PIPELINE_SETTLE_SECONDS", "300")
    workspace.write_jobs(ONE_JOB)
    agent = Agent(workspace.root, A1)
    agent.backup(utc(f"{D2}T13:05:00Z"), "compta_db", os.urandom(4096))
    staged = agent.folder / "database" / "compta_db.sql.gz"
    staged.write_bytes(staged.read_bytes()[:1000])
    settled = utc(f"{D2}T13:05:00Z").timestamp()
    os.utime(staged, (settled, settled))  # truncated long ago: the transfer broke, it will not grow
    workspace.cli("scan", "--at", AT, "--partition", D2)
    (entry,) = workspace.entries()
    assert entry["status"] == "TRANSFER_INTEGRITY_FAILED"
    assert "size differs" in entry["message"]


def test_a_late_report_after_its_staged_file_was_replaced_by_the_next_cycle(workspace) -> None:
    """docs/design.md §5 rule 3, in the order it happens: the next cycle's dump and report are scanned
    first; the previous cycle's report arrives afterwards and can only be told that its own file
    was overwritten (test_scan_deposit.py checks the same rule with both reports present at once)."""
    workspace.write_jobs(ONE_JOB)
    workspace.cli("jobs", "sync", "--at", "2025-11-20T00:00:00Z")
    agent = Agent(workspace.root, A1)
    monday, tuesday = gz(b"monday\n" * 500), gz(b"tuesday\n" * 500)
    agent.stage("compta_db.sql.gz", tuesday)
    agent.report(utc(f"{D2}T13:05:00Z"), {"compta_db": agent.database_section("compta_db.sql.gz", tuesday)})
    workspace.cli("scan", "--at", AT)
    assert workspace.entry(A1, "compta_db", f"{D1}T13:00:00Z")["status"] == "MISSING"
    assert workspace.entry(A1, "compta_db", f"{D2}T13:00:00Z")["status"] == "SUCCESS"

    late = agent.report(
        utc(f"{D1}T13:05:00Z"), {"compta_db": agent.database_section("compta_db.sql.gz", monday)}
    )
    workspace.cli("scan", "--at", "2025-11-21T15:00:00Z")
    entry = workspace.entry(A1, "compta_db", f"{D1}T13:00:00Z")
    assert entry["status"] == "TRANSFER_INTEGRITY_FAILED"
    assert entry["report_file"] == late.name
    assert f"matches the later report {D2.replace('-', '')}_130500_{A1}.json" in entry["message"]
    assert workspace.entry(A1, "compta_db", f"{D2}T13:00:00Z")["status"] == "SUCCESS"


# ---------------------------------------------------------------- reports found by a scan's last run


def test_reports_found_by_the_last_run_of_a_scan_wait_for_the_days_they_bear_on(workspace, tmp_path) -> None:
    """A late report lands while a scan runs (named at its upload, on D3; its operation ended on D1).
    The scan planned D3 alone, and that run records the report: it must not archive it before the
    scan's next runs evaluate D1. Killed right after the D3 run, the next scan still finds the report
    in log/ and turns D1's MISSING into a SUCCESS."""
    d3 = "2025-11-22"
    workspace.write_jobs(ONE_JOB)
    workspace.cli("jobs", "sync", "--at", f"{D1}T00:00:00Z")
    workspace.cli("scan", "--at", f"{D2}T14:30:00Z")
    assert workspace.entry(A1, "compta_db", f"{D1}T13:00:00Z")["status"] == "MISSING"

    agent = Agent(workspace.root, A1)
    dump = gz(b"the D1 dump, uploaded late\n" * 200)
    agent.stage("compta_db.sql.gz", dump)
    section = {"compta_db": agent.database_section("compta_db.sql.gz", dump)}
    upload = agent.report(utc(f"{D1}T13:05:00Z"), section, name=f"20251122_090000_{A1}.json")
    held = tmp_path / upload.name
    upload.rename(held)  # it lands only once the scan has planned its days (see the prelude)
    arrives = f"""
import os as _arrival_os
def _arrive():
    _arrival_os.rename({str(held)!r}, {str(upload)!r})
"""
    prelude = (
        arrives
        + kill_at(f"{DEFINITIONS}:ingest", nth=2, when="before")
        + f"_sabotage({DEFINITIONS + ':ingest'!r}, 1, 'before', _arrive)\n"
    )
    killed = run_cli(ScanEnv.of(workspace), "scan", "--at", f"{d3}T14:30:00Z", prelude=prelude)
    assert killed.returncode == -9, f"the scan was not killed:\n{killed.stdout}\n{killed.stderr}"
    assert upload.exists(), "the report left log/ before the day it bears on was evaluated"

    ok(run_cli(ScanEnv.of(workspace), "scan", "--at", f"{d3}T14:30:00Z"))
    entry = workspace.entry(A1, "compta_db", f"{D1}T13:00:00Z")
    assert entry["status"] == "SUCCESS", entry["message"]
    assert entry["report_file"] == upload.name
    assert not upload.exists() and (agent.archive / upload.name).exists()
