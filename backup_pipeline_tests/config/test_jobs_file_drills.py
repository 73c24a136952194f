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
