"""A drill killed with SIGKILL in the middle leaves no server running (its children die with it), and
the next drill removes the folder it left and drills the entry: one result row, nothing left over."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.drill_fixtures import (
    DAY2,
    SITE,
    SampleDumps,
    build_site,
    cycle,
    described,
    drill_processes,
    gz,
    leftovers,
    staged,
)
from backup_pipeline_tests.support.scan_harness import ScanEnv, kill_at, ok, run_cli


def drill_rows(url: str) -> list[tuple[str, int]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text("SELECT outcome, attempt FROM restore_drills"))]
    finally:
        engine.dispose()


def wait_until_no_drill_process(drill_dir: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while drill_processes(drill_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = drill_processes(drill_dir)
    assert left == [], f"a scratch server outlived the drill killed with SIGKILL: {described(left)}"


@pytest.mark.parametrize(
    ("database", "kill_point"),
    [
        ("plain", "backup_pipeline.drill.restore:decompressed"),  # psql running, the dump half fed
        ("custom", "backup_pipeline.drill.restore:inspect_restore"),  # restored, before the checks
    ],
)
def test_a_drill_killed_midway_is_cleaned_up_by_the_next_one(
    drill_workspace: Workspace, sample_dumps: SampleDumps, drill_dir: Path, database: str, kill_point: str
) -> None:
    ws = drill_workspace
    data = gz(sample_dumps.get(database, "custom" if database == "custom" else "plain"))
    build_site(ws, {database: {DAY2: staged(database, DAY2, data, ".gz")}})
    env = ScanEnv(
        ws.root, ws.jobs_file, ws.home, ws.database_url, extra={"BACKUP_PIPELINE_DRILL_DIR": str(drill_dir)}
    )
    args = ("drill", "--agent", SITE, "--database", database, "--cycle", cycle(DAY2))

    killed = run_cli(env, *args, prelude=kill_at(kill_point, when="before"))
    assert killed.returncode == -9, killed.stderr
    wait_until_no_drill_process(drill_dir)
    (left,) = leftovers(drill_dir)  # the killed drill's folder is what the next drill must remove
    socket_folder = Path(os.readlink(drill_dir / left / "socket"))
    assert socket_folder.is_dir() and socket_folder.parent == Path(tempfile.gettempdir())
    assert drill_rows(ws.database_url) == []

    done = ok(run_cli(env, *args))
    assert "RESTORED" in done.stdout
    assert "removed 1 folder(s) left by interrupted drills" in done.stderr
    assert drill_rows(ws.database_url) == [("RESTORED", 1)]
    assert leftovers(drill_dir) == [] and drill_processes(drill_dir) == []
    assert not socket_folder.exists()  # the killed drill's socket folder too
