"""docs/design.md §5 outcomes end to end: real files, the real CLI, the Dagster job, PostgreSQL."""

from __future__ import annotations

import os
import shutil

import pytest

from backup_pipeline_tests.support.deposit_builder import Agent, gz, sha, utc, zst
from backup_pipeline_tests.support.paths import FIXTURES

AGENT = "SIRPACAM_DOUALA_NEWBELL"
DAY = "2025-11-21"
T13 = f"{DAY}T13:00:00Z"
REAL_AGENT = FIXTURES / "real_agent"  # reports in the format real agents write


def job(database: str = "compta_db", hour: int = 13, minute: int = 0, **extra: object) -> dict[str, object]:
    return {
        "agent_id": AGENT,
        "database_name": database,
        "expected_hour_utc": hour,
        "expected_minute_utc": minute,
    } | extra


@pytest.fixture
def agent(workspace) -> Agent:
    return Agent(workspace.root, AGENT)


def scan(workspace, at: str, *partitions: str) -> None:
    args = ["scan", "--at", at]
    for p in partitions:
        args += ["--partition", p]
    workspace.cli(*args)


def test_one_report_several_databases_all_succeed(workspace, agent):
    workspace.write_jobs([job("compta_db"), job("paie_db"), job("stock_db")])
    end = utc("2025-11-21T13:05:12Z")
    sections = {}
    for name in ("compta_db", "paie_db", "stock_db"):
        packed = gz(f"-- dump of {name}\n".encode() * 1000)
        agent.stage(f"{name}.sql.gz", packed)
        sections[name] = agent.database_section(f"{name}.sql.gz", packed)
    agent.report(end, sections)

    scan(workspace, "2025-11-21T14:30:00Z", DAY)

    entries = workspace.entries()
    assert [(e["database_name"], e["status"]) for e in entries] == [
        ("compta_db", "SUCCESS"),
        ("paie_db", "SUCCESS"),
        ("stock_db", "SUCCESS"),
    ]
    for e in entries:
        assert e["cycle_expected_at"] == T13
        assert e["server_calculated_staged_hash"] == e["agent_compress_hash_post_compress"]
        assert e["server_calculated_staged_size"] == e["agent_compress_size_post_compress"]
        assert e["report_file"] == "20251121_130512_SIRPACAM_DOUALA_NEWBELL.json"
        assert e["dagster_run_id"]
    status = {s["database_name"]: s for s in workspace.json("status")}
    assert status["compta_db"]["current_status"] == "OK"
    assert (
        status["compta_db"]["previous_successful_hash_global"] == entries[0]["server_calculated_staged_hash"]
    )
    assert status["compta_db"]["last_successful_backup_timestamp"] == "2025-11-21T13:05:12Z"
    assert not list(agent.log.glob("*.json"))
    assert (agent.archive / "20251121_130512_SIRPACAM_DOUALA_NEWBELL.json").exists()


@pytest.mark.parametrize("step", ["BACKUP", "COMPRESS", "TRANSFER"])
def test_each_failed_step_is_failed_with_its_reasons(workspace, agent, step):
    workspace.write_jobs([job()])
    flags = {"backup": step != "BACKUP", "compress": step != "COMPRESS", "transfer": step != "TRANSFER"}
    agent.backup(
        utc("2025-11-21T13:05:00Z"), "compta_db", b"data", error="disk full", logs="pg_dump exited 1", **flags
    )

    scan(workspace, "2025-11-21T14:30:00Z", DAY)

    entry = workspace.entry(AGENT, "compta_db", T13)
    assert entry["status"] == "FAILED"
    assert step in entry["message"]
    assert "pg_dump exited 1" in entry["message"]
    assert workspace.json("status")[0]["current_status"] == "FAILED"


def test_missing_step_section_is_failed_without_rejecting_the_report(workspace, agent):
    workspace.write_jobs([job("compta_db"), job("paie_db")])
    packed = gz(b"x" * 100)
    agent.stage("compta_db.sql.gz", packed)
    agent.stage("paie_db.sql.gz", packed)
    broken = agent.database_section("paie_db.sql.gz", packed)
    del broken["TRANSFER"]
    agent.report(
        utc("2025-11-21T13:05:00Z"),
        {"compta_db": agent.database_section("compta_db.sql.gz", packed), "paie_db": broken},
    )
    scan(workspace, "2025-11-21T14:30:00Z", DAY)
    assert workspace.entry(AGENT, "compta_db", T13)["status"] == "SUCCESS"
    paie = workspace.entry(AGENT, "paie_db", T13)
    assert paie["status"] == "FAILED"
    assert "no TRANSFER section" in paie["message"]
    assert workspace.json("reports")[0]["accepted"] is True


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("hash", "sha256 differs"),
        ("size", "size differs"),
        ("absent", "is absent"),
    ],
)
def test_transfer_integrity_failures(workspace, agent, case, expected):
    workspace.write_jobs([job()])
    packed = gz(b"content" * 500)
    section = agent.database_section("compta_db.sql.gz", packed)
    if case == "hash":
        agent.stage("compta_db.sql.gz", packed[:-1] + bytes([packed[-1] ^ 1]))
    elif case == "size":
        agent.stage("compta_db.sql.gz", packed)
        section["COMPRESS"]["size"] = len(packed) + 7
    agent.report(utc("2025-11-21T13:05:00Z"), {"compta_db": section})

    scan(workspace, "2025-11-21T14:30:00Z", DAY)

    entry = workspace.entry(AGENT, "compta_db", T13)
    assert entry["status"] == "TRANSFER_INTEGRITY_FAILED"
    assert expected in entry["message"]
    assert workspace.json("status")[0]["current_status"] == "TRANSFER_INTEGRITY_FAILED"


def test_agent_hash_in_upper_case_still_matches(workspace, agent):
    workspace.write_jobs([job()])
    packed = gz(b"content" * 500)
    agent.stage("compta_db.sql.gz", packed)
    agent.report(
        utc("2025-11-21T13:05:00Z"),
        {"compta_db": agent.database_section("compta_db.sql.gz", packed, agent_hash=sha(packed).upper())},
    )
    scan(workspace, "2025-11-21T14:30:00Z", DAY)
    assert workspace.entry(AGENT, "compta_db", T13)["status"] == "SUCCESS"


@pytest.mark.parametrize("compression", ["gz", "zst"])
def test_corrupt_archive_whose_hash_matches_is_failed(workspace, agent, compression):
    workspace.write_jobs([job()])
    whole = gz(b"row\n" * 50_000) if compression == "gz" else zst(b"row\n" * 50_000)
    truncated = whole[: len(whole) // 2]
    name = "compta_db.sql.gz" if compression == "gz" else "compta_db.zst"
    agent.stage(name, truncated)
    agent.report(utc("2025-11-21T13:05:00Z"), {"compta_db": agent.database_section(name, truncated)})

    scan(workspace, "2025-11-21T14:30:00Z", DAY)

    entry = workspace.entry(AGENT, "compta_db", T13)
    assert entry["status"] == "FAILED"
    assert "archive corrupt" in entry["message"]
    assert "truncated" in entry["message"]


def test_missing_only_after_the_deadline_and_only_once(workspace):
    workspace.write_jobs([job()])
    workspace.cli("jobs", "sync", "--at", "2025-11-21T08:00:00Z")

    workspace.cli("scan", "--at", "2025-11-21T13:30:00Z")  # inside the window: nothing to judge yet
    assert workspace.entries() == []
    assert workspace.json("status")[0]["current_status"] == "UNKNOWN"

    for at in ("2025-11-21T14:01:00Z", "2025-11-21T14:20:00Z", "2025-11-21T18:00:00Z"):
        workspace.cli("scan", "--at", at)
    entries = workspace.entries()
    assert [(e["cycle_expected_at"], e["status"]) for e in entries] == [(T13, "MISSING")]
    assert "no report for compta_db" in entries[0]["message"]
    assert workspace.json("status")[0]["current_status"] == "MISSING"


def test_report_outside_the_window_is_not_used(workspace, agent):
    workspace.write_jobs([job()])
    agent.backup(utc("2025-11-21T11:30:00Z"), "compta_db", b"early")  # 90 min early, window 60
    scan(workspace, "2025-11-21T14:30:00Z", DAY)
    assert workspace.entry(AGENT, "compta_db", T13)["status"] == "MISSING"


def test_latest_of_several_relevant_reports_wins(workspace, agent):
    workspace.write_jobs([job()])
    packed = gz(b"second attempt" * 100)
    agent.report(
        utc("2025-11-21T12:40:00Z"),
        {"compta_db": agent.database_section("compta_db.sql.gz", packed, transfer=False, error="timeout")},
    )
    agent.stage("compta_db.sql.gz", packed)
    agent.report(
        utc("2025-11-21T13:20:00Z"), {"compta_db": agent.database_section("compta_db.sql.gz", packed)}
    )
    scan(workspace, "2025-11-21T14:30:00Z", DAY)
    entry = workspace.entry(AGENT, "compta_db", T13)
    assert entry["status"] == "SUCCESS"
    assert entry["report_file"] == "20251121_132000_SIRPACAM_DOUALA_NEWBELL.json"


def test_two_jobs_of_one_database_each_get_their_own_report(workspace, agent):
    workspace.write_jobs([job(hour=13), job(hour=20, staged_file_name="compta_db_evening.sql.gz")])
    morning, evening = gz(b"morning" * 100), gz(b"evening" * 100)
    agent.stage("compta_db.sql.gz", morning)
    agent.stage("compta_db_evening.sql.gz", evening)
    agent.report(
        utc("2025-11-21T13:05:00Z"), {"compta_db": agent.database_section("compta_db.sql.gz", morning)}
    )
    agent.report(
        utc("2025-11-21T20:10:00Z"),
        {"compta_db": agent.database_section("compta_db_evening.sql.gz", evening)},
    )
    scan(workspace, "2025-11-21T22:00:00Z", DAY)
    entries = {e["cycle_expected_at"]: e for e in workspace.entries()}
    assert entries[T13]["report_file"].startswith("20251121_130500")
    assert entries["2025-11-21T20:00:00Z"]["report_file"].startswith("20251121_201000")
    assert {e["status"] for e in entries.values()} == {"SUCCESS"}


def test_late_night_job_takes_a_report_ending_after_midnight(workspace, agent):
    workspace.write_jobs([job(hour=23, minute=50)])
    agent.backup(utc("2025-11-22T00:20:00Z"), "compta_db", b"night")
    scan(workspace, "2025-11-22T01:00:00Z", DAY)
    entry = workspace.entry(AGENT, "compta_db", "2025-11-21T23:50:00Z")
    assert entry["status"] == "SUCCESS"


def test_scan_after_archiving_keeps_success(workspace, agent):
    workspace.write_jobs([job()])
    agent.backup(utc("2025-11-21T13:05:00Z"), "compta_db", b"data")
    scan(workspace, "2025-11-21T14:30:00Z", DAY)
    first = workspace.entry(AGENT, "compta_db", T13)
    assert not list(agent.log.glob("*.json"))
    scan(workspace, "2025-11-21T16:00:00Z", DAY)
    workspace.cli("scan", "--at", "2025-11-21T17:00:00Z")
    again = workspace.entry(AGENT, "compta_db", T13)
    assert again["status"] == "SUCCESS"
    assert again["entry_id"] == first["entry_id"]
    assert len(workspace.entries()) == 1


def _two_days(workspace, agent, policy: str, second: bytes, first: bytes = b"same content\n" * 500):
    workspace.write_jobs([job(content_change=policy)])
    for day, data, stamp in (("2025-11-20", first, 1_000), ("2025-11-21", second, 2_000)):
        packed = gz(data, mtime=stamp)  # identical content still differs in the gzip header time
        name = f"compta_db_{day}.sql.gz"
        agent.stage(name, packed)
        agent.report(utc(f"{day}T13:05:00Z"), {"compta_db": agent.database_section(name, packed)})
    scan(workspace, "2025-11-21T14:30:00Z", "2025-11-20", DAY)
    return workspace.entry(AGENT, "compta_db", T13)


def test_policy_changed_ignores_gzip_header_times(workspace, agent):
    entry = _two_days(workspace, agent, "changed", b"same content\n" * 500)
    assert entry["status"] == "SUCCESS"
    assert entry["server_calculated_staged_hash"] != entry["previous_successful_hash_used"]


def test_policy_changed_flags_changed_content(workspace, agent):
    entry = _two_days(workspace, agent, "changed", b"new content\n" * 500)
    assert entry["status"] == "HASH_MISMATCH"
    assert "content changed" in entry["message"]
    assert workspace.json("status")[0]["current_status"] == "OK"


def test_policy_unchanged_flags_identical_content(workspace, agent):
    entry = _two_days(workspace, agent, "unchanged", b"same content\n" * 500)
    assert entry["status"] == "HASH_MISMATCH"
    assert "identical" in entry["message"]


def test_policy_off_never_flags(workspace, agent):
    entry = _two_days(workspace, agent, "off", b"new content\n" * 500)
    assert entry["status"] == "SUCCESS"


@pytest.mark.parametrize(
    ("sample", "at"),
    [
        ("2025-07-14_22-15-31_SIRPACAM_DSCHANG_MARCHE.json", "2025-07-14T23:00:00Z"),
        ("2025-07-03_06-12-44_SOCIA_KRIBI_PORT_2.json", "2025-07-02T20:30:00Z"),
    ],
)
def test_real_agent_samples_are_accepted(workspace, sample, at):
    agent_id = sample[20:-5]
    source = REAL_AGENT / sample
    target = Agent(workspace.root, agent_id).log / sample
    shutil.copyfile(source, target)
    os.utime(target, (utc(at).timestamp(), utc(at).timestamp()))
    hour = utc(at).hour - 1
    workspace.write_jobs(
        [
            {
                "agent_id": agent_id,
                "database_name": "X_NOT_LISTED",
                "expected_hour_utc": hour,
                "expected_minute_utc": 30,
            }
        ]
    )
    scan(workspace, at, at[:10])
    reports = workspace.json("reports")
    assert [(r["file_name"], r["accepted"], r["reason"]) for r in reports] == [(sample, True, None)]
    assert reports[0]["archived_path"].endswith(f"_archive/{sample}")


def test_real_agent_sample_drives_decisions(workspace):
    """The loose field format (string booleans, naive times, Windows paths) is evaluated like any other."""
    sample = "2025-07-03_06-12-44_SOCIA_KRIBI_PORT_2.json"
    agent = Agent(workspace.root, "SOCIA_KRIBI_PORT_2")
    shutil.copyfile(REAL_AGENT / sample, agent.log / sample)
    os.utime(agent.log / sample, (utc("2025-07-02T20:00:00Z").timestamp(),) * 2)
    workspace.write_jobs(
        [
            {
                "agent_id": "SOCIA_KRIBI_PORT_2",
                "database_name": db,
                "expected_hour_utc": 19,
                "expected_minute_utc": 30,
            }
            for db in ("SOCIA_KRIBI_PORT_2025_1", "SOCIA_KRIBI_PORT_2025_15")
        ]
    )
    scan(workspace, "2025-07-02T21:00:00Z", "2025-07-02")
    entries = {e["database_name"]: e for e in workspace.entries()}
    assert entries["SOCIA_KRIBI_PORT_2025_1"]["status"] == "FAILED"  # every step "False"
    failed_transfer = entries["SOCIA_KRIBI_PORT_2025_15"]
    # The report's staged file is not on this server: the Windows path is reduced to its base name.
    assert failed_transfer["status"] == "TRANSFER_INTEGRITY_FAILED"
    assert "SOCIA_KRIBI_PORT_2025_15.zst is absent" in failed_transfer["message"]
