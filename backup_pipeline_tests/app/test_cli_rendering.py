"""Tables and progress for people: on a terminal (a real pseudo-terminal, 120 columns) statuses are
coloured, rows fit the width and long work shows progress; elsewhere the output is plain, whole rows,
with nothing added. Hashes are shortened unless `--wide`."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backup_pipeline.app.render import wrap_text
from backup_pipeline.config.settings import load_settings
from backup_pipeline.defs import SCAN_JOB, build_definitions
from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.metrics_fleet import DAY, DOUALA, build_fleet
from backup_pipeline_tests.support.terminal import ANSI, on_terminal, visible


def test_status_on_a_terminal_is_coloured_and_fits_120_columns(workspace: Workspace) -> None:
    build_fleet(workspace)
    full_hash = next(r for r in workspace.json("status") if r["previous_successful_hash_global"])[
        "previous_successful_hash_global"
    ]
    shown = on_terminal("status")
    assert "\x1b[" in shown  # colours
    lines = visible(shown)
    assert max(len(line) for line in lines) <= 120, "\n".join(lines)
    text = "\n".join(lines)
    assert DOUALA in text and "TRANSFER_INTEGRITY_FAILED" in text and "MISSING" in text
    assert f"{full_hash[:12]}…" in text and full_hash not in text
    entries = visible(on_terminal("entries"))
    assert max(len(line) for line in entries) <= 120
    wide = "\n".join(visible(on_terminal("status", "--wide", columns=250)))
    assert full_hash in wide


def test_elsewhere_tables_are_plain_whole_rows(workspace: Workspace) -> None:
    build_fleet(workspace)
    rows = workspace.json("status")
    table = workspace.cli("status").stdout
    assert "\x1b" not in table
    lines = table.splitlines()
    assert len(lines) == 2 + len(rows)  # header, rule, one line per row however long
    for row in rows:
        (line,) = [
            line
            for line in lines
            if row["agent_id"] in line and f" {row['database_name']} " in line and f" {row['name']} " in line
        ]
        assert row["current_status"] in line
        if row["previous_successful_hash_global"]:
            assert f"{row['previous_successful_hash_global'][:12]}…" in line
    wide = workspace.cli("status", "--wide").stdout
    assert all(
        r["previous_successful_hash_global"] in wide for r in rows if r["previous_successful_hash_global"]
    )
    entries = workspace.json("entries")
    assert len(workspace.cli("entries").stdout.splitlines()) == 2 + len(entries)
    run_id = entries[0]["dagster_run_id"]
    assert run_id not in workspace.cli("entries").stdout  # not a column of the narrow table
    assert run_id in workspace.cli("entries", "--wide").stdout


def test_progress_shows_on_a_terminal_only(workspace: Workspace, tmp_path: Path) -> None:
    args = [
        "simulate",
        "--root",
        str(tmp_path / "sim"),
        "--agents",
        "40",
        "--databases",
        "2",
        "--size",
        "128",
    ]
    args += ["--at", f"{DAY}T23:00:00Z"]
    plain = workspace.cli(*args).stdout
    summary, how_to_scan = plain.splitlines()  # and no progress bar
    assert summary.startswith("simulated 40 agent(s)") and how_to_scan.startswith("to judge these days:")
    shown = on_terminal(*args)
    assert "simulating agents" in shown and "40/40" in ANSI.sub("", shown)
    # A scan shows each run's steps as they end, then leaves only its tables.
    workspace.write_jobs(
        [
            {
                "agent_id": DOUALA,
                "database_name": "compta_db",
                "expected_hour_utc": 13,
                "expected_minute_utc": 0,
            }
        ]
    )
    scanned = on_terminal("scan", "--at", f"{DAY}T23:00:00Z", "--partition", DAY)
    steps = ANSI.sub("", scanned)
    assert re.search(rf"scan {DAY}\S* .*\b\d+/\d+\b", steps), steps  # the run's steps done / known
    again = workspace.cli("scan", "--at", f"{DAY}T23:00:00Z", "--partition", DAY).stdout
    assert f"scan {DAY}" not in again and "ingest_reports" not in again


@pytest.mark.slow
def test_the_demo_partitions_start_at_the_simulated_fleets_first_day_and_it_drills_real_dumps(
    workspace: Workspace, drill_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The demo exports its settings into this process's environment: the test's come back afterwards.
    for variable in [*load_settings().environment(), "DAGSTER_HOME", "BACKUP_PIPELINE_DAGSTER_PG_URL"]:
        monkeypatch.setenv(variable, os.environ.get(variable, ""))  # recorded: restored or removed after
        if not os.environ[variable]:
            monkeypatch.delenv(variable)
    monkeypatch.setenv("BACKUP_PIPELINE_DRILL_DIR", str(drill_dir))  # reachable by the drill user
    out = workspace.cli("demo", "--no-ui").stdout
    assert "simulated 4 agents" in out
    drills = out.split("Restore drills of each database's latest good backup:")[1]
    assert "RESTORED" in drills  # real pg_dump output, restored (which ones fail depends on the hour)
    exported = load_settings()  # what `dagster dev` and every process it starts would read
    first = datetime.now(UTC).date() - timedelta(days=2)
    assert exported.start_date == first
    partitions = build_definitions(exported).resolve_job_def(SCAN_JOB).partitions_def
    assert partitions is not None and partitions.get_first_partition_key() == first.isoformat()


@given(
    text=st.text(st.sampled_from("ab_./ -x1"), max_size=120) | st.text(max_size=80),
    width=st.integers(min_value=1, max_value=40),
)
def test_long_texts_wrap_between_words_and_never_lose_a_character(text: str, width: int) -> None:
    lines = wrap_text(text, width)
    assert all(len(line) <= width for line in lines)
    assert "".join("".join(lines).split()) == "".join(text.split())  # every character, in order
    for word in text.split():
        if len(word) <= width:  # a word that fits is never cut
            assert any(word in line.split() for line in lines), (word, lines)
