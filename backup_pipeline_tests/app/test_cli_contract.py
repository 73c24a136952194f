"""The command-line contract of issue #2, through the real CLI on a real PostgreSQL and real files.

Fields and formats of `jobs list`, `status`, `entries` and `reports` (`--json`: a JSON array on
stdout), the filters of `entries`, and what a person sees on expected errors: a non-zero exit code,
one actionable `Error:` line on stderr, no traceback, and never a password.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from backup_pipeline.app.cli import main
from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.deposit_builder import Agent, gz, utc

DOUALA = "SIRPACAM_DOUALA_NEWBELL"
YAOUNDE = "SOCIA_YAOUNDE_BASTOS_1"  # real sites also use a 4th part
DAY1, DAY2 = "2025-11-20", "2025-11-21"
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")

STATUS_FIELDS = {
    "agent_id",
    "database_name",
    "name",
    "schedule",
    "current_status",
    "last_checked_timestamp",
    "last_successful_backup_timestamp",
    "previous_successful_hash_global",
}
ENTRY_FIELDS = {
    "agent_id",
    "database_name",
    "cycle_expected_at",
    "status",
    "message",
    "report_file",
    "server_calculated_staged_hash",
    "server_calculated_staged_size",
    "agent_compress_hash_post_compress",
    "agent_compress_size_post_compress",
    "dagster_run_id",
}
REPORT_FIELDS = {"agent_id", "file_name", "accepted", "reason", "operation_end_time", "archived_path"}
JOB_FIELDS = {
    "agent_id",
    "database_name",
    "name",
    "schedule",
    "cron",
    "expected_hour_utc",
    "expected_minute_utc",
    "early_minutes",
    "grace_minutes",
    "timezone",
    "staged_file_name",
    "content_change",
    "is_active",
    "company_name",
    "city",
    "neighborhood",
    "current_status",
}
STATUSES = {"OK", "FAILED", "TRANSFER_INTEGRITY_FAILED", "MISSING", "UNKNOWN"}
ENTRY_STATUSES = {"SUCCESS", "FAILED", "MISSING", "TRANSFER_INTEGRITY_FAILED", "HASH_MISMATCH"}


def job(agent: str, database: str, hour: int, minute: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "agent_id": agent,
        "database_name": database,
        "expected_hour_utc": hour,
        "expected_minute_utc": minute,
    } | extra


def json_array(result: Result) -> list[dict[str, Any]]:
    """The whole of stdout is one JSON array (of objects)."""
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert isinstance(rows, list)
    assert all(isinstance(row, dict) for row in rows)
    return rows


def assert_expected_error(result: Result, *fragments: str) -> str:
    """A non-zero exit, one `Error:` line naming the problem on stderr, nothing else for a runtime
    error (usage errors keep click's usage hint), nothing on stdout, and no traceback anywhere."""
    assert result.exit_code != 0, result.output
    everything = result.stdout + result.stderr
    assert "Traceback" not in everything and "Stack Trace" not in everything, everything
    assert result.stdout == "", result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    if result.exit_code != 2:  # not a usage error: the Error line is all there is
        assert result.stderr.strip() == errors[0], result.stderr
    for fragment in fragments:
        assert fragment in errors[0], f"{fragment!r} not in {errors[0]!r}"
    return errors[0]


def assert_iso_z(value: str | None) -> datetime:
    assert value is not None and ISO_Z.match(value), value
    return utc(value)


# ---------------------------------------------------------------- jobs sync / jobs list


def test_backups_sync_refuses_two_backups_that_would_be_one_dagster_asset(workspace: Workspace) -> None:
    """`compta.db` and `compta_db` of one agent would be merged into one asset by Dagster: the sync
    names both lines and the key, and syncs nothing."""
    workspace.write_jobs([job(DOUALA, "compta.db", 13), job(DOUALA, "compta_db", 13)])
    refused = workspace.cli("backups", "sync", expect_ok=False)
    assert refused.exit_code == 1
    line = refused.output.strip()
    assert f"{workspace.jobs_file}:6: job #2 (agent '{DOUALA}', database 'compta_db'" in line
    assert "and job #1 at line 2" in line and f"`backups/{DOUALA}/compta_db_1300`" in line
    assert "Traceback" not in refused.output and len(refused.output.strip().splitlines()) == 1
    assert json_array(workspace.cli("backups", "list", "--json")) == []


def test_jobs_sync_and_list_keep_every_job_and_only_deactivate_removed_ones(workspace: Workspace) -> None:
    ws = workspace
    evening = job(
        DOUALA,
        "compta_db",
        20,
        window_minutes=90,
        timezone="Africa/Douala",
        staged_file_name="compta_db.sql.gz",
        content_change="unchanged",
    )
    declared = [job(DOUALA, "compta_db", 13), evening, job(YAOUNDE, "paie_db", 2, 30)]
    ws.write_jobs(declared, defaults={"window_minutes": 45, "timezone": "UTC", "content_change": "changed"})

    out = ws.cli("jobs", "sync").stdout
    assert "3 active expected backup(s): 3 added, 0 deactivated" in out

    rows = json_array(ws.cli("jobs", "list", "--json"))
    assert len(rows) == 3
    for row in rows:
        assert set(row) >= JOB_FIELDS
        assert row["is_active"] is True
        assert row["current_status"] == "UNKNOWN"
    by_key = {(r["agent_id"], r["database_name"], r["expected_hour_utc"]): r for r in rows}
    noon = by_key[(DOUALA, "compta_db", 13)]
    assert (noon["expected_minute_utc"], noon["early_minutes"], noon["grace_minutes"]) == (0, 45, 45)
    assert (noon["name"], noon["schedule"], noon["cron"], noon["timezone"]) == (
        "1300",
        "daily at 13:00 (UTC)",
        None,
        "UTC",
    )
    assert (noon["content_change"], noon["staged_file_name"]) == ("changed", None)
    assert (noon["company_name"], noon["city"], noon["neighborhood"]) == ("SIRPACAM", "DOUALA", "NEWBELL")
    night = by_key[(DOUALA, "compta_db", 20)]
    assert (night["early_minutes"], night["grace_minutes"]) == (90, 90)
    assert night["timezone"] == "Africa/Douala"
    assert night["staged_file_name"] == "compta_db.sql.gz"
    assert night["content_change"] == "unchanged"
    campus = by_key[(YAOUNDE, "paie_db", 2)]
    assert campus["expected_minute_utc"] == 30
    assert (campus["company_name"], campus["city"]) == ("SOCIA", "YAOUNDE")

    # A cycle of the 20:00 job gets an entry, then the job leaves the file: inactive, not deleted.
    ws.cli("scan", "--at", f"{DAY1}T23:00:00Z", "--partition", DAY1)
    history = ws.entries(agent=DOUALA, database="compta_db")
    assert {e["cycle_expected_at"] for e in history} == {f"{DAY1}T13:00:00Z", f"{DAY1}T20:00:00Z"}
    ws.write_jobs([declared[0], declared[2]], defaults={"window_minutes": 45})
    assert "2 active expected backup(s): 0 added, 1 deactivated" in ws.cli("jobs", "sync").stdout
    rows = json_array(ws.cli("jobs", "list", "--json"))
    assert len(rows) == 3
    active = {(r["agent_id"], r["database_name"], r["expected_hour_utc"]): r["is_active"] for r in rows}
    assert active == {
        (DOUALA, "compta_db", 13): True,
        (DOUALA, "compta_db", 20): False,
        (YAOUNDE, "paie_db", 2): True,
    }
    assert len(json_array(ws.cli("status", "--json"))) == 2
    assert ws.entries(agent=DOUALA, database="compta_db") == history  # its history stays

    # Declared again (from another file, with another window): the same job, active again.
    other = ws.jobs_file.parent / "other-jobs.yaml"
    other.write_text(yaml.safe_dump({"jobs": [*declared[::2], evening | {"window_minutes": 30}]}))
    synced = ws.cli("jobs", "sync", "--file", str(other)).stdout
    assert "3 active expected backup(s): 0 added, 0 deactivated" in synced
    rows = json_array(ws.cli("jobs", "list", "--json"))
    assert len(rows) == 3
    assert all(r["is_active"] for r in rows)
    night = next(r for r in rows if r["expected_hour_utc"] == 20)
    assert (night["early_minutes"], night["grace_minutes"]) == (30, 30)
    assert ws.entries(agent=DOUALA, database="compta_db") == history


def test_a_scan_never_undoes_a_sync_of_another_jobs_file(workspace: Workspace) -> None:
    """`jobs sync --file OTHER` is a person's choice: the scans that follow keep it (they used to
    re-sync the configured file and deactivate OTHER's backups), until the configured file changes."""
    ws = workspace
    configured = [job(DOUALA, "compta_db", 13), job(DOUALA, "paie_db", 13)]
    ws.write_jobs(configured)
    other = ws.jobs_file.parent / "other-jobs.yaml"
    other.write_text(yaml.safe_dump({"jobs": [job(YAOUNDE, "stock_db", 2)]}))

    def active() -> set[tuple[str, str]]:
        rows = json_array(ws.cli("backups", "list", "--json"))
        return {(r["agent_id"], r["database_name"]) for r in rows if r["is_active"]}

    # The configured file was never synced: the person's explicit choice still stands.
    synced = ws.cli("jobs", "sync", "--file", str(other)).stdout
    assert "1 active expected backup(s): 1 added, 0 deactivated" in synced
    ws.cli("scan", "--at", f"{DAY1}T14:00:00Z", "--partition", DAY1)
    ws.cli("scan", "--at", f"{DAY1}T15:00:00Z")
    assert active() == {(YAOUNDE, "stock_db")}

    # Once synced, then another file chosen: the same.
    ws.cli("backups", "sync")
    assert active() == {(DOUALA, "compta_db"), (DOUALA, "paie_db")}
    ws.cli("jobs", "sync", "--file", str(other))
    ws.cli("scan", "--at", f"{DAY1}T16:00:00Z")
    assert active() == {(YAOUNDE, "stock_db")}

    # The configured file changes: that is newer intent, and the next scan follows it.
    ws.write_jobs([*configured, job(DOUALA, "stock_db", 13)])
    ws.cli("scan", "--at", f"{DAY1}T17:00:00Z")
    assert active() == {(DOUALA, "compta_db"), (DOUALA, "paie_db"), (DOUALA, "stock_db")}


# ---------------------------------------------------------------- status


def test_status_has_exactly_the_contract_fields_and_unknown_before_any_scan(workspace: Workspace) -> None:
    ws = workspace
    assert json_array(ws.cli("status", "--json")) == []  # no job yet: still an array
    ws.write_jobs([job(DOUALA, "compta_db", 13), job(DOUALA, "paie_db", 13), job(YAOUNDE, "compta_db", 20)])
    ws.cli("jobs", "sync")

    rows = json_array(ws.cli("status", "--json"))
    assert len(rows) == 3
    for row in rows:
        assert set(row) == STATUS_FIELDS
        assert row["current_status"] == "UNKNOWN"
        assert row["last_checked_timestamp"] is None
        assert row["last_successful_backup_timestamp"] is None
        assert row["previous_successful_hash_global"] is None
    assert {(r["agent_id"], r["database_name"], r["name"], r["schedule"]) for r in rows} == {
        (DOUALA, "compta_db", "1300", "daily at 13:00 (UTC)"),
        (DOUALA, "paie_db", "1300", "daily at 13:00 (UTC)"),
        (YAOUNDE, "compta_db", "2000", "daily at 20:00 (UTC)"),
    }
    table = ws.cli("status").stdout  # the table for people shows the same jobs
    assert table.count("UNKNOWN") == 3 and DOUALA in table and YAOUNDE in table


# ---------------------------------------------------------------- entries / reports


@pytest.fixture
def scanned(workspace: Workspace) -> dict[str, Any]:
    """Two agents over two days: successes, a database left out of a report (MISSING), an agent
    that sent nothing (MISSING), and an unreadable report (FAILED, recorded as rejected)."""
    ws = workspace
    ws.write_jobs([job(DOUALA, "compta_db", 13), job(DOUALA, "paie_db", 13), job(YAOUNDE, "compta_db", 20)])
    douala, yaounde = Agent(ws.root, DOUALA), Agent(ws.root, YAOUNDE)
    staged: dict[tuple[str, str], bytes] = {}
    for day, databases in ((DAY1, ("compta_db", "paie_db")), (DAY2, ("compta_db",))):
        sections = {}
        for database in databases:
            name = f"{database}_{day.replace('-', '')}.sql.gz"
            packed = gz(f"-- {database}\n".encode() * 500, mtime=int(utc(f"{day}T13:00:00Z").timestamp()))
            douala.stage(name, packed)
            staged[(database, day)] = packed
            sections[database] = douala.database_section(name, packed)
        douala.report(utc(f"{day}T13:04:30Z"), sections)
    bad = yaounde.report(utc(f"{DAY2}T20:05:00Z"), {}, raw="{ this is not json")
    ws.cli("scan", "--at", f"{DAY2}T23:00:00Z", "--partition", DAY1, "--partition", DAY2)
    return {"staged": staged, "rejected_file": bad.name}


def test_entries_json_rows_carry_the_contract_fields(workspace: Workspace, scanned: dict[str, Any]) -> None:
    rows = json_array(workspace.cli("entries", "--json"))
    assert len(rows) == 6
    for row in rows:
        assert set(row) >= ENTRY_FIELDS
        assert row["status"] in ENTRY_STATUSES
        assert row["message"]
        assert row["dagster_run_id"]
        assert_iso_z(row["cycle_expected_at"])
    outcome = {(r["agent_id"], r["database_name"], r["cycle_expected_at"]): r for r in rows}
    assert {k: r["status"] for k, r in outcome.items()} == {
        (DOUALA, "compta_db", f"{DAY1}T13:00:00Z"): "SUCCESS",
        (DOUALA, "paie_db", f"{DAY1}T13:00:00Z"): "SUCCESS",
        (DOUALA, "compta_db", f"{DAY2}T13:00:00Z"): "SUCCESS",
        (DOUALA, "paie_db", f"{DAY2}T13:00:00Z"): "MISSING",
        (YAOUNDE, "compta_db", f"{DAY1}T20:00:00Z"): "MISSING",
        (YAOUNDE, "compta_db", f"{DAY2}T20:00:00Z"): "FAILED",
    }
    success = outcome[(DOUALA, "paie_db", f"{DAY1}T13:00:00Z")]
    packed = scanned["staged"][("paie_db", DAY1)]
    assert success["report_file"] == f"20251120_130430_{DOUALA}.json"
    assert (
        success["server_calculated_staged_size"]
        == success["agent_compress_size_post_compress"]
        == len(packed)
    )
    assert success["server_calculated_staged_hash"] == success["agent_compress_hash_post_compress"]
    assert len(success["server_calculated_staged_hash"]) == 64
    missing = outcome[(DOUALA, "paie_db", f"{DAY2}T13:00:00Z")]
    assert (
        missing["server_calculated_staged_hash"] is None
        and missing["agent_compress_size_post_compress"] is None
    )
    failed = outcome[(YAOUNDE, "compta_db", f"{DAY2}T20:00:00Z")]
    assert "invalid" in failed["message"].lower()

    # The table for people lists the same cycles.
    table = workspace.cli("entries").stdout
    assert table.count("MISSING") == 2 and table.count("SUCCESS") == 3


def test_status_after_a_scan_follows_each_jobs_latest_cycle(
    workspace: Workspace, scanned: dict[str, Any]
) -> None:
    rows = json_array(workspace.cli("status", "--json"))
    status = {(r["agent_id"], r["database_name"]): r for r in rows}
    assert len(status) == 3
    for row in rows:
        assert set(row) == STATUS_FIELDS
        assert row["current_status"] in STATUSES
        assert_iso_z(row["last_checked_timestamp"])
    entries = {(e["database_name"], e["cycle_expected_at"]): e for e in workspace.entries(agent=DOUALA)}
    compta = status[(DOUALA, "compta_db")]
    assert compta["current_status"] == "OK"
    assert assert_iso_z(compta["last_successful_backup_timestamp"]) == utc(f"{DAY2}T13:04:30Z")
    latest = entries[("compta_db", f"{DAY2}T13:00:00Z")]
    assert compta["previous_successful_hash_global"] == latest["server_calculated_staged_hash"]
    paie = status[(DOUALA, "paie_db")]
    assert paie["current_status"] == "MISSING"  # its latest cycle, though DAY1 succeeded
    assert assert_iso_z(paie["last_successful_backup_timestamp"]) == utc(f"{DAY1}T13:04:30Z")
    silent = status[(YAOUNDE, "compta_db")]
    assert silent["current_status"] == "FAILED"
    assert silent["last_successful_backup_timestamp"] is None
    assert silent["previous_successful_hash_global"] is None


def test_entries_filters(workspace: Workspace, scanned: dict[str, Any]) -> None:
    ws = workspace

    def cycles(*args: str) -> set[tuple[str, str, str]]:
        rows = json_array(ws.cli("entries", "--json", *args))
        keys = {(r["agent_id"], r["database_name"], r["cycle_expected_at"][:10]) for r in rows}
        assert len(keys) == len(rows)
        return keys

    every = cycles()
    assert len(every) == 6
    assert cycles("--agent", DOUALA) == {k for k in every if k[0] == DOUALA}
    assert len(cycles("--agent", DOUALA)) == 4
    assert cycles("--database", "compta_db") == {k for k in every if k[1] == "compta_db"}
    assert len(cycles("--database", "compta_db")) == 4
    assert cycles("--since", DAY2) == {k for k in every if k[2] == DAY2}
    assert len(cycles("--since", DAY2)) == 3
    assert cycles("--since", DAY1) == every
    assert cycles("--agent", DOUALA, "--database", "paie_db", "--since", DAY2) == {(DOUALA, "paie_db", DAY2)}
    assert cycles("--agent", YAOUNDE, "--database", "paie_db") == set()
    assert cycles("--agent", "NOBODY_NOWHERE_NEVER") == set()
    assert cycles("--since", "2025-11-22") == set()


def test_reports_json_fields(workspace: Workspace, scanned: dict[str, Any]) -> None:
    rows = json_array(workspace.cli("reports", "--json"))
    assert len(rows) == 3
    for row in rows:
        assert set(row) >= REPORT_FIELDS
        archived = Path(row["archived_path"])
        assert archived.is_file()
        assert archived.parent == workspace.root / row["agent_id"] / "log" / "_archive"
        assert archived.name == row["file_name"]
    by_name = {r["file_name"]: r for r in rows}
    accepted = by_name[f"20251121_130430_{DOUALA}.json"]
    assert accepted["agent_id"] == DOUALA
    assert accepted["accepted"] is True
    assert accepted["reason"] is None
    assert assert_iso_z(accepted["operation_end_time"]) == utc(f"{DAY2}T13:04:30Z")
    rejected = by_name[scanned["rejected_file"]]
    assert rejected["agent_id"] == YAOUNDE
    assert rejected["accepted"] is False
    assert rejected["reason"]
    assert rejected["operation_end_time"] is None


def test_json_output_is_only_a_json_array_even_when_verbose(
    workspace: Workspace, scanned: dict[str, Any]
) -> None:
    for command in (["jobs", "list"], ["status"], ["entries"], ["reports"]):
        for verbose in ([], ["-v"]):
            result = workspace.cli(*verbose, *command, "--json")
            assert json_array(result), command
            assert result.stdout.lstrip().startswith("[") and result.stdout.rstrip().endswith("]")


# ---------------------------------------------------------------- expected errors


BAD_HOUR = """\
defaults: {window_minutes: 60}
jobs:
  - agent_id: SIRPACAM_DOUALA_NEWBELL
    database_name: compta_db
    expected_hour_utc: 25
    expected_minute_utc: 0
"""
BAD_YAML = """\
jobs:
  - agent_id: SIRPACAM_DOUALA_NEWBELL
    database_name: [compta_db
    expected_hour_utc: 13
"""


@pytest.mark.parametrize("command", [["jobs", "sync"], ["scan", "--at", f"{DAY2}T14:00:00Z"]])
def test_malformed_jobs_file_names_the_line_and_field(workspace: Workspace, command: list[str]) -> None:
    workspace.jobs_file.write_text(BAD_HOUR)
    result = workspace.cli(*command, expect_ok=False)
    assert_expected_error(result, f"{workspace.jobs_file}:5", "expected_hour_utc")


def test_malformed_jobs_file_lists_every_problem_with_its_line(workspace: Workspace) -> None:
    jobs = (
        BAD_HOUR + "  - {agent_id: bad id, database_name: x, expected_hour_utc: 1, expected_minute_utc: 99}\n"
    )
    workspace.jobs_file.write_text(jobs)
    result = workspace.cli("jobs", "sync", expect_ok=False)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    for where, field in ((5, "expected_hour_utc"), (7, "agent_id"), (7, "expected_minute_utc")):
        assert any(
            f"{workspace.jobs_file}:{where}" in line and field in line for line in result.stderr.splitlines()
        )
    assert json_array(workspace.cli("jobs", "list", "--json")) == []  # nothing half-synced


def test_jobs_file_that_is_not_yaml_names_the_line(workspace: Workspace) -> None:
    workspace.jobs_file.write_text(BAD_YAML)
    result = workspace.cli("jobs", "sync", expect_ok=False)
    assert_expected_error(result, f"{workspace.jobs_file}:", "YAML")


@pytest.mark.parametrize(
    "command",
    [["jobs", "sync"], ["jobs", "sync", "--file", "elsewhere.yaml"], ["scan", "--at", f"{DAY2}T14:00:00Z"]],
)
def test_missing_jobs_file(workspace: Workspace, command: list[str]) -> None:
    result = workspace.cli(*command, expect_ok=False)
    missing = "elsewhere.yaml" if "--file" in command else str(workspace.jobs_file)
    assert_expected_error(result, missing, "not found")


@pytest.mark.parametrize(
    "command",
    [
        ["scan", "--at", "yesterday"],
        ["scan", "--at", "2025-11-21 25:00"],
        ["jobs", "sync", "--at", "tomorrow noon"],
    ],
)
def test_bad_at(workspace: Workspace, command: list[str]) -> None:
    workspace.write_jobs([job(DOUALA, "compta_db", 13)])
    result = workspace.cli(*command, expect_ok=False)
    assert_expected_error(result, "--at", repr(command[-1]))
    assert json_array(workspace.cli("entries", "--json")) == []


@pytest.mark.parametrize("value", ["2025-13-01", "21/11/2025", "today"])
def test_bad_partition(workspace: Workspace, value: str) -> None:
    workspace.write_jobs([job(DOUALA, "compta_db", 13)])
    result = workspace.cli("scan", "--at", f"{DAY2}T14:00:00Z", "--partition", value, expect_ok=False)
    assert_expected_error(result, "--partition", value)


def test_partition_outside_the_partitioned_range(workspace: Workspace) -> None:
    workspace.write_jobs([job(DOUALA, "compta_db", 13)])
    result = workspace.cli("scan", "--at", f"{DAY2}T14:00:00Z", "--partition", "2019-01-01", expect_ok=False)
    assert_expected_error(result, "2019-01-01")
    assert json_array(workspace.cli("entries", "--json")) == []


def test_bad_since(workspace: Workspace) -> None:
    assert_expected_error(workspace.cli("entries", "--since", "last week", expect_ok=False), "--since")


UNREACHABLE = "postgresql://nobody:secret@127.0.0.1:1/x"


@pytest.mark.parametrize(
    "command",
    [
        ["status", "--json"],
        ["jobs", "list", "--json"],
        ["jobs", "sync"],
        ["entries", "--json"],
        ["reports", "--json"],
        ["scan", "--at", f"{DAY2}T14:00:00Z"],
    ],
)
def test_unreachable_database(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    workspace.write_jobs([job(DOUALA, "compta_db", 13)])
    monkeypatch.setenv("BACKUP_PIPELINE_DATABASE_URL", UNREACHABLE)
    result = workspace.cli(*command, expect_ok=False)
    line = assert_expected_error(result, "127.0.0.1")
    assert "unreachable" in line.lower()
    assert "secret" not in result.output + result.stdout + result.stderr


@pytest.mark.parametrize(
    "url",
    [
        "this is not a url",
        "mysql://nobody:secret@127.0.0.1/x",
        "postgresql://nobody:secret@127.0.0.1:port/x",
    ],
)
def test_unusable_database_url(workspace: Workspace, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("BACKUP_PIPELINE_DATABASE_URL", url)
    result = workspace.cli("status", "--json", expect_ok=False)
    assert_expected_error(result, "BACKUP_PIPELINE_DATABASE_URL")
    assert "secret" not in result.stdout + result.stderr


def test_missing_deposit_root(workspace: Workspace, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    workspace.write_jobs([job(DOUALA, "compta_db", 13)])
    gone = tmp_path / "no-such-deposit"
    monkeypatch.setenv("BACKUP_STORAGE_ROOT", str(gone))
    for partitions in ([], ["--partition", DAY2]):
        result = workspace.cli("scan", "--at", f"{DAY2}T14:00:00Z", *partitions, expect_ok=False)
        assert_expected_error(result, str(gone), "BACKUP_STORAGE_ROOT")
    assert not gone.exists()  # a scan never creates the deposit area
    assert json_array(workspace.cli("entries", "--json")) == []


READ_COMMANDS = [
    ["status"],
    ["entries"],
    ["reports"],
    ["digest"],
    ["backups", "list"],
    ["notify", "log"],
    ["notify", "alerts"],
    ["notify", "test"],
    ["metrics", "dump"],
    ["drill", "--due"],
]


def test_where_there_is_no_database_reading_says_so_and_starts_no_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("BACKUP_PIPELINE_DATABASE_URL", "BACKUP_PIPELINE_HOME", "BACKUP_PIPELINE_JOBS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env here nor above: the home would be ./.backup_pipeline
    for command in READ_COMMANDS:
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 1, (command, result.output)
        error, hint = result.stderr.splitlines()
        assert error.startswith("Error: no database: BACKUP_PIPELINE_DATABASE_URL is unset"), error
        assert str(tmp_path / ".backup_pipeline" / "pgdata") in error and hint.startswith("hint: ")
        assert result.stdout == ""
    # Nor do the commands that set up, before they know their inputs exist.
    for command in (["backups", "sync"], ["scan"]):
        result = CliRunner().invoke(main, command)
        assert_expected_error(result, "jobs file", "not found", "BACKUP_PIPELINE_JOBS_FILE")
    assert not (tmp_path / ".backup_pipeline").exists()


def test_options_of_the_command_group_are_taken_after_the_command_too(workspace: Workspace) -> None:
    workspace.write_jobs([job(DOUALA, "compta_db", 13)])
    assert workspace.cli("backups", "sync", "-v").exit_code == 0
    assert json_array(workspace.cli("status", "--json", "--verbose")) != []


def test_a_usage_error_is_one_line_with_a_hint(workspace: Workspace) -> None:
    result = workspace.cli("status", "--nope", expect_ok=False)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "Error: No such option '--nope'.",
        "hint: `backup-pipeline status --help` lists what it takes",
    ]
