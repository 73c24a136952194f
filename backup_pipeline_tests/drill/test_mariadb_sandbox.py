"""The sandbox around scratch MariaDB servers, as around PostgreSQL's: the server runs in namespaces
of its own as the drill user, under the drill's limits (one process: its address-space limit is the
whole server's), and a shell started through the same launcher the server and the client use cannot
reach the network, another socket or file, write outside its folder, see other drills' processes,
or leave anything running."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from backup_pipeline.adapters.drill_host import Limits
from backup_pipeline.adapters.scratch_mariadb import ScratchMariadb
from backup_pipeline.drill.restore import DrillEnvironment
from backup_pipeline_tests.drill.test_drill_sandbox import (
    MARK,
    answers,
    expect_cut_off,
    outside,
    probe_script,
    wait_gone,
)

__all__ = ["outside"]  # the fixture, shared with the PostgreSQL sandbox's tests

LIMITS = Limits(memory_bytes=1536 << 20, file_bytes=700 << 20)


def server(env: DrillEnvironment, label: str) -> ScratchMariadb:
    assert env.mariadb is not None
    return env.mariadb.server(LIMITS, label)


def limit(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith(name):
            return int(line[len(name) :].split()[0])
    raise AssertionError(f"no {name} limit")


def test_the_scratch_mariadb_runs_in_namespaces_of_its_own_within_the_drills_limits(
    drill_environment: DrillEnvironment,
) -> None:
    env = drill_environment
    assert env.mariadb is not None
    with server(env, "m-namespaces") as probed:
        probed.create()
        probed.start_from(env.mariadb.template(), {})
        pid = probed.server_pid()
        assert pid is not None and "mariadbd" in Path(f"/proc/{pid}/cmdline").read_text()
        for kind in ("net", "pid", "mnt", "ipc"):
            assert os.readlink(f"/proc/{pid}/ns/{kind}") != os.readlink(f"/proc/self/ns/{kind}"), kind
        status = Path(f"/proc/{pid}/status").read_text()
        uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
        assert int(uid) == env.user.uid
        assert limit(pid, "Max address space") == LIMITS.memory_bytes
        assert limit(pid, "Max file size") == LIMITS.file_bytes
        assert probed.socket.exists() and not (probed.directory / "data" / "mysql.sock").exists()


def test_a_shell_through_the_mariadb_launcher_is_cut_off(
    drill_environment: DrillEnvironment, outside: dict[str, str]
) -> None:
    env = drill_environment
    with server(env, "m-other") as other, server(env, "m-probe") as probed:
        other.create()
        neighbour = other.sandboxed(["sleep", f"{MARK}0"])  # another drill's process
        probed.create()
        report = probed.socket_dir / "report"
        template = env.mariadb.template().datadir.parent if env.mariadb else Path("/nonexistent")
        shell = probed.sandboxed(["bash", "-c", probe_script(outside, template, str(report))])
        assert shell.wait(timeout=60) == 0
        found = answers(report)
        neighbour.kill()
    expect_cut_off(found)
    assert wait_gone(MARK) == [], "a process outlived its sandbox"
    assert sorted(os.listdir(outside["folder"])) == ["other_agent.sql.gz", "server.sock"]


def test_the_mariadb_template_belongs_to_the_product(drill_environment: DrillEnvironment) -> None:
    env = drill_environment
    assert env.mariadb is not None
    template = env.mariadb.template().datadir.parent
    for path in [template, *template.rglob("*")]:
        info = path.lstat()
        assert info.st_uid == os.geteuid(), path
        if env.user.switch:  # the drill user is another user: nothing of the template is theirs to write
            assert not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH), path
