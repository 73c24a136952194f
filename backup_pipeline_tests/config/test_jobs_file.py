"""The expected jobs declared as code in YAML: resolution of defaults, and errors naming line and field."""

from __future__ import annotations

import textwrap
from datetime import UTC
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from backup_pipeline.config.jobs_file import JobsFileError, load_jobs_file
from backup_pipeline.core.domain import ContentPolicy, ExpectedBackup
from backup_pipeline.core.schedules import Schedule

EXAMPLE = """\
defaults:
  window_minutes: 45
  timezone: UTC
  content_change: changed
jobs:
  - agent_id: SIRPACAM_DOUALA_NEWBELL
    database_name: compta_db
    expected_hour_utc: 13
    expected_minute_utc: 0
  - agent_id: SIRPACAM_BAFOUSSAM_CAMPUS_1
    database_name: X_2025
    expected_hour_utc: 2
    expected_minute_utc: 30
    window_minutes: 90
    timezone: Africa/Douala
    staged_file_name: X_2025.zst
    content_change: unchanged
"""

JOB = """\
  - agent_id: SIRPACAM_DOUALA_NEWBELL
    database_name: compta_db
    expected_hour_utc: 13
    expected_minute_utc: 0
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "jobs.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str, default_window: int = 60) -> tuple[Path, str]:
    path = write(tmp_path, text)
    with pytest.raises(JobsFileError) as info:
        load_jobs_file(path, default_window)
    return path, str(info.value)


def test_example_file_resolves(tmp_path: Path) -> None:
    first, second = load_jobs_file(write(tmp_path, EXAMPLE), default_window=60)

    assert first.key == ("SIRPACAM_DOUALA_NEWBELL", "compta_db", "1300")  # a daily-UTC backup's name: HHMM
    assert (first.early_minutes, first.grace_minutes) == (45, 45)  # from defaults
    assert first.timezone == "UTC"
    assert first.staged_file_name is None
    assert first.content_change is ContentPolicy.CHANGED

    assert second.key == ("SIRPACAM_BAFOUSSAM_CAMPUS_1", "X_2025", "0230")
    assert (second.early_minutes, second.grace_minutes) == (90, 90)  # the job's own value wins
    assert second.timezone == "Africa/Douala"
    assert second.staged_file_name == "X_2025.zst"
    assert second.content_change is ContentPolicy.UNCHANGED

    assert first.to_domain() == ExpectedBackup(
        agent_id="SIRPACAM_DOUALA_NEWBELL",
        database_name="compta_db",
        schedule=Schedule.daily_utc(13, 0),
        name="1300",
        early_minutes=45,
        grace_minutes=45,
        timezone=ZoneInfo("UTC"),
        staged_file_name=None,
        content_change=ContentPolicy.CHANGED,
    )
    domain = second.to_domain()
    assert domain.timezone == ZoneInfo("Africa/Douala")
    assert (domain.early_minutes, domain.grace_minutes) == (90, 90)
    assert domain.schedule == Schedule.daily_utc(2, 30)  # UTC, whatever the agent's zone
    assert domain.schedule.text == "daily at 02:30 (UTC)"
    assert domain.staged_file_name == "X_2025.zst"
    assert domain.content_change is ContentPolicy.UNCHANGED
    assert domain.label == "SIRPACAM_BAFOUSSAM_CAMPUS_1/X_2025@0230"


def test_environment_window_when_neither_job_nor_defaults_set_it(tmp_path: Path) -> None:
    (job,) = load_jobs_file(write(tmp_path, "jobs:\n" + JOB), default_window=75)
    assert (job.early_minutes, job.grace_minutes) == (75, 75)
    assert job.timezone == "UTC"
    assert job.content_change is ContentPolicy.CHANGED
    assert job.to_domain().timezone.utcoffset(None) == UTC.utcoffset(None)


def test_defaults_zone_and_policy_apply_to_every_job(tmp_path: Path) -> None:
    text = "defaults:\n  timezone: Africa/Douala\n  content_change: 'off'\njobs:\n" + JOB
    (job,) = load_jobs_file(write(tmp_path, text), default_window=60)
    assert (job.early_minutes, job.grace_minutes) == (60, 60)
    assert job.timezone == "Africa/Douala"
    assert job.content_change is ContentPolicy.OFF


def test_same_database_twice_a_day(tmp_path: Path) -> None:
    text = "jobs:\n" + JOB + JOB.replace("expected_hour_utc: 13", "expected_hour_utc: 20")
    jobs = load_jobs_file(write(tmp_path, text), default_window=60)
    assert [j.expected_hour_utc for j in jobs] == [13, 20]


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "jobs: []\n", "defaults:\n  window_minutes: 30\n"])
def test_empty_files_declare_no_jobs(tmp_path: Path, text: str) -> None:
    assert load_jobs_file(write(tmp_path, text), default_window=60) == []


# ---------------------------------------------------------------- errors name line and field


def test_bad_hour(tmp_path: Path) -> None:
    path, message = error_of(
        tmp_path, "jobs:\n" + JOB.replace("expected_hour_utc: 13", "expected_hour_utc: 25")
    )
    assert f"{path}:4: job #1, field 'expected_hour_utc': Input should be less than or equal to 23" in message


def test_bad_minute_and_window(tmp_path: Path) -> None:
    text = "jobs:\n" + JOB.replace("expected_minute_utc: 0", "expected_minute_utc: 60\n    window_minutes: 0")
    path, message = error_of(tmp_path, text)
    assert f"{path}:5: job #1, field 'expected_minute_utc'" in message
    assert f"{path}:6: job #1, field 'window_minutes'" in message


def test_missing_field(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, "jobs:\n" + JOB.replace("    database_name: compta_db\n", ""))
    assert f"{path}:2: job #1, field 'database_name': Field required" in message


def test_unknown_field(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, "jobs:\n" + JOB + "    colour: blue\n")
    assert f"{path}:6: job #1, field 'colour': Extra inputs are not permitted" in message


def test_unknown_field_in_defaults(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, "defaults:\n  window: 30\njobs:\n" + JOB)
    assert f"{path}:2: defaults, field 'window': Extra inputs are not permitted" in message


def test_unknown_field_in_defaults_without_jobs(tmp_path: Path) -> None:
    # an empty job list would deactivate every job: a broken file must not pass for one
    path, message = error_of(tmp_path, "defaults:\n  window: 30\n")
    assert f"{path}:2: defaults, field 'window'" in message


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, "job:\n" + JOB)
    assert f"{path}:1: unknown top-level key(s): ['job']" in message


def test_bad_time_zone(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, "jobs:\n" + JOB + "    timezone: Africa/Yaounde_Central\n")
    assert f"{path}:6: job #1, field 'timezone'" in message
    assert "unknown time zone 'Africa/Yaounde_Central'" in message


def test_bad_time_zone_in_defaults(tmp_path: Path) -> None:
    path, message = error_of(
        tmp_path, "defaults:\n  window_minutes: 30\n  timezone: Mars/Olympus\njobs:\n" + JOB
    )
    assert f"{path}:3: defaults, field 'timezone'" in message
    assert "unknown time zone 'Mars/Olympus'" in message


@pytest.mark.parametrize(
    "agent", ["SIRPACAM_DOUALA", "SIRPACAM_DOUALA_NEW BELL", "../SIRPACAM_DOUALA_NEWBELL"]
)
def test_bad_agent_id(tmp_path: Path, agent: str) -> None:
    path, message = error_of(tmp_path, "jobs:\n" + JOB.replace("SIRPACAM_DOUALA_NEWBELL", f"'{agent}'"))
    assert f"{path}:2: job #1, field 'agent_id'" in message
    assert "ENTREPRISE_VILLE_QUARTIER" in message


@pytest.mark.parametrize("agent", ["A" * 150 + "_B_C", "SIRPACAM_DOUALA_" + "X" * 200])
def test_an_agent_id_longer_than_the_database_holds_is_refused_with_the_limit(
    tmp_path: Path, agent: str
) -> None:
    """Issue 20: refused by the file's check (naming the limit), never by PostgreSQL."""
    path, message = error_of(tmp_path, "jobs:\n" + JOB.replace("SIRPACAM_DOUALA_NEWBELL", agent))
    assert f"{path}:2: job #1, field 'agent_id'" in message
    assert f"is {len(agent)} characters long; an agent id has at most 128" in message


@pytest.mark.parametrize("staged", ["a" * 256, "é" * 128])
def test_a_staged_file_name_longer_than_a_file_name_is_refused(tmp_path: Path, staged: str) -> None:
    path, message = error_of(tmp_path, "jobs:\n" + JOB + f"    staged_file_name: {staged}\n")
    assert f"{path}:6: job #1, field 'staged_file_name'" in message
    assert "bytes long; a file name has at most 255" in message


@pytest.mark.parametrize("name", ["'../etc'", "'a/b'", "''", "'-rf'"])
def test_bad_database_name(tmp_path: Path, name: str) -> None:
    path, message = error_of(tmp_path, "jobs:\n" + JOB.replace("compta_db", name))
    assert f"{path}:3: job #1, field 'database_name'" in message


@pytest.mark.parametrize("staged", ["/home/lam/Backup/X.zst", "'C:\\Backups\\X.zst'", "'..'"])
def test_staged_file_name_must_be_a_plain_name(tmp_path: Path, staged: str) -> None:
    path, message = error_of(tmp_path, "jobs:\n" + JOB + f"    staged_file_name: {staged}\n")
    assert f"{path}:6: job #1, field 'staged_file_name'" in message


def test_bad_content_policy(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, "jobs:\n" + JOB + "    content_change: sometimes\n")
    assert f"{path}:6: job #1, field 'content_change'" in message


def test_duplicate_job(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, "jobs:\n" + JOB + JOB)
    assert f"{path}:6: job #2 repeats the job declared at line 2" in message


def test_every_problem_is_listed(tmp_path: Path) -> None:
    # lines: 1 jobs, 2-5 job #1 (hour 25), 6-9 job #2, 10-14 job #3 (colour), 15-18 job #4 (= job #2)
    text = "jobs:\n" + JOB.replace("13", "25") + JOB + JOB + "    colour: blue\n" + JOB
    path, message = error_of(tmp_path, text)
    assert message.startswith("invalid jobs file:")
    assert f"{path}:4: job #1, field 'expected_hour_utc'" in message
    assert f"{path}:14: job #3, field 'colour'" in message
    assert f"{path}:15: job #4 repeats the job declared at line 6" in message
    assert len(message.splitlines()) == 4


def test_jobs_without_entries(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, "jobs:\n")
    assert message == f"{path}:1: 'jobs' must be a list"


def test_entry_that_is_not_a_mapping(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, "jobs:\n  - compta_db\n")
    assert f"{path}:2: job #1, entry:" in message


def test_jobs_must_be_a_list(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, "jobs:\n  agent_id: SIRPACAM_DOUALA_NEWBELL\n")
    assert f"{path}:2: 'jobs' must be a list" in message


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, JOB)
    assert f"{path}:1: expected a mapping with 'defaults' and 'jobs'" in message


def test_not_yaml(tmp_path: Path) -> None:
    path, message = error_of(
        tmp_path, "jobs:\n  - agent_id: [SIRPACAM_DOUALA_NEWBELL\n    database_name: x\n"
    )
    assert message.startswith(f"{path}:")
    assert "not valid YAML" in message


def test_not_yaml_bad_indentation(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, "jobs:\n  - agent_id: A_B_C\n   database_name: x\n")
    assert message.startswith(f"{path}:3: not valid YAML")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("jobs:\n  - !!python/object:os.system {}\n", 2),
        ("? [jobs, defaults]\n: 1\n", 1),
    ],
)
def test_yaml_a_safe_loader_refuses(tmp_path: Path, text: str, line: int) -> None:
    path, message = error_of(tmp_path, text)
    assert message.startswith(f"{path}:{line}: not valid YAML")


@pytest.mark.parametrize(
    ("text", "line", "key", "first"),
    [
        (JOB + "    expected_hour_utc: 14\n", 6, "expected_hour_utc", 4),  # in a job
        ("defaults:\n  window_minutes: 30\n  window_minutes: 90\njobs:\n" + JOB, 3, "window_minutes", 2),
        ("jobs:\n" + JOB + "jobs:\n" + JOB, 6, "jobs", 1),  # the whole list, silently replaced
    ],
)
def test_a_key_written_twice_is_an_error_naming_both_lines(
    tmp_path: Path, text: str, line: int, key: str, first: int
) -> None:
    path, message = error_of(tmp_path, text if text.startswith(("defaults", "jobs")) else "jobs:\n" + text)
    assert message == f"{path}:{line}: not valid YAML: duplicate key {key!r} (first at line {first})"


def test_a_merged_mapping_may_be_overridden(tmp_path: Path) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_text(
        "jobs:\n  - &first\n" + JOB.replace("  - agent_id", "    agent_id")
        + "  - <<: *first\n    database_name: paie_db\n"
    )  # fmt: skip
    assert [job.database_name for job in load_jobs_file(path, 60)] == ["compta_db", "paie_db"]


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(JobsFileError, match=r"absent\.yaml not found"):
        load_jobs_file(path, 60)


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_bytes(b"jobs:\n  - agent_id: \xff\xfe\n")
    with pytest.raises(JobsFileError, match="is not UTF-8 text \\(invalid byte at offset 20\\)"):
        load_jobs_file(path, 60)


@pytest.mark.parametrize(
    ("first", "second", "key"),
    [
        pytest.param(
            ("SIRPACAM_DOUALA_NEWBELL", "compta.db", ""),
            ("SIRPACAM_DOUALA_NEWBELL", "compta_db", ""),
            "backups/SIRPACAM_DOUALA_NEWBELL/compta_db_1300",
            id="database-punctuation",
        ),
        pytest.param(
            ("SIRPACAM_DOUALA_NEWBELL", "stock_db", "full_weekly"),
            ("SIRPACAM_DOUALA_NEWBELL", "stock", "db_full_weekly"),
            "backups/SIRPACAM_DOUALA_NEWBELL/stock_db_full_weekly",
            id="database-and-name-run-together",
        ),
        pytest.param(
            ("SIRPACAM-NORD_DOUALA_NEWBELL", "compta_db", ""),
            ("SIRPACAM_NORD_DOUALA_NEWBELL", "paie_db", ""),
            "backups/SIRPACAM_NORD_DOUALA_NEWBELL",
            id="agent-punctuation",
        ),
    ],
)
def test_two_backups_that_would_be_one_dagster_asset_are_refused_naming_both_lines(
    tmp_path: Path, first: tuple[str, str, str], second: tuple[str, str, str], key: str
) -> None:
    """Dagster asset keys keep [A-Za-z0-9_]: two expected backups (or agents, shown as one asset each
    in large fleets) whose names differ only elsewhere would be merged into one asset."""
    jobs = "".join(
        f"  - {{agent_id: {agent}, database_name: {database}, expected_hour_utc: 13, expected_minute_utc: 0"
        + (f", name: {name}" if name else "")
        + "}\n"
        for agent, database, name in (("SIRPACAM_BAFOUSSAM_CAMPUS_1", "ventes_db", ""), first, second)
    )
    path, message = error_of(tmp_path, "jobs:\n" + jobs)
    assert message.startswith(
        f"invalid jobs file: {path}:4: job #3 (agent '{second[0]}', database '{second[1]}'"
    )
    assert f"and job #2 at line 3 (agent '{first[0]}', database '{first[1]}'" in message
    assert f"would share the Dagster asset `{key}`" in message
