"""Issue 4 in the jobs file: notify targets, silences, maintenance windows and size-anomaly settings,
resolved with the defaults, and errors that name the line and the (nested) field."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backup_pipeline.config.jobs_file import BackupAlerting, JobsFileError, load_jobs_file
from backup_pipeline.core.alerts import SizePolicy

JOB = """\
  - agent_id: SIRPACAM_DOUALA_NEWBELL
    database_name: compta_db
    expected_hour_utc: 13
    expected_minute_utc: 0
"""
ENV = SizePolicy(history=14, min_history=3, below=0.5, above=3.0)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "jobs.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str) -> tuple[Path, str]:
    path = write(tmp_path, text)
    with pytest.raises(JobsFileError) as info:
        load_jobs_file(path, 60)
    return path, str(info.value)


def test_a_job_without_alerting_settings_stores_nothing(tmp_path: Path) -> None:
    (job,) = load_jobs_file(write(tmp_path, "jobs:\n" + JOB), 60)
    assert job.alerting == BackupAlerting()
    assert job.alerting.stored() == {}
    assert job.alerting.size_anomaly.policy(ENV) == ENV
    assert job.alerting.notify_hash_mismatch is True


def test_alerting_settings_resolve_job_over_defaults(tmp_path: Path) -> None:
    text = (
        "defaults:\n"
        "  notify_hash_mismatch: false\n"
        "  size_anomaly: {below: 0.3, history: 10}\n"
        "  maintenance:\n"
        "    - {name: weekly, days: [sun], start: 00:00, end: 06:00}\n"
        "jobs:\n"
        + JOB
        + "    notify: ['json://hooks.example.com/dba', 'mailto://u:${SMTP_PASSWORD}@smtp.example.com?to=a@b.c']\n"
        "    size_anomaly: {above: 2}\n"
        "    silenced_until: 2025-12-01\n"
        + JOB.replace("compta_db", "paie_db")
        + "    notify_hash_mismatch: true\n"
        "    size_anomaly: off\n"
        "    maintenance:\n"
        "      - {days: [Saturday, sun], start: 23:30, end: 02:00, timezone: Africa/Douala}\n"
        + JOB.replace("compta_db", "stock_db")
        + "    maintenance: []\n"
    )
    compta, paie, stock = load_jobs_file(write(tmp_path, text), 60)

    assert compta.alerting.notify == [
        "json://hooks.example.com/dba",
        "mailto://u:${SMTP_PASSWORD}@smtp.example.com?to=a@b.c",
    ]
    assert compta.alerting.notify_hash_mismatch is False
    assert compta.alerting.size_anomaly.policy(ENV) == SizePolicy(
        history=10, min_history=3, below=0.3, above=2
    )
    assert compta.alerting.silenced_until == datetime(2025, 12, 1, tzinfo=UTC)
    (weekly,) = compta.alerting.silence().windows
    assert (weekly.name, weekly.days, weekly.start, weekly.end) == ("weekly", frozenset({6}), 0, 360)

    assert paie.alerting.notify == [] and paie.alerting.notify_hash_mismatch is True
    assert paie.alerting.size_anomaly.policy(ENV).enabled is False
    (window,) = paie.alerting.silence().windows
    assert (window.days, window.start, window.end, window.tz_name) == (
        frozenset({5, 6}),
        1410,
        120,
        "Africa/Douala",
    )
    assert stock.alerting.maintenance == []  # an empty list clears the defaults' windows

    stored = compta.alerting.stored()
    assert stored["silenced_until"] == "2025-12-01T00:00:00Z"
    assert BackupAlerting.from_stored(stored) == compta.alerting


@pytest.mark.parametrize(
    ("extra", "line", "field", "fragment"),
    [
        ("    notify: ['slakc://x/y']\n", 6, "notify[0]", "scheme 'slakc', which Apprise does not know"),
        ("    notify: ['json://ok/x', 'json://']\n", 6, "notify[1]", "not a valid 'json' URL"),
        ("    notify: json://one/x\n", 6, "notify", "valid list"),
        ("    notify_hash_mismatch: sometimes\n", 6, "notify_hash_mismatch", "valid boolean"),
        ("    size_anomaly: {below: 1.5}\n", 6, "size_anomaly.below", "less than 1"),
        ("    size_anomaly: {above: 0.9}\n", 6, "size_anomaly.above", "greater than 1"),
        ("    size_anomaly: {history: 2}\n", 6, "size_anomaly.history", "greater than or equal to 3"),
        ("    size_anomaly: {median: 3}\n", 6, "size_anomaly.median", "Extra inputs"),
        ("    silenced_until: next week\n", 6, "silenced_until", "ISO-8601"),
        (
            "    maintenance:\n      - {days: [sun], start: 00:00}\n",
            7,
            "maintenance[0].end",
            "Field required",
        ),
        (
            "    maintenance:\n      - days: [sun]\n        start: 25:00\n        end: 06:00\n",
            8,
            "maintenance[0].start",
            "time of day HH:MM",
        ),
        (
            "    maintenance:\n      - {start: 01:00, end: 02:00}\n"
            "      - {days: [funday], start: 01:00, end: 02:00}\n",
            8,
            "maintenance[1].days",
            "unknown day 'funday'",
        ),
        (
            "    maintenance:\n      - {start: 01:00, end: 01:00}\n",
            7,
            "maintenance[0]",
            "window would be empty",
        ),
        (
            "    maintenance:\n      - {start: 01:00, end: 02:00, timezone: Mars/Olympus}\n",
            7,
            "maintenance[0].timezone",
            "unknown time zone",
        ),
        ("    maintenance:\n      - {start: 6, end: 7}\n", 7, "maintenance[0].start", "time of day HH:MM"),
    ],
)
def test_errors_name_the_line_and_the_nested_field(
    tmp_path: Path, extra: str, line: int, field: str, fragment: str
) -> None:
    path, message = error_of(tmp_path, "jobs:\n" + JOB + extra)
    assert f"{path}:{line}: job #1, field '{field}'" in message, message
    assert fragment in message, message


def test_errors_in_the_defaults(tmp_path: Path) -> None:
    path, message = error_of(
        tmp_path, "defaults:\n  maintenance:\n    - {start: '1:00', end: '2:00', days: [xmas]}\njobs:\n" + JOB
    )
    assert f"{path}:3: defaults, field 'maintenance[0].days'" in message
    _, message = error_of(tmp_path, "defaults:\n  notify: ['json://h/x']\njobs:\n" + JOB)
    assert "field 'notify': Extra inputs are not permitted" in message  # targets are per job


def test_times_need_no_quotes(tmp_path: Path) -> None:
    """YAML 1.1 reads 23:30 as the base-60 number 1410: the jobs file reads it as a time."""
    text = "jobs:\n" + JOB + "    maintenance:\n      - {start: 23:30, end: 1:15}\n"
    (job,) = load_jobs_file(write(tmp_path, text), 60)
    (window,) = job.alerting.silence().windows
    assert (window.start, window.end, len(window.days)) == (1410, 75, 7)
