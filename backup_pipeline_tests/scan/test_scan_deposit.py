"""The deposit area end to end: rejections, archiving, untrusted names and paths, re-evaluation."""

from __future__ import annotations

import json
import os
import time

import pytest

from backup_pipeline_tests.support.deposit_builder import Agent, gz, utc

AGENT = "SIRPACAM_DOUALA_NEWBELL"
DAY = "2025-11-21"
T13 = f"{DAY}T13:00:00Z"
AT = "2025-11-21T14:30:00Z"


def job(database: str = "compta_db", **extra: object) -> dict[str, object]:
    return {
        "agent_id": AGENT,
        "database_name": database,
        "expected_hour_utc": 13,
        "expected_minute_utc": 0,
    } | extra


@pytest.fixture
def agent(workspace) -> Agent:
    workspace.write_jobs([job()])
    return Agent(workspace.root, AGENT)


def scan(workspace, at: str = AT, *partitions: str) -> None:
    args = ["scan", "--at", at]
    for p in partitions or (DAY,):
        args += ["--partition", p]
    workspace.cli(*args)


GOOD = {
    "operation_end_time": "2025-11-21T13:05:00Z",
    "agent_id": AGENT,
    "databases": {},
}
REJECTIONS = [
    ("20251121_130500_{a}.json", "{not json", "invalid JSON"),
    ("20251121_130501_{a}.json", json.dumps([1, 2]), "must be a JSON object, got array"),
    (
        "20251121_130502_{a}.json",
        json.dumps({"agent_id": AGENT, "databases": {}}),
        "operation_end_time is missing",
    ),
    (
        "20251121_130503_{a}.json",
        json.dumps(GOOD | {"databases": ["compta_db"]}),
        "databases must be an object, got array",
    ),
    ("20251121_130504_{a}.json", json.dumps(GOOD | {"agent_id": 42}), "agent_id must be a string"),
    ("20251121_130505_{a}.json", json.dumps(GOOD | {"agent_id": "OTHER_SITE_X"}), "differs from its folder"),
    ("STATUS.json", json.dumps(GOOD), "does not follow <timestamp>_<AGENT_ID>.json"),
    ("20251121_130506_OTHER_SITE_X.json", json.dumps(GOOD), "names agent 'OTHER_SITE_X'"),
    (
        "20251101_130500_{a}.json",
        json.dumps(GOOD | {"operation_end_time": "2025-11-01T13:05:00Z"}),
        "older than 7 days",
    ),
    ("20251121_130507_{a}.json", "", "empty file"),
]


def test_every_rejection_is_recorded_with_its_reason_and_archived(workspace, agent):
    old = utc("2025-11-21T13:10:00Z").timestamp()
    for name, content, _ in REJECTIONS:
        path = agent.log / name.format(a=AGENT)
        path.write_text(content)
        os.utime(path, (old, old))
    scan(workspace)
    reports = {r["file_name"]: r for r in workspace.json("reports")}
    assert len(reports) == len(REJECTIONS)
    for name, _, reason in REJECTIONS:
        record = reports[name.format(a=AGENT)]
        assert record["accepted"] is False
        assert reason in record["reason"], (name, record["reason"])
        assert record["archived_path"] and os.path.exists(record["archived_path"])
    assert not list(agent.log.glob("*.json"))
    # A rejected report named inside the window makes the cycle FAILED, not MISSING.
    entry = workspace.entry(AGENT, "compta_db", T13)
    assert entry["status"] == "FAILED"
    assert entry["message"].startswith("report invalid: ")


def test_the_same_file_twice_is_one_record(workspace, agent):
    agent.backup(utc("2025-11-21T13:05:00Z"), "compta_db", b"data")
    report = next(agent.log.glob("*.json"))
    content = report.read_bytes()
    scan(workspace)
    report.write_bytes(content)  # the agent uploads the very same report again
    scan(workspace)
    records = workspace.json("reports")
    assert len(records) == 1
    assert records[0]["archived_path"]
    assert not report.exists()
    assert len(list(agent.archive.iterdir())) == 1


def test_archive_name_clash_keeps_both_files(workspace, agent):
    end = utc("2025-11-21T13:05:00Z")
    agent.archive.mkdir(parents=True)
    agent.backup(end, "compta_db", b"data")
    name = f"{end:%Y%m%d_%H%M%S}_{AGENT}.json"
    (agent.archive / name).write_text("an older, different file with the same name")
    scan(workspace)
    archived = sorted(p.name for p in agent.archive.iterdir())
    assert set(archived) == {name, name.replace(".json", ".dup1.json")}
    assert (agent.archive / name).read_text() == "an older, different file with the same name"
    record = workspace.json("reports")[0]
    assert record["archived_path"].endswith(".dup1.json")


def test_invalid_agent_folders_are_left_untouched(workspace, agent):
    agent.backup(utc("2025-11-21T13:05:00Z"), "compta_db", b"data")
    stray = workspace.root / "lost+found" / "log"
    stray.mkdir(parents=True)
    (stray / "20251121_130500_lost+found.json").write_text("{}")
    two_parts = workspace.root / "ONLY_TWO" / "log"
    two_parts.mkdir(parents=True)
    (two_parts / "20251121_130500_ONLY_TWO.json").write_text("{}")
    scan(workspace)
    assert (stray / "20251121_130500_lost+found.json").exists()
    assert (two_parts / "20251121_130500_ONLY_TWO.json").exists()
    assert not (stray / "_archive").exists()
    assert {r["agent_id"] for r in workspace.json("reports")} == {AGENT}


@pytest.mark.parametrize(
    "staged_name",
    [
        "../../outside/secret.sql.gz",
        "/etc/secret.sql.gz",
        "C:\\Users\\x\\..\\..\\secret.sql.gz",
        "link.sql.gz",
    ],
)
def test_staged_file_names_never_leave_the_agent_folder(workspace, agent, tmp_path, staged_name):
    secret = gz(b"secret outside the deposit")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.sql.gz").write_bytes(secret)
    (agent.folder / "database").mkdir(parents=True)
    os.symlink(outside / "secret.sql.gz", agent.folder / "database" / "link.sql.gz")
    section = agent.database_section(staged_name, secret)
    agent.report(utc("2025-11-21T13:05:00Z"), {"compta_db": section})
    scan(workspace)
    entry = workspace.entry(AGENT, "compta_db", T13)
    assert entry["status"] == "TRANSFER_INTEGRITY_FAILED"
    assert entry["server_calculated_staged_hash"] is None  # nothing outside was read
    if staged_name == "link.sql.gz":
        assert "symbolic link" in entry["message"]
    else:
        assert "secret.sql.gz is absent" in entry["message"]


def test_rerunning_a_partition_after_a_window_change_updates_the_entry(workspace, agent):
    agent.backup(utc("2025-11-21T14:20:00Z"), "compta_db", b"late but inside 90 minutes")
    scan(workspace, "2025-11-21T16:00:00Z")
    first = workspace.entry(AGENT, "compta_db", T13)
    assert first["status"] == "MISSING"
    workspace.write_jobs([job(window_minutes=90)])
    scan(workspace, "2025-11-21T16:00:00Z")
    second = workspace.entry(AGENT, "compta_db", T13)
    assert second["status"] == "SUCCESS"
    assert second["entry_id"] == first["entry_id"]
    assert second["dagster_run_id"] != first["dagster_run_id"]
    assert len(workspace.entries()) == 1


def test_report_still_being_written_waits_for_the_next_scan(workspace, agent, monkeypatch):
    monkeypatch.setenv("BACKUP_PIPELINE_SETTLE_SECONDS", "300")
    partial = agent.log / f"20251121_130500_{AGENT}.json"
    partial.write_text('{"operation_end_time": "2025-11-21T13:05:00Z", "agent_')  # mtime: now
    scan(workspace)
    assert workspace.json("reports") == []
    assert partial.exists()
    old = time.time() - 600
    os.utime(partial, (old, old))  # it never completed: now it is judged
    scan(workspace)
    assert workspace.json("reports")[0]["accepted"] is False
    assert not partial.exists()


def test_staged_file_overwritten_by_the_next_cycle_is_explained(workspace, agent):
    day1, day2 = gz(b"monday" * 100), gz(b"tuesday" * 100)
    agent.report(utc("2025-11-20T13:05:00Z"), {"compta_db": agent.database_section("compta_db.sql.gz", day1)})
    agent.stage("compta_db.sql.gz", day2)
    agent.report(utc("2025-11-21T13:05:00Z"), {"compta_db": agent.database_section("compta_db.sql.gz", day2)})
    scan(workspace, AT, "2025-11-20", DAY)
    monday = workspace.entry(AGENT, "compta_db", "2025-11-20T13:00:00Z")
    assert monday["status"] == "TRANSFER_INTEGRITY_FAILED"
    assert "matches the later report 20251121_130500" in monday["message"]
    assert workspace.entry(AGENT, "compta_db", T13)["status"] == "SUCCESS"


def test_staged_files_are_hashed_once_per_cycle(workspace, agent):
    agent.backup(utc("2025-11-21T13:05:00Z"), "compta_db", b"data")
    scan(workspace)
    first = workspace.entry(AGENT, "compta_db", T13)
    (agent.folder / "database" / "compta_db.sql.gz").write_bytes(b"replaced later by someone")
    scan(workspace)  # explicit re-evaluation reuses the stored measurement
    assert workspace.entry(AGENT, "compta_db", T13)["status"] == "SUCCESS"
    workspace.cli("scan", "--at", AT, "--partition", DAY, "--rehash")
    rehashed = workspace.entry(AGENT, "compta_db", T13)
    assert rehashed["status"] == "TRANSFER_INTEGRITY_FAILED"
    assert rehashed["measured_at"] == first["measured_at"] == "2025-11-21T14:30:00Z"


def test_late_report_after_missing_is_picked_up_by_the_next_automatic_scan(workspace, agent):
    workspace.cli("jobs", "sync", "--at", "2025-11-21T08:00:00Z")
    workspace.cli("scan", "--at", "2025-11-21T14:30:00Z")
    assert workspace.entry(AGENT, "compta_db", T13)["status"] == "MISSING"
    agent.backup(utc("2025-11-21T13:50:00Z"), "compta_db", b"uploaded late, ended in the window")
    workspace.cli("scan", "--at", "2025-11-22T09:00:00Z")
    assert workspace.entry(AGENT, "compta_db", T13)["status"] == "SUCCESS"


def test_an_archive_expanding_beyond_its_limit_fails_naming_the_limit(workspace, agent, monkeypatch):
    """Issue 20: a decompression bomb costs no more than the limit, and the verdict says which."""
    monkeypatch.setenv("BACKUP_PIPELINE_MAX_EXPANSION_RATIO", "10")
    agent.backup(utc("2025-11-21T13:05:00Z"), "compta_db", bytes(20 << 20), compression="zst")
    scan(workspace)
    entry = workspace.entry(AGENT, "compta_db", T13)
    assert entry["status"] == "FAILED"
    assert entry["message"].startswith("archive expands beyond 10485760 bytes, 10 times its ")
    assert "(BACKUP_PIPELINE_MAX_EXPANSION_RATIO): compta_db.zst" in entry["message"]
