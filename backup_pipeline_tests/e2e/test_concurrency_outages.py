"""Issue 5: scans at the same moment, PostgreSQL stopped mid-scan, an unusable archive, a full disk.

Every scenario runs on the fleet of fleet.py, restored identically for each run, and ends compared
with one uninterrupted scan: same reports (each recorded once), same entries (one per due cycle),
same job states, every report file exactly once in log/ or log/_archive/.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from backup_pipeline_tests.support.deposit_builder import Agent, utc
from backup_pipeline_tests.support.fleet import (
    A2,
    A3,
    AT,
    D1,
    D2,
    EXPECTED,
    Stage,
    control_snapshot,
    prepared_stage,
    statuses,
)
from backup_pipeline_tests.support.scan_harness import (
    DedicatedPostgres,
    ScanEnv,
    assert_converged,
    kill_group,
    log_tree,
    ok,
    pause_at,
    paused,
    raise_at,
    run_cli,
    snapshot,
    start_cli,
    start_python,
)
from backup_pipeline_tests.support.scan_harness import (
    finish as finish_process,
)

REPORTS = "backup_pipeline.storage.reports"
PASSWORD = "Db-Pa55-w0rd-never-shown"


def finish(process: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str]:
    out, err = finish_process(process, timeout)
    return process.returncode, out + err


# ---------------------------------------------------------------- scans at the same moment

# Each process imports everything, says it is ready, then waits for the same starting signal.
READY_THEN_WAIT = """
import pathlib, time
import backup_pipeline.app.runner
pathlib.Path({ready!r}).touch()
while not pathlib.Path({go!r}).exists():
    time.sleep(0.005)
"""

# What the daemon does when the sensor sees the new files: one automatic run per partition the
# files are named for (D1 for the late report, D2 for today's), each archiving what it recorded.
DAGSTER_RUNS = """
import sys
from dagster import DagsterInstance
from backup_pipeline.config.settings import load_settings
from backup_pipeline.defs import SCAN_JOB, build_definitions
from backup_pipeline.defs.scan_job import AUTOMATIC_TAG, ScanConfig, scan_run_config
job = build_definitions(load_settings()).resolve_job_def(SCAN_JOB)
with DagsterInstance.ephemeral() as instance:
    for day in ({d1!r}, {d2!r}):
        result = job.execute_in_process(
            partition_key=day,
            instance=instance,
            tags={{AUTOMATIC_TAG: "true"}},
            run_config=scan_run_config(ScanConfig(as_of={at!r})),
            raise_on_error=False,
        )
        print(day, "run", "succeeded" if result.success else "FAILED")
        if not result.success:
            sys.exit(1)
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("clis", "dagsters"),
    [(3, 0), (2, 1), (0, 3)],
    ids=["3-cli-scans", "2-cli-scans+dagster-runs", "3-processes-of-dagster-runs"],
)
def test_scans_started_at_the_same_moment_end_as_one_scan(
    stage: Stage, control: dict[str, Any], tmp_path: Path, clis: int, dagsters: int
) -> None:
    """CLI scans serialise on an advisory lock; Dagster runs (as the daemon launches them) do not,
    so the last case races three ingests, evaluations and archives for real."""
    env = stage.restore()
    go = tmp_path / "go"
    processes = []
    try:
        for i in range(clis):
            prelude = READY_THEN_WAIT.format(ready=str(tmp_path / f"ready{i}"), go=str(go))
            processes.append(start_cli(env, "scan", "--at", AT, prelude=prelude))
        for i in range(dagsters):
            prelude = READY_THEN_WAIT.format(ready=str(tmp_path / f"ready-dagster{i}"), go=str(go))
            code = prelude + DAGSTER_RUNS.format(d1=D1, d2=D2, at=AT)
            processes.append(start_python(env, [sys.executable, "-c", textwrap.dedent(code)]))
        expected_ready = clis + dagsters
        _wait_for(lambda: len(list(tmp_path.glob("ready*"))) == expected_ready, processes)
        go.touch()
        for process in processes:
            code, said = finish(process)
            assert code == 0, said
            assert "Traceback" not in said, said
            assert "cannot archive" not in said, said
        assert_converged(env, control)
    finally:
        for process in processes:
            kill_group(process)
        stage.discard(env)


def _wait_for(condition, processes: list[subprocess.Popen[str]], timeout: float = 120) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        for process in processes:
            if process.poll() is not None:
                raise AssertionError(f"a scan ended before the start:\n{''.join(process.communicate())}")
        assert time.monotonic() < deadline, "the scans never got ready"
        time.sleep(0.05)


# ---------------------------------------------------------------- PostgreSQL stopped mid-scan


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DedicatedPostgres]:
    server = DedicatedPostgres(tmp_path_factory.mktemp("own-pg")).with_template()
    yield server
    server.close()


@pytest.fixture(scope="module")
def pg_stage(postgres: DedicatedPostgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    with prepared_stage(postgres.server_url, tmp_path_factory.mktemp("outage")) as prepared:
        yield prepared


@pytest.fixture(scope="module")
def pg_control(pg_stage: Stage) -> dict[str, Any]:
    state = control_snapshot(pg_stage)
    assert statuses(state) == EXPECTED
    return state


OUTAGES = {
    "ingest-before-commit": (f"{REPORTS}:record_reports", "before"),
    "after-ingest-commit": (f"{REPORTS}:record_reports", "after"),
    "archive-files-moved-not-marked": (f"{REPORTS}:mark_archived", "before"),
}


@pytest.mark.slow
@pytest.mark.parametrize("moment", list(OUTAGES))
def test_postgresql_stopped_mid_scan_fails_clearly_and_the_next_scan_completes(
    postgres: DedicatedPostgres, pg_stage: Stage, pg_control: dict[str, Any], tmp_path: Path, moment: str
) -> None:
    postgres.start()  # whatever happened before, it runs now
    env = pg_stage.restore()
    # with a password in the URL (unused by the embedded server): it must not show in the errors
    env.database_url = make_url(env.database_url).set(password=PASSWORD).render_as_string(hide_password=False)
    before = log_tree(env.root)
    target, when = OUTAGES[moment]
    marker, go = tmp_path / "reached", tmp_path / "go"
    scan = start_cli(
        env,
        "scan",
        "--at",
        AT,
        prelude=pause_at(target, marker, go, when=when),
    )
    try:
        with paused(scan, marker, go):
            postgres.stop()
        code, said = finish(scan, timeout=180)
    finally:
        kill_group(scan)
        postgres.start()
    try:
        assert code == 1, said
        assert "Traceback" not in said, said
        assert PASSWORD not in said
        assert "PostgreSQL" in said.splitlines()[-1], said[-3000:]  # the last line says what went wrong
        after = log_tree(env.root)
        if moment != "archive-files-moved-not-marked":
            assert after == before, "a report was archived although its scan failed"
        ok(run_cli(env, "scan", "--at", AT))
        assert_converged(env, pg_control)
    finally:
        pg_stage.discard(env)


# ---------------------------------------------------------------- the archive folder unusable, the disk full


def _unarchived_then_recovered(
    stage: Stage, control: dict[str, Any], env: ScanEnv, agent: str, reason: str, prelude: str = ""
) -> None:
    """A scan whose archiving fails for `agent`: clear error, verdicts kept, reports left in log/."""
    result = run_cli(env, "scan", "--at", AT, prelude=prelude)
    said = result.stdout + result.stderr
    assert result.returncode == 1, said
    assert "Traceback" not in said, said
    last = said.strip().splitlines()[-1]
    assert "could not be archived (left in log/, retried by the next scan)" in last, last
    assert reason in last, last
    state = snapshot(env)
    assert state["entries"] == control["entries"], "the verdicts do not depend on archiving"
    waiting = [p for p in state["files"] if "/_archive" not in p]
    assert waiting and all(p.startswith(f"{agent}/") for p in waiting), waiting
    recorded = {(r[0], r[1]) for r in state["reports"]}
    assert {(agent, p.rsplit("/", 1)[1]) for p in waiting} <= recorded, "left in log/, but recorded"


@pytest.mark.slow
def test_an_archive_folder_that_is_a_file_fails_clearly_and_converges_once_repaired(
    stage: Stage, control: dict[str, Any]
) -> None:
    env = stage.restore()
    try:
        archive = env.root / A3 / "log" / "_archive"
        saved = archive.with_name("_archive.saved")
        archive.rename(saved)
        archive.write_text("an operator's mistake: a file where the archive folder should be")
        _unarchived_then_recovered(
            stage, control, env, A3, f"{A3}/log/_archive is a file, not a directory (not followed)"
        )
        archive.unlink()
        saved.rename(archive)
        ok(run_cli(env, "scan", "--at", AT))
        assert_converged(env, control)
    finally:
        stage.discard(env)


@pytest.mark.slow
def test_a_full_disk_while_archiving_fails_clearly_and_the_next_scan_completes(
    stage: Stage, control: dict[str, Any]
) -> None:
    env = stage.restore()
    try:
        enospc = raise_at("os:link", "OSError(28, 'No space left on device')", only_if=A2)
        _unarchived_then_recovered(stage, control, env, A2, "No space left on device", prelude=enospc)
        ok(run_cli(env, "scan", "--at", AT))
        assert_converged(env, control)
    finally:
        stage.discard(env)


JOB_A2 = [{"agent_id": A2, "database_name": "compta_db", "expected_hour_utc": 13, "expected_minute_utc": 0}]


@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A real tmpfs with room for 40 files and folders (mount needs root and CAP_SYS_ADMIN)."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,nr_inodes=40", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({mounted.stderr.strip()}): the injected ENOSPC test covers it"
        )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_really_full_file_system_fails_clearly_and_the_next_scan_completes(
    tiny_filesystem: Path, database_url: str, tmp_path: Path
) -> None:
    """No free inode left for log/_archive/: the kernel's own ENOSPC, then room is made."""
    env = ScanEnv(tiny_filesystem / "deposit", tmp_path / "jobs.yaml", tmp_path / "home", database_url)
    env.root.mkdir()
    env.write_jobs(
        [{"agent_id": A2, "database_name": "compta_db", "expected_hour_utc": 13, "expected_minute_utc": 0}]
    )
    report = Agent(env.root, A2).backup(utc(f"{D2}T13:05:00Z"), "compta_db", b"rows\n" * 100)
    fillers = []
    with pytest.raises(OSError, match="No space left on device"):
        for i in range(100):
            filler = tiny_filesystem / f"filler{i}"
            filler.touch()
            fillers.append(filler)
    result = run_cli(env, "scan", "--at", AT, "--partition", D2)
    said = result.stdout + result.stderr
    assert result.returncode == 1, said
    assert "Traceback" not in said, said
    last = said.strip().splitlines()[-1]
    assert f"cannot create {A2}/log/_archive: No space left on device" in last, last
    assert report.exists()
    for filler in fillers[-3:]:  # an operator frees some room (tmpfs counts an inode per hard link)
        filler.unlink()
    ok(run_cli(env, "scan", "--at", AT, "--partition", D2))
    assert not report.exists()
    assert (report.parent / "_archive" / report.name).exists()
