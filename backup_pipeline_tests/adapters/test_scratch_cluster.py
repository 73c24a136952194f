"""A scratch cluster stopped at once (a drill's limit reached) leaves no process behind, even a backend
busy in a statement that would run for minutes, and its folders (data and socket) are removed; a
process working in a cluster's folder outside the cluster's process groups (its own session, as a
dump's escaped program would be) is killed before the folder goes, whether the cluster is aborted or
closed."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from backup_pipeline.adapters.drill_host import Limits, processes_under
from backup_pipeline.adapters.scratch_cluster import ScratchCluster
from backup_pipeline.drill.restore import DrillEnvironment

# CPU-bound for minutes, and never waiting on a latch: only the statement's end would stop it.
BUSY = "SELECT count(*) FROM generate_series(1, 10000000000);"


def test_an_aborted_cluster_leaves_no_busy_backend(drill_environment: DrillEnvironment) -> None:
    """The backends are in the server's process group: the group kill stops them (the folder kill
    would too; the next test shows the folder kill alone)."""
    env = drill_environment
    limits = Limits(memory_bytes=env.memory_bytes, file_bytes=1 << 30)
    with ScratchCluster(env.root, env.tools, env.user, limits, "busy", env.sandbox) as cluster:
        cluster.create()
        cluster.start_from(env.template, {})
        psql = cluster.client("psql", ["-X", "-q", "-c", BUSY])
        deadline = time.monotonic() + 30
        while not _busy_backends(cluster) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _busy_backends(cluster) and psql.poll() is None, "the statement never ran"
        cluster.abort()  # as a drill's watch does when a limit is reached
    assert processes_under(cluster.directory) == []
    assert not cluster.directory.exists() and not cluster.socket_dir.exists()


@pytest.mark.parametrize("stop", ["abort", "close"])
def test_a_process_in_the_cluster_folder_outside_its_groups_is_killed_before_the_folder_goes(
    drill_environment: DrillEnvironment, stop: str
) -> None:
    """Killing the server's and the tools' process groups does not reach it: only the folder kill does."""
    env = drill_environment
    limits = Limits(memory_bytes=env.memory_bytes, file_bytes=1 << 30)
    with ScratchCluster(env.root, env.tools, env.user, limits, "stray", env.sandbox) as cluster:
        cluster.create()
        cluster.start_from(env.template, {})
        stray = subprocess.Popen(  # its own session and group: no group kill of the cluster's reaches it
            ["sleep", "600"], cwd=cluster.directory, start_new_session=True
        )
        try:
            assert stray.pid in processes_under(cluster.directory)
            if stop == "abort":
                cluster.abort()
            cluster.close()
            assert stray.wait(timeout=10) == -9, "the stray process outlived its cluster's folder"
        finally:
            if stray.poll() is None:
                os.kill(stray.pid, 9)
                stray.wait()
    assert processes_under(cluster.directory) == []
    assert not cluster.directory.exists() and not cluster.socket_dir.exists()


def _busy_backends(cluster: ScratchCluster) -> list[int]:
    """Backends of the cluster running a SELECT (their process title says so)."""
    busy = []
    for pid in processes_under(cluster.directory):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if b"SELECT" in cmdline.read():
                    busy.append(pid)
        except OSError:
            continue
    return busy
