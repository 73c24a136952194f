"""Validation queries and restore-time objectives, through the real drill path (`backup-pipeline drill`).

A backup's `restore_drill.checks` run after its restore, read-only, as the restore's role, in the
restored database (PostgreSQL's or MariaDB's), with `:cycle` bound to the cycle's expected instant:
one row whose first column is true passes; false, NULL, no row, several rows, an error or a timeout
fail the drill with "check `<name>`: …", and every check's result is recorded. A RESTORED drill over
its `objective_minutes` is slow: a RESTORE_SLOW warning, the metrics, and RESTORE_SLOW_RECOVERED when
a later drill is within it."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import yaml

from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.drill_fixtures import (
    DAY1,
    DAY2,
    SITE,
    MariadbDumps,
    SampleDumps,
    Site,
    build_site,
    gz,
    staged,
)
from backup_pipeline_tests.support.hostile_dumps import script
from backup_pipeline_tests.support.metrics_fleet import parse
from backup_pipeline_tests.support.scan_harness import (
    PEAK_RSS,
    ScanEnv,
    peak_rss_kib,
    run_cli,
)

CHECKS: dict[str, list[dict[str, str]]] = {
    "c_pass": [
        {"name": "invoices", "sql": "SELECT count(*) = 300 FROM c_pass_invoices"},
        {"name": "recent", "sql": "SELECT max(issued) >= CAST(:cycle AS date) - 400 FROM c_pass_invoices"},
        {"name": "cycle bound", "sql": "SELECT :cycle = TIMESTAMPTZ '2025-11-21 13:00:00+00'"},
    ],
    "c_false": [
        {"name": "invoices", "sql": "SELECT count(*) = 300 FROM c_false_invoices"},
        {"name": "stale", "sql": "SELECT max(issued) >= CAST(:cycle AS date) - 2 FROM c_false_invoices"},
    ],
    "c_null": [{"name": "nothing", "sql": "SELECT NULL::boolean"}],
    "c_no_row": [{"name": "empty", "sql": "SELECT true WHERE false"}],
    "c_rows": [{"name": "many", "sql": "SELECT true FROM generate_series(1, 3)"}],
    "c_error": [{"name": "typo", "sql": "SELECT no_such_column FROM c_error_invoices"}],
    "c_slow_query": [{"name": "sleepy", "sql": "SELECT pg_sleep(30) IS NOT NULL"}],
    "c_int": [{"name": "counted", "sql": "SELECT count(*) FROM c_int_invoices"}],
}


@pytest.fixture(scope="module")
def site(module_workspace: Workspace, sample_dumps: SampleDumps, mariadb_dumps: MariadbDumps) -> Site:
    dumps = {db: {DAY2: staged(db, DAY2, gz(sample_dumps.get(db)), ".sql.gz")} for db in CHECKS}
    dumps["m_checks"] = {DAY2: staged("m_checks", DAY2, gz(mariadb_dumps.get("m_checks")), ".sql.gz")}
    dumps["m_failing"] = {DAY2: staged("m_failing", DAY2, gz(mariadb_dumps.get("m_failing")), ".sql.gz")}
    per_job: dict[str, dict[str, Any]] = {db: {"restore_drill": {"checks": c}} for db, c in CHECKS.items()}
    per_job["m_checks"] = {
        "restore_drill": {
            "checks": [
                {"name": "invoices", "sql": "SELECT COUNT(*) = 300 FROM m_checks_invoices"},
                {"name": "cycle bound", "sql": "SELECT :cycle = '2025-11-21 13:00:00'"},
                {"name": "percent", "sql": "SELECT 'a%b' LIKE 'a%' # a comment with :cycle"},
            ]
        }
    }
    per_job["m_failing"] = {
        "restore_drill": {
            "checks": [{"name": "stale", "sql": "SELECT MAX(issued) > :cycle FROM m_failing_invoices"}]
        }
    }
    return build_site(module_workspace, dumps, per_job=per_job)


def checks_of(row: dict[str, Any]) -> list[tuple[str, bool, str]]:
    return [(c["name"], c["passed"], c["detail"]) for c in row["checks"]]


def test_passing_checks_are_recorded_and_the_drill_restores(site: Site) -> None:
    row = site.drill_json("c_pass", DAY2)
    assert row["outcome"] == "RESTORED", row
    assert checks_of(row) == [
        ("invoices", True, "true"),
        ("recent", True, "true"),
        ("cycle bound", True, "true"),
    ]


@pytest.mark.parametrize(
    ("database", "reason", "recorded"),
    [
        ("c_false", "check `stale`: returned false", [("invoices", True), ("stale", False)]),
        ("c_null", "check `nothing`: returned NULL", [("nothing", False)]),
        ("c_no_row", "check `empty`: returned no row", [("empty", False)]),
        ("c_rows", "check `many`: returned several rows (one is expected)", [("many", False)]),
        ("c_error", 'check `typo`: failed: column "no_such_column" does not exist', [("typo", False)]),
        ("c_int", "check `counted`: returned '300', not true", [("counted", False)]),
    ],
)
def test_a_check_that_does_not_pass_fails_the_drill(
    site: Site, database: str, reason: str, recorded: list[tuple[str, bool]]
) -> None:
    row = site.drill_json(database, DAY2)
    assert row["outcome"] == "RESTORE_FAILED", row
    assert row["reason"] == reason
    assert [(name, passed) for name, passed, _ in checks_of(row)] == recorded
    assert row["tables"] == 2  # the restore itself came back: its figures are kept
    alerts = site.ws.json("notify", "alerts")
    assert any(a["event"] == "RESTORE_FAILED" and a["database_name"] == database for a in alerts)


def test_a_check_running_too_long_times_out(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKUP_PIPELINE_DRILL_STATEMENT_TIMEOUT_SECONDS", "2")
    row = site.drill_json("c_slow_query", DAY2)
    assert row["outcome"] == "RESTORE_FAILED", row
    assert row["reason"].startswith("check `sleepy`: failed: timed out after 2 s (statement timeout)")
    assert row["duration_seconds"] < 25


def test_checks_run_in_a_restored_mariadb_too(site: Site) -> None:
    row = site.drill_json("m_checks", DAY2)
    assert row["outcome"] == "RESTORED", (row["reason"], row["checks"])
    assert checks_of(row) == [
        ("invoices", True, "true"),
        ("cycle bound", True, "true"),
        ("percent", True, "true"),
    ]
    failing = site.drill_json("m_failing", DAY2)
    assert failing["outcome"] == "RESTORE_FAILED"
    assert failing["reason"] == "check `stale`: returned 0 (false)"


# ---------------------------------------------------------------- objectives


def jobs_with_objective(ws: Workspace, minutes: float) -> None:
    document = yaml.safe_load(ws.jobs_file.read_text())
    document["defaults"] = {"restore_drill": {"objective_minutes": minutes}}
    ws.jobs_file.write_text(yaml.safe_dump(document, sort_keys=False))
    ws.cli("backups", "sync")


def test_a_drill_over_its_objective_is_slow_and_a_later_one_within_it_recovers(
    drill_workspace: Workspace, sample_dumps: SampleDumps
) -> None:
    ws = drill_workspace
    data = {day: gz(sample_dumps.get("objective", version=i)) for i, day in enumerate((DAY1, DAY2))}
    build_site(
        ws,
        {"objective": {day: staged("objective", day, data[day], ".sql.gz") for day in data}},
        restore_drill={"objective_minutes": 0.0001},  # 6 ms: no restore is that fast
    )
    (slow,) = ws.json("drill", "--agent", SITE, "--cycle", f"{DAY1}T13:00:00Z")
    assert slow["outcome"] == "RESTORED" and slow["slow"] is True, slow
    assert slow["objective_seconds"] == pytest.approx(0.006)
    assert slow["reason"].startswith("slow: the restore took")
    table = ws.cli("drill", "--agent", SITE, "--cycle", f"{DAY1}T13:00:00Z").output
    assert "slow: the restore took" in table and "postgresql" in table

    exposition = ws.cli("metrics", "dump").output
    series = {(s.name, s.labels.get("database")): s.value for s in parse(exposition)}
    assert series[("backup_drill_last_slow", "objective")] == 1.0
    assert series[("backup_drill_objective_seconds", "objective")] == pytest.approx(0.006)

    jobs_with_objective(ws, 60)
    (quick,) = ws.json("drill", "--agent", SITE, "--cycle", f"{DAY2}T13:00:00Z")
    assert quick["outcome"] == "RESTORED" and quick["slow"] is False, quick
    events = [(a["event"], a["cycle_expected_at"][:10]) for a in ws.json("notify", "alerts")]
    assert ("RESTORE_SLOW", DAY1) in events
    assert ("RESTORE_SLOW_RECOVERED", DAY2) in events
    series = {(s.name, s.labels.get("database")): s.value for s in parse(ws.cli("metrics", "dump").output)}
    assert series[("backup_drill_last_slow", "objective")] == 0.0
    assert series[("backup_drill_objective_seconds", "objective")] == 3600.0


def test_backups_sync_refuses_a_malformed_check_naming_its_line(drill_workspace: Workspace) -> None:
    drill_workspace.jobs_file.write_text(
        "jobs:\n  - agent_id: ACME_DOUALA_PORT\n    database_name: a\n    expected_hour_utc: 1\n"
        "    expected_minute_utc: 0\n    restore_drill:\n      checks:\n"
        "        - {name: fresh, sql: SELECT true}\n        - {name: fresh, sql: SELECT false}\n"
    )
    result = drill_workspace.cli("backups", "sync", expect_ok=False)
    assert result.exit_code == 1
    assert f"{drill_workspace.jobs_file}:9: job #1" in result.output
    assert "a second check named 'fresh'" in result.output


NOISY = """
CREATE TABLE public.noise (a integer);
COPY public.noise (a) FROM stdin;
1
\\.
CREATE FUNCTION public.noisy(a integer) RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN
    PERFORM pg_catalog.set_config('client_min_messages', 'notice', true);
    FOR i IN 1 .. 40 LOOP
        RAISE NOTICE '%', pg_catalog.repeat('n', 4000000);
    END LOOP;
    RETURN true;
END $f$;
ALTER TABLE public.noise ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.noise FORCE ROW LEVEL SECURITY;
CREATE POLICY noisy ON public.noise USING (public.noisy(a));
"""


def test_a_check_reads_past_the_dumps_row_level_security(drill_workspace: Workspace) -> None:
    """A forced policy on the table a check reads would run the dump's code — here 160 MB of notices
    after lifting client_min_messages for itself — in the product's session: the checks' role reads
    past it, and the product's process stays small."""
    ws = drill_workspace
    check = {"name": "one row", "sql": "SELECT count(*) = 1 FROM noise"}
    build_site(
        ws,
        {"noisy": {DAY2: staged("noisy", DAY2, gz(script(NOISY)), ".sql.gz")}},
        per_job={"noisy": {"restore_drill": {"checks": [check]}}},
    )
    env = ScanEnv.of(ws)
    env.extra = {"BACKUP_PIPELINE_DRILL_DIR": os.environ["BACKUP_PIPELINE_DRILL_DIR"]}
    args = ("drill", "--agent", SITE, "--database", "noisy", "--cycle", f"{DAY2}T13:00:00Z", "--json")
    result = run_cli(env, *args, prelude=PEAK_RSS, timeout=300)
    stdout, stderr = result.stdout, result.stderr
    assert result.returncode == 0, stderr
    (row,) = json.loads(stdout)
    assert row["outcome"] == "RESTORED", row
    assert row["checks"] == [{"name": "one row", "passed": True, "detail": "true"}]
    # A drill's process holds about 150 MiB (the benchmarks' figure, a Dagster run in process); the
    # notices alone are 160 MB: had they reached it, it would hold twice that.
    peak = peak_rss_kib(stderr)
    assert peak < 240 * 1024, f"the drill's process held {peak // 1024} MiB"
