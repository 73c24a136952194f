"""`restore_drill:` in the jobs file: per job and in the defaults, `off`, sizes with units, the
environment's values under both, and errors that name the line and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from backup_pipeline.config.jobs_file import JobsFileError, load_jobs_file
from backup_pipeline.core.drills import DrillPolicy

ENVIRONMENT = DrillPolicy(every_days=7, max_minutes=30, max_bytes=16 << 30, shrink_below=0.5)
JOB = "{agent_id: ACME_DOUALA_PORT, database_name: %s, expected_hour_utc: 1, expected_minute_utc: 0%s}"


def load(tmp_path: Path, text: str) -> dict[str, DrillPolicy]:
    path = tmp_path / "jobs.yaml"
    path.write_text(text)
    return {b.database_name: b.restore_drill.policy(ENVIRONMENT) for b in load_jobs_file(path, 60)}


def test_job_values_over_defaults_over_the_environment(tmp_path: Path) -> None:
    policies = load(
        tmp_path,
        "defaults: {restore_drill: {every_days: 3, max_bytes: 20GiB}}\njobs:\n"
        + "\n".join(
            f"  - {JOB % pair}"
            for pair in [
                ("a", ""),
                ("b", ", restore_drill: {max_minutes: 90, max_bytes: 512 MB, shrink_below: 0.25}"),
                ("c", ", restore_drill: off"),
            ]
        ),
    )
    assert policies["a"] == DrillPolicy(every_days=3, max_minutes=30, max_bytes=20 << 30, shrink_below=0.5)
    assert policies["b"] == DrillPolicy(
        every_days=3, max_minutes=90, max_bytes=512 * 10**6, shrink_below=0.25
    )
    assert policies["c"].enabled is False and policies["c"].every_days == 3


def test_no_restore_drill_anywhere_is_the_environments_policy(tmp_path: Path) -> None:
    assert load(tmp_path, f"jobs:\n  - {JOB % ('a', '')}\n")["a"] == ENVIRONMENT


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{every_days: 0}", "restore_drill.every_days"),
        ("{max_bytes: lots}", "must be a number of bytes or a size such as 512MiB, 16GiB or 20GB"),
        ("{max_bytes: 1MiB}", "restore_drill.max_bytes"),
        ("{shrink_below: 2}", "restore_drill.shrink_below"),
        ("{often: true}", "restore_drill.often"),
    ],
)
def test_bad_values_name_the_line_and_the_field(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(JobsFileError) as error:
        load(tmp_path, f"jobs:\n  - {JOB % ('a', ', restore_drill: ' + value)}\n")
    assert ":2: job #1" in str(error.value) and message in str(error.value)


# ---------------------------------------------------------------- validation queries and objectives

CHECKED = """defaults:
  restore_drill:
    objective_minutes: 45
    checks:
      - {name: invoices, sql: "SELECT count(*) > 0 FROM invoices"}
jobs:
  - agent_id: ACME_DOUALA_PORT
    database_name: a
    expected_hour_utc: 1
    expected_minute_utc: 0
  - agent_id: ACME_DOUALA_PORT
    database_name: b
    expected_hour_utc: 1
    expected_minute_utc: 0
    restore_drill:
      objective_minutes: 7.5
      checks:
        - name: fresh
          sql: SELECT max(issued) >= CAST(:cycle AS date) - 2 FROM invoices
        - name: customers
          sql: |
            SELECT count(*) >= 10
            FROM customers
"""


def test_checks_and_objectives_come_from_the_job_or_the_defaults(tmp_path: Path) -> None:
    policies = load(tmp_path, CHECKED)
    assert [c.name for c in policies["a"].checks] == ["invoices"]
    assert policies["a"].objective_minutes == 45 and policies["a"].objective_seconds == 2700
    assert [c.name for c in policies["b"].checks] == ["fresh", "customers"]  # the job's replace them
    assert policies["b"].checks[1].sql == "SELECT count(*) >= 10\nFROM customers"
    assert policies["b"].objective_minutes == 7.5


@pytest.mark.parametrize(
    ("checks", "line", "message"),
    [
        ("[{sql: SELECT true}]", 7, "restore_drill.checks[0].name': Field required"),
        ("[{name: a, sql: '  '}]", 7, "restore_drill.checks[0].sql': must not be empty"),
        ("[{name: a}]", 7, "restore_drill.checks[0].sql': Field required"),
        ("[{name: '', sql: SELECT true}]", 7, "restore_drill.checks[0].name': must be 1-64"),
        ("[{name: a, sql: SELECT true, rows: 1}]", 7, "restore_drill.checks[0].rows'"),
        (
            "\n        - {name: a, sql: SELECT true}\n        - {name: a, sql: SELECT false}",
            9,
            "a second check named 'a'",
        ),
    ],
)
def test_a_malformed_check_is_refused_naming_its_line(
    tmp_path: Path, checks: str, line: int, message: str
) -> None:
    text = (
        "jobs:\n  - agent_id: ACME_DOUALA_PORT\n    database_name: a\n    expected_hour_utc: 1\n"
        f"    expected_minute_utc: 0\n    restore_drill:\n      checks: {checks}\n"
    )
    with pytest.raises(JobsFileError) as error:
        load(tmp_path, text)
    assert message in str(error.value), str(error.value)
    assert f":{line}: job #1" in str(error.value), str(error.value)


def test_two_checks_of_the_defaults_with_one_name_are_refused(tmp_path: Path) -> None:
    text = (
        "defaults:\n  restore_drill:\n    checks:\n      - {name: x, sql: SELECT 1}\n"
        "      - {name: x, sql: SELECT 2}\njobs: []\n"
    )
    with pytest.raises(JobsFileError) as error:
        load(tmp_path, text)
    assert ":5: defaults" in str(error.value) and "a second check named 'x'" in str(error.value)


@pytest.mark.parametrize("value", ["0", "-1", "lots"])
def test_an_objective_must_be_a_positive_number(tmp_path: Path, value: str) -> None:
    with pytest.raises(JobsFileError) as error:
        load(tmp_path, f"jobs:\n  - {JOB % ('a', ', restore_drill: {objective_minutes: ' + value + '}')}\n")
    assert "restore_drill.objective_minutes" in str(error.value)
