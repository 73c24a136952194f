"""Issue 20: every error a person can cause is one line and a non-zero exit, never a traceback.

The cases the issue found: a date before the calendar's start, a simulation of a hundred million
days, a worker given a broker URL of an unknown scheme, Dagster's storage URL written as the README
shows it (`postgresql://…`, which SQLAlchemy 2 maps to a driver that is not installed), a jobs file
that is a device (`/dev/zero`: read until the machine ran out of memory) or a file that is not one
(`/etc/shadow`: its lines echoed in the error), a port beyond 65535, an agent id longer than the
database holds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backup_pipeline_tests.app.test_cli_contract import assert_expected_error
from backup_pipeline_tests.conftest import Workspace

AGENT = "SIRPACAM_DOUALA_NEWBELL"
JOB = {"agent_id": AGENT, "database_name": "db", "expected_hour_utc": 13, "expected_minute_utc": 0}


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["digest", "--date", "0001-01-01"], ["--date", "0001-01-01"]),
        (["digest", "--date", "9999-12-31"], ["--date", "9999-12-31"]),
        (["simulate", "--root", "sim", "--days", "100000000"], ["--days", "100000000"]),
        (["simulate", "--root", "sim", "--agents", "100000000"], ["--agents", "100000000"]),
        (["dev", "--port", "99999"], ["--port", "99999"]),
        (["demo", "--port", "0"], ["--port"]),
    ],
)
def test_out_of_range_arguments_are_one_line(
    workspace: Workspace, args: list[str], fragments: list[str]
) -> None:
    workspace.write_jobs([JOB])
    assert_expected_error(workspace.cli(*args, expect_ok=False), *fragments)
    assert not (workspace.root.parent / "sim").exists(), "nothing simulated"


def test_a_worker_with_a_broker_of_an_unknown_scheme_is_one_line(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKUP_PIPELINE_EXECUTOR", "celery")
    monkeypatch.setenv("BACKUP_PIPELINE_CELERY_BROKER", "rabbit://guest:s3cret@127.0.0.1:5672//")
    result = workspace.cli("worker", expect_ok=False)
    line = assert_expected_error(result, "BACKUP_PIPELINE_CELERY_BROKER", "rabbit")
    assert "s3cret" not in line


def test_dagster_storage_written_as_postgresql_url_works(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The README's form, `postgresql://…`, is what dagster-postgres is given: it works, as the
    `postgresql+psycopg2://` form does (SQLAlchemy 2 maps the bare form to psycopg 3, not installed)."""
    import shutil

    from backup_pipeline.app.launcher import SHIPPED_INSTANCE_CONFIG

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(SHIPPED_INSTANCE_CONFIG, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    plain = workspace.database_url.replace("postgresql+psycopg2://", "postgresql://")
    assert plain.startswith("postgresql://")
    monkeypatch.setenv("BACKUP_PIPELINE_DAGSTER_PG_URL", plain)
    workspace.write_jobs([JOB])
    result = workspace.cli(
        "scan", "--at", "2025-11-21T14:30:00Z", "--partition", "2025-11-21", expect_ok=False
    )
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output


def test_a_dagster_storage_url_that_cannot_work_is_one_line(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import shutil

    from backup_pipeline.app.launcher import SHIPPED_INSTANCE_CONFIG

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(SHIPPED_INSTANCE_CONFIG, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("BACKUP_PIPELINE_DAGSTER_PG_URL", "mysql://dagster:s3cret@127.0.0.1/dagster")
    workspace.write_jobs([JOB])
    result = workspace.cli("scan", "--at", "2025-11-21T14:30:00Z", expect_ok=False)
    assert_expected_error(result, "BACKUP_PIPELINE_DAGSTER_PG_URL")
    assert "s3cret" not in result.output


@pytest.mark.parametrize("source", ["/dev/zero", "/dev/urandom"])
def test_a_jobs_file_that_is_not_a_regular_file_is_refused_unread(workspace: Workspace, source: str) -> None:
    result = workspace.cli("backups", "sync", "--file", source, expect_ok=False)
    line = assert_expected_error(result, source)
    assert "not a file" in line or "not a regular file" in line


@pytest.mark.parametrize("source", ["/dev/zero", "/dev/urandom"])
def test_the_jobs_file_reader_itself_never_reads_a_device(source: str) -> None:
    """Whatever path reaches it (a scan's BACKUP_PIPELINE_JOBS_FILE, a code location's load)."""
    from backup_pipeline.config.jobs_file import JobsFileError, jobs_file_digest, load_jobs_file

    with pytest.raises(JobsFileError, match="is not a regular file \\(not read\\)"):
        load_jobs_file(Path(source), 60)
    assert jobs_file_digest(Path(source), 60) is None


def test_a_jobs_file_larger_than_the_limit_is_refused_unread(workspace: Workspace) -> None:
    huge = workspace.root.parent / "huge.yaml"
    with open(huge, "wb") as handle:
        handle.truncate(1 << 30)  # sparse: 1 GiB that would take long to read
    result = workspace.cli("backups", "sync", "--file", str(huge), expect_ok=False)
    assert_expected_error(result, str(huge), "bytes", "limit")


def test_a_file_that_is_not_a_jobs_file_is_never_echoed(workspace: Workspace) -> None:
    secret = workspace.root.parent / "shadow"
    secret.write_text("root:$6$abcdefgh$VERYSECRETHASH:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n")
    os.chmod(secret, 0o600)
    result = workspace.cli("backups", "sync", "--file", str(secret), expect_ok=False)
    line = assert_expected_error(result, str(secret))
    assert "VERYSECRETHASH" not in result.output and "root:" not in line and "daemon" not in line


def test_an_agent_id_longer_than_the_database_holds_is_the_jobs_files_error(workspace: Workspace) -> None:
    workspace.write_jobs([JOB | {"agent_id": "SIRPACAM_DOUALA_" + "X" * 200}])
    result = workspace.cli("backups", "sync", expect_ok=False)
    line = assert_expected_error(result, "agent_id", "an agent id has at most 128")
    assert "PostgreSQL" not in line
