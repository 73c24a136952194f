"""Issue 20: nothing one agent writes can fail another agent's evaluation, nor a whole scan.

Every hostile name of the issue sits in ONE agent's folder (and one overlong agent folder beside it);
two neighbours back up as usual. Every agent shares one evaluation batch. Through `backup-pipeline
scan`, on this scan and the next: the neighbours' cycles are SUCCESS, the hostile agent's own cycles
are decided with a bounded reason, every hostile report is recorded (escaped) and archived, and the
scan exits 0 without a traceback.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path

import pytest

from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.deposit_builder import Agent, gz, utc
from backup_pipeline_tests.support.scan_harness import ScanEnv, finish, pause_at, paused, start_cli

HOSTILE = "SIRPACAM_DOUALA_HOSTILE"
NEIGHBOURS = ("SIRPACAM_DOUALA_AKWA", "SIRPACAM_YAOUNDE_BASTOS")
LONG_AGENT = "A" * 150 + "_B_C"  # a valid-looking id above the 128 characters an agent id may have
ESCAPES = "\x1b]0;owned\x07\x1b[2J\x1b[31mred\u202egnp.exe"  # window title, clear screen, colour, RLO
DATABASES = ("long_staged", "newline_staged", "escapes", "ok_db")


def job(agent: str, database: str) -> dict[str, object]:
    return {"agent_id": agent, "database_name": database, "expected_hour_utc": 13, "expected_minute_utc": 0}


def hostile_day(agent: Agent, end: datetime) -> None:
    """One report naming every hostile staged name and text, plus report files with hostile names."""
    good = gz(b"the hostile agent's one good dump", mtime=int(end.timestamp()))
    agent.stage("ok_db.sql.gz", good)
    sections = {
        "long_staged": agent.database_section("a" * 300, good),
        "newline_staged": agent.database_section("bad\n" + "b" * 260, good),
        "escapes": agent.database_section(
            "escapes.sql.gz", good, transfer=False, error=ESCAPES, logs=ESCAPES * 3
        ),
        "ok_db": agent.database_section("ok_db.sql.gz", good),
    }
    agent.report(end, sections)
    log = os.fsencode(agent.log)
    stamp = f"{end:%Y%m%d_%H%M}".encode()
    for raw in (
        b"\xff" * 245 + b".json",  # its escaped form is 985 characters long
        stamp + b"01_" + ESCAPES.encode() + b".json",
        stamp + b"02_\xe2\x80\xae" + b"x" * 200 + b".json",
    ):
        with open(log + b"/" + raw, "wb") as handle:
            handle.write(b"{}")
        os.utime(log + b"/" + raw, (end.timestamp(), end.timestamp()))


def long_agent_folder(root) -> None:
    log = root / LONG_AGENT / "log"
    log.mkdir(parents=True, exist_ok=True)
    (log / f"20251121_130500_{LONG_AGENT}.json").write_text("{}")


@pytest.mark.slow
def test_hostile_names_in_one_agent_folder_cost_only_that_agent(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKUP_PIPELINE_MAX_BATCHES", "1")  # every agent in the hostile one's batch
    workspace.write_jobs([job(n, "compta_db") for n in NEIGHBOURS] + [job(HOSTILE, d) for d in DATABASES])
    workspace.cli("backups", "sync", "--at", "2025-11-21T08:00:00Z")
    hostile = Agent(workspace.root, HOSTILE)
    long_agent_folder(workspace.root)
    for day, at in (("2025-11-21", "2025-11-21T14:30:00Z"), ("2025-11-22", "2025-11-22T14:30:00Z")):
        end = utc(f"{day}T13:05:00Z")
        for name in NEIGHBOURS:
            Agent(workspace.root, name).backup(end, "compta_db", f"{name}'s database".encode())
        hostile_day(hostile, end)
        result = workspace.cli("scan", "--at", at, expect_ok=False)
        assert result.exit_code == 0, result.output
        assert "Traceback" not in result.output

        cycle = f"{day}T13:00:00Z"
        for name in NEIGHBOURS:
            entry = workspace.entry(name, "compta_db", cycle)
            assert entry is not None and entry["status"] == "SUCCESS", (name, day, entry)
        decided = {d: workspace.entry(HOSTILE, d, cycle) for d in DATABASES}
        assert decided["ok_db"]["status"] == "SUCCESS", decided["ok_db"]
        for database in ("long_staged", "newline_staged"):
            entry = decided[database]
            assert entry["status"] == "TRANSFER_INTEGRITY_FAILED", entry
            assert "names no usable staged file" in entry["message"]
            assert len(entry["message"]) < 400, "the agent's text is bounded in the message"
            assert "\n" not in entry["message"]
        assert decided["escapes"]["status"] == "FAILED"

        records = [r for r in workspace.json("reports") if r["file_name"].startswith(day.replace("-", ""))]
        hostile_names = [r for r in workspace.json("reports") if not r["file_name"][:8].isdigit()]
        assert hostile_names and all(not r["accepted"] and r["archived_path"] for r in hostile_names)
        assert all(r["archived_path"] for r in records)
        assert not [n for n in os.listdir(hostile.log) if n != "_archive"], "every report archived"

        # The overlong agent folder is skipped: nothing in it recorded, read or moved.
        assert LONG_AGENT not in {r["agent_id"] for r in workspace.json("reports")}
        assert (workspace.root / LONG_AGENT / "log" / f"20251121_130500_{LONG_AGENT}.json").exists()
        assert not (workspace.root / LONG_AGENT / "log" / "_archive").exists()


@pytest.mark.slow
def test_folders_swapped_for_links_during_a_real_scan_read_nothing_outside(
    workspace: Workspace, tmp_path: Path
) -> None:
    """The attack of the issue, on a real scan in its own process: once the scan has found the agent
    folders, one agent swaps its log/ for a link to a folder holding a report of its own making, and
    another its database/ for a link to a folder holding the dump its report claims. Neither is
    read; both are recorded with why; the neighbour is evaluated as usual."""
    swapping_log, swapping_dumps, neighbour = HOSTILE, *NEIGHBOURS
    workspace.write_jobs([job(a, "compta_db") for a in (swapping_log, swapping_dumps, neighbour)])
    end = utc("2025-11-21T13:05:00Z")
    for name in (swapping_dumps, neighbour):
        Agent(workspace.root, name).backup(end, "compta_db", b"inside")
    (workspace.root / swapping_log / "log").mkdir(parents=True)  # an empty log/, found by discovery
    outside = Agent(tmp_path / "outside", swapping_log)
    outside.backup(end, "compta_db", b"forged")  # a valid report and its dump, outside the deposit
    forged_dumps = Agent(tmp_path / "outside", swapping_dumps)
    dump = gz(b"inside", mtime=int(end.timestamp()))  # what the report in log/ claims
    forged_dumps.stage("compta_db.sql.gz", dump)

    env = ScanEnv.of(workspace)
    marker, go = tmp_path / "found", tmp_path / "go"
    prelude = pause_at("backup_pipeline.scan.ingest:discover_agents", marker, go, when="after")
    process = start_cli(
        env, "scan", "--at", "2025-11-21T14:30:00Z", "--partition", "2025-11-21", prelude=prelude
    )
    with paused(process, marker, go):
        log = workspace.root / swapping_log / "log"
        log.rename(log.with_name("log.real"))
        log.symlink_to(outside.log, target_is_directory=True)
        database = workspace.root / swapping_dumps / "database"
        database.rename(database.with_name("database.real"))
        database.symlink_to(forged_dumps.folder / "database", target_is_directory=True)
    stdout, stderr = finish(process, 180, "the scan")
    assert process.returncode == 0, stdout + stderr
    assert "Traceback" not in stdout + stderr
    assert f"skipped folder {swapping_log}: {swapping_log}/log is a symbolic link" in stderr

    recorded = {r["agent_id"] for r in workspace.json("reports")}
    assert swapping_log not in recorded, "the report outside the deposit was recorded"
    assert workspace.entry(swapping_log, "compta_db", "2025-11-21T13:00:00Z")["status"] == "MISSING"
    refused = workspace.entry(swapping_dumps, "compta_db", "2025-11-21T13:00:00Z")
    assert refused["status"] == "TRANSFER_INTEGRITY_FAILED", refused
    assert f"{swapping_dumps}/database is a symbolic link" in refused["message"]
    assert refused["server_calculated_staged_hash"] is None, "the dump outside was hashed"
    assert workspace.entry(neighbour, "compta_db", "2025-11-21T13:00:00Z")["status"] == "SUCCESS"
    assert (outside.log / f"{end:%Y%m%d_%H%M%S}_{swapping_log}.json").exists(), "nothing moved outside"


# What no output may carry raw: ESC (every terminal escape sequence), BEL, C1's CSI, a line break
# inside an agent's text, and the bidirectional overrides and isolates.
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def test_agent_text_reaches_the_terminal_and_the_logs_escaped(workspace: Workspace) -> None:
    """Escape sequences and bidirectional overrides in a report's file name, `error_message` and
    `logs_summary` reach the operator as visible escapes, in the scan's logs, every table and the
    digest; `--json` keeps them intact (JSON escapes them itself)."""
    workspace.write_jobs([job(HOSTILE, d) for d in DATABASES])
    hostile = Agent(workspace.root, HOSTILE)
    hostile_day(hostile, utc("2025-11-21T13:05:00Z"))
    outputs = {
        "scan": workspace.cli(
            "-v", "scan", "--at", "2025-11-21T14:30:00Z", "--partition", "2025-11-21"
        ).output,
        "reports": workspace.cli("reports", "--wide").output,
        "entries": workspace.cli("entries", "--wide").output,
        "status": workspace.cli("status", "--wide").output,
        "digest": workspace.cli("digest", "--date", "2025-11-21").output,
        "alerts": workspace.cli("notify", "alerts").output,
    }
    for name, text in outputs.items():
        lines = [line for line in text.splitlines() if RAW.search(line)]
        assert not lines, f"{name}: {lines[:3]!r}"
    assert "\\x1b]0;owned\\x07" in outputs["entries"] and "\\u202e" in outputs["entries"]
    assert "\\x1b]0;owned\\x07" in outputs["reports"]
    assert "\\x1b]0;owned\\x07" in outputs["scan"], "the decisions logged"
    escapes = [e for e in workspace.json("entries") if e["database_name"] == "escapes"]
    assert ESCAPES in escapes[0]["agent_transfer_error_message"], "the stored text is the agent's own"
