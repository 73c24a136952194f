"""A scratch cluster stopped at once (a drill's limit reached) leaves no process behind, even a backend
busy in a statement that would run for minutes, and its folders (data and socket) are removed."""

from __future__ import annotations

import time

from backup_pipeline.adapters.drill_host import Limits, processes_under
from backup_pipeline.adapters.scratch_cluster import ScratchCluster
from backup_pipeline.drill.restore import DrillEnvironment

# CPU-bound for minutes, and never waiting on a latch: only the statement's end would stop it.
BUSY = "SELECT count(*) FROM generate_series(1, 10000000000);"


def test_an_aborted_cluster_leaves_no_busy_backend(drill_environment: DrillEnvironment) -> None:
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
