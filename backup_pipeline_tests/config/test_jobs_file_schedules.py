"""The jobs file's schedules: cron expressions in a zone, early/grace windows, names, and errors
naming the line and the field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from backup_pipeline.config.jobs_file import JobsFileError, load_jobs_file
from backup_pipeline.config.schedules import fires, firing_days

MIXED = """\
defaults:
  early_minutes: 60
  grace_minutes: 120
jobs:
  - agent_id: SIRPACAM_DOUALA_NEWBELL
    database_name: compta_db
    expected_hour_utc: 13
    expected_minute_utc: 0
  - agent_id: SIRPACAM_DOUALA_NEWBELL
    database_name: compta_db
    name: weekly_full
    schedule: "30 2 * * 0"
    timezone: Europe/Paris
    early_minutes: 15
    grace_minutes: 180
  - agent_id: SIRPACAM_DOUALA_NEWBELL
    database_name: paie_db
    schedule: "0 22 L * *"
"""


def load(tmp_path: Path, text: str, default_window: int = 60) -> list:
    path = tmp_path / "jobs.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_jobs_file(path, default_window)


def error(tmp_path: Path, text: str) -> tuple[Path, str]:
    with pytest.raises(JobsFileError) as info:
        load(tmp_path, text)
    return tmp_path / "jobs.yaml", str(info.value)


def job(**fields: object) -> str:
    lines = ["  - agent_id: SIRPACAM_DOUALA_NEWBELL", "    database_name: compta_db"]
    lines += [f"    {k}: {v}" for k, v in fields.items()]
    return "\n".join(lines) + "\n"


def test_both_forms_in_one_file(tmp_path: Path) -> None:
    daily, weekly, month_end = load(tmp_path, MIXED)

    assert daily.key == ("SIRPACAM_DOUALA_NEWBELL", "compta_db", "1300")
    assert (daily.schedule, daily.early_minutes, daily.grace_minutes) == (None, 60, 120)
    assert daily.schedule_text == "daily at 13:00 (UTC)"

    assert weekly.key == ("SIRPACAM_DOUALA_NEWBELL", "compta_db", "weekly_full")
    assert (weekly.schedule, weekly.timezone) == ("30 2 * * 0", "Europe/Paris")
    assert (weekly.early_minutes, weekly.grace_minutes) == (15, 180)  # the job's own, not the defaults
    assert weekly.schedule_text == "At 02:30 on Sunday (Europe/Paris)"
    assert (weekly.expected_hour_utc, weekly.expected_minute_utc) == (None, None)

    assert month_end.key == ("SIRPACAM_DOUALA_NEWBELL", "paie_db", "")  # the database's cron backup
    assert (month_end.early_minutes, month_end.grace_minutes) == (60, 120)  # the defaults
    assert month_end.schedule_text == "At 22:00 on the last day of every month (UTC)"


def test_a_cron_expression_is_normalised(tmp_path: Path) -> None:
    (backup,) = load(tmp_path, "jobs:\n" + job(schedule='"0   */6 * *  *"'))
    assert backup.schedule == "0 */6 * * *"


@pytest.mark.parametrize(
    ("fields", "line", "field", "message"),
    [
        ({"schedule": '"61 * * * *"'}, 4, "schedule", "invalid cron expression '61 * * * *': Bad minute"),
        ({"schedule": '"0 0 * *"'}, 4, "schedule", "must be a 5-field cron expression"),
        ({"schedule": '"0 0 0 * * *"'}, 4, "schedule", "must be a 5-field cron expression"),
        (
            {"schedule": '"0 0 30 2 *"'},
            4,
            "schedule",
            "invalid cron expression '0 0 30 2 *': Bad day-of-month",
        ),
        ({"schedule": '"* * */20 * 1L"'}, 4, "schedule", "never fires"),
        ({"schedule": '"0 2 * * *"', "timezone": "Mars/Olympus"}, 5, "timezone", "unknown time zone"),
        (
            {"schedule": '"0 2 * * *"', "expected_hour_utc": 2},
            5,
            "expected_hour_utc",
            "give either schedule or expected_hour_utc/expected_minute_utc, not both",
        ),
        ({"expected_hour_utc": 2}, 2, "expected_minute_utc", "Field required"),
        ({"name": '"my name"', "schedule": '"0 2 * * *"'}, 4, "name", "must be 1-64 letters, digits or '_'"),
        (
            {"schedule": '"0 2 * * *"', "window_minutes": 30, "grace_minutes": 90},
            5,
            "window_minutes",
            "give either window_minutes or early_minutes/grace_minutes, not both",
        ),
        ({"schedule": '"0 2 * * *"', "grace_minutes": 0}, 5, "grace_minutes", "greater than or equal to 1"),
        ({"schedule": '"0 2 * * *"', "early_minutes": 721}, 5, "early_minutes", "less than or equal to 720"),
    ],
)
def test_errors_name_the_line_and_the_field(
    tmp_path: Path, fields: dict[str, object], line: int, field: str, message: str
) -> None:
    path, text = error(tmp_path, "jobs:\n" + job(**fields))
    assert f"{path}:{line}: job #1, field '{field}': " in text
    assert message in text


def test_windows_overlapping_between_consecutive_instants_are_refused(tmp_path: Path) -> None:
    # Every hour with a 90-minute grace: a report could count for two cycles.
    path, text = error(tmp_path, "jobs:\n" + job(schedule='"0 * * * *"', early_minutes=0, grace_minutes=90))
    assert f"{path}:4: job #1, field 'schedule': consecutive expected instants" in text
    assert "are 60 min apart: with early_minutes 0 and grace_minutes 90 their windows overlap" in text
    # 60 minutes of grace fit (the windows meet, they do not overlap).
    assert load(tmp_path, "jobs:\n" + job(schedule='"0 * * * *"', early_minutes=0, grace_minutes=60))


def test_an_overlap_only_on_the_spring_forward_day_is_found(tmp_path: Path) -> None:
    """Every two hours in Paris: on 2025-03-30, 02:00 becomes 03:00 and is only an hour from 04:00."""
    text = "jobs:\n" + job(
        schedule='"0 */2 * * *"', timezone="Europe/Paris", early_minutes=30, grace_minutes=45
    )
    _, message = error(tmp_path, text)
    assert "are 60 min apart" in message
    assert load(tmp_path, text.replace("timezone: Europe/Paris", "timezone: UTC"))  # 120 min apart in UTC


def test_window_defaults_apply_to_each_side(tmp_path: Path) -> None:
    text = "defaults:\n  early_minutes: 10\njobs:\n" + job(schedule='"0 3 * * 1-5"', grace_minutes=240)
    (backup,) = load(tmp_path, text, default_window=45)
    assert (backup.early_minutes, backup.grace_minutes) == (10, 240)
    (backup,) = load(tmp_path, "jobs:\n" + job(schedule='"0 3 * * 1-5"'), default_window=45)
    assert (backup.early_minutes, backup.grace_minutes) == (45, 45)  # the environment's window


def test_defaults_refuse_both_forms_of_window(tmp_path: Path) -> None:
    path, text = error(tmp_path, "defaults:\n  window_minutes: 30\n  early_minutes: 5\njobs: []\n")
    assert f"{path}:2: defaults, field 'window_minutes': give either window_minutes" in text


def test_two_unnamed_cron_backups_of_one_database_need_names(tmp_path: Path) -> None:
    text = "jobs:\n" + job(schedule='"0 2 * * *"') + job(schedule='"0 14 * * *"')
    path, message = error(tmp_path, text)
    assert f"{path}:5: job #2 repeats the job declared at line 2" in message
    assert "give one of them a `name:`" in message
    named = "jobs:\n" + job(schedule='"0 2 * * *"') + job(schedule='"0 14 * * *"', name="afternoon")
    assert [b.name for b in load(tmp_path, named)] == ["", "afternoon"]


def test_a_name_keeps_a_daily_backups_identity_when_it_moves_to_a_schedule(tmp_path: Path) -> None:
    (before,) = load(tmp_path, "jobs:\n" + job(expected_hour_utc=13, expected_minute_utc=0))
    (after,) = load(tmp_path, "jobs:\n" + job(name='"1300"', schedule='"0 13 * * 1-5"'))
    assert before.key == after.key


@pytest.mark.parametrize(
    "day_fields",
    ["* * *", "29 2 *", "31 4,6 *", "* * 1-5", "1 1 1", "*/20 * 1L", "13 * 5", "L 2 *", "* * 6#5"],
)
def test_whether_an_expression_fires_is_its_first_firing_day(day_fields: str) -> None:
    """check_cron asks for one firing day, not the 5,844 a daily expression has."""
    assert fires(day_fields) == bool(firing_days(day_fields))
