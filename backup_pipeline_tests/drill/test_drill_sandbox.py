"""The sandbox around scratch clusters, proven from inside: code running as the drill user — a shell
started through the launcher the server and its clients use, and a shell the server itself starts for
a superuser (a test-only trusted statement) — cannot open a TCP connection to 127.0.0.1, cannot reach
a Unix socket or read a file outside its folder (another agent's dump, the template), cannot write
outside its folder, cannot see other drills' processes, and leaves nothing running. Without the
sandbox tool, drills refuse to run with one clear line."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backup_pipeline.adapters.drill_host import Limits, Sandbox, base_env, spawn
from backup_pipeline.adapters.scratch_cluster import ADMIN_USER, ScratchCluster
from backup_pipeline.drill.restore import DrillEnvironment
from backup_pipeline.storage.scratch import session
from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.drill_fixtures import DAY2, Site, build_site, gz, staged
from backup_pipeline_tests.support.hostile_dumps import FOOTER, head

MARK = "7391"  # in the command line of the processes a probe leaves behind


@pytest.fixture(scope="module")
def outside() -> Iterator[dict[str, str]]:
    """Things outside the sandbox a probe tries: a TCP listener on loopback, a Unix socket, a file
    the drill user may read (another agent's dump), a folder it may write to."""
    folder = Path(tempfile.mkdtemp(prefix="bp-outside-", dir="/tmp"))
    os.chmod(folder, 0o777)
    dump = folder / "other_agent.sql.gz"
    dump.write_bytes(b"secret")
    os.chmod(dump, 0o644)
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(folder / "server.sock"))
    os.chmod(folder / "server.sock", 0o777)
    unix.listen()
    yield {"port": str(tcp.getsockname()[1]), "folder": str(folder), "dump": str(dump)}
    tcp.close()
    unix.close()
    for child in folder.iterdir():
        child.unlink()
    folder.rmdir()


def probe_script(outside: dict[str, str], template: Path, report: str) -> str:
    """A shell's look around, one `name:answer` line each, into `report` (inside its own folder)."""
    return f"""
exec > {report} 2>&1
(exec 3<>/dev/tcp/127.0.0.1/{outside["port"]}) 2>/dev/null && echo tcp:open || echo tcp:closed
touch {outside["folder"]}/escaped 2>/dev/null && echo write_outside:yes || echo write_outside:no
touch {template}/pgdata/recovery.signal 2>/dev/null && echo write_template:yes || echo write_template:no
cat {outside["dump"]} >/dev/null 2>&1 && echo read_dump:yes || echo read_dump:no
test -e {outside["folder"]}/server.sock && echo unix_socket:visible || echo unix_socket:hidden
foreign=0  # processes that are neither the cluster's nor this probe's
for p in /proc/[0-9]*; do
  case "$(tr '\\0' ' ' < $p/cmdline 2>/dev/null)" in
    postgres*|*/postgres\\ *|*/bwrap\\ *|bash*|sh\\ *|sleep*|tr*|"") ;;
    *) foreign=$((foreign + 1)); echo "seen:$(tr '\\0\\n' '  ' < $p/cmdline | cut -c1-80)";;
  esac
done
echo foreign:$foreign
neighbour="$(echo {MARK})0"  # built at run time: this script's own command line never holds it
grep -qla "$neighbour" /proc/[0-9]*/cmdline && echo other_drill:visible || echo other_drill:hidden
setsid sleep {MARK}1 < /dev/null > /dev/null 2>&1 &
echo done:yes
"""


def answers(report: Path) -> dict[str, str]:
    deadline = time.monotonic() + 30
    while "done:yes" not in (report.read_text() if report.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.05)
    return dict(line.split(":", 1) for line in report.read_text().splitlines() if ":" in line)


def host_processes(marker: str) -> list[int]:
    """Processes of the machine running `sleep <marker…>` (arguments are NUL-separated)."""
    needle = f"sleep\0{marker}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    if needle in f.read():
                        found.append(int(entry.name))
            except OSError:
                continue
    return found


def wait_gone(marker: str, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while host_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    return host_processes(marker)


def expect_cut_off(found: dict[str, str]) -> None:
    assert found == {
        "tcp": "closed",
        "write_outside": "no",
        "write_template": "no",
        "read_dump": "no",
        "unix_socket": "hidden",
        "foreign": "0",
        "other_drill": "hidden",
        "done": "yes",
    }, found


def cluster(env: DrillEnvironment, label: str) -> ScratchCluster:
    return ScratchCluster(
        env.root, env.tools, env.user, Limits(env.memory_bytes, 1 << 30), label, env.sandbox
    )


def test_a_shell_through_the_launcher_is_cut_off(
    drill_environment: DrillEnvironment, outside: dict[str, str]
) -> None:
    env = drill_environment
    with cluster(env, "other") as other, cluster(env, "probe") as probed:
        other.create()
        neighbour = other.sandboxed(["sleep", f"{MARK}0"])  # another drill's process
        probed.create()
        report = probed.socket_dir / "report"  # a folder of the drill user's
        shell = probed.sandboxed(
            ["bash", "-c", probe_script(outside, env.template.pgdata.parent, str(report))]
        )
        assert shell.wait(timeout=60) == 0
        found = answers(report)
        neighbour.kill()
    expect_cut_off(found)
    assert wait_gone(MARK) == [], "a process outlived its sandbox"
    assert sorted(os.listdir(outside["folder"])) == ["other_agent.sql.gz", "server.sock"]


def test_a_shell_the_scratch_server_starts_is_cut_off(
    drill_environment: DrillEnvironment, outside: dict[str, str]
) -> None:
    """The server's own code: a superuser's COPY … TO PROGRAM (a test-only trusted statement) runs a
    shell as the drill user inside the server's sandbox."""
    env = drill_environment
    with cluster(env, "server") as probed:
        probed.create()
        probed.start_from(env.template, {"fsync": "off"})
        report = probed.pgdata / "report"  # the server works in its data folder
        script = probe_script(outside, env.template.pgdata.parent, str(report)).replace("'", "'\\''")
        with session(probed, ADMIN_USER, "postgres") as admin:
            admin.run("COPY (SELECT 1) TO PROGRAM %s", (f"bash -c '{script}'",))
        found = answers(report)
    expect_cut_off(found)
    assert wait_gone(MARK) == [], "a process outlived its sandbox"
    assert sorted(os.listdir(outside["folder"])) == ["other_agent.sql.gz", "server.sock"]


def test_the_template_belongs_to_the_product_and_each_drill_works_on_a_copy(
    drill_environment: DrillEnvironment,
) -> None:
    env = drill_environment
    template = env.template.pgdata.parent
    for path in [template, *template.rglob("*")]:
        info = path.lstat()
        assert info.st_uid == os.geteuid(), path
        if env.user.switch:  # the drill user is another user: nothing of the template is theirs to write
            assert not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH), path


def test_without_the_sandbox_tool_drills_refuse_to_run_in_one_line(
    module_workspace_for_sandbox: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKUP_PIPELINE_DRILL_BWRAP", "/nonexistent/bwrap")
    result = module_workspace_for_sandbox.drill("--agent", "ACME_DOUALA_PORT", expect_ok=False)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "bubblewrap" in lines[0] and "/nonexistent/bwrap" in lines[0], result.output


@pytest.fixture(scope="module")
def module_workspace_for_sandbox(module_workspace: Workspace) -> Site:
    data = gz((head() + FOOTER + "\\unrestrict k3yOfTheDump\n").encode())
    return build_site(module_workspace, {"sound": {DAY2: staged("sound", DAY2, data, ".sql.gz")}})


def test_the_scratch_server_runs_in_namespaces_of_its_own(drill_environment: DrillEnvironment) -> None:
    env = drill_environment
    with cluster(env, "namespaces") as probed:
        probed.create()
        probed.start_from(env.template, {"fsync": "off"})
        postmaster = probed.server_pid()
        assert postmaster is not None
        for kind in ("net", "pid", "mnt", "ipc"):
            assert os.readlink(f"/proc/{postmaster}/ns/{kind}") != os.readlink(f"/proc/self/ns/{kind}"), kind
        status = Path(f"/proc/{postmaster}/status").read_text()
        uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
        assert int(uid) == env.user.uid


def test_binaries_installed_under_tmp_stay_visible_beside_the_drills_own_tmp(
    drill_environment: DrillEnvironment,
) -> None:
    """A checkout under /tmp (its virtualenv's PostgreSQL there too): the drill's own folder mounted as
    the sandbox's /tmp must not hide the binaries it runs."""
    env = drill_environment
    tools = Path(tempfile.mkdtemp(prefix="bp-tools-", dir="/tmp"))
    try:
        tools.chmod(0o755)
        program = tools / "hello"
        program.write_text("#!/bin/sh\necho hello from $0\n")
        program.chmod(0o755)
        own = env.root / f"probe-tmp-{os.getpid()}"
        own.mkdir()
        own_tmp = own / "tmp"
        own_tmp.mkdir()
        if env.user.switch:
            for folder in (own, own_tmp):
                os.chown(folder, env.user.uid, env.user.gid)
        sandbox = Sandbox(env.sandbox.bwrap, (*env.sandbox.read_only, tools))
        process = spawn(
            [str(program)],
            env.user,
            Limits(1 << 30, 1 << 20),
            sandbox=sandbox,
            writable=(own,),
            tmp=own_tmp,
            env=base_env(),
            cwd=own,
            stdout=subprocess.PIPE,
        )
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        assert out.decode().strip() == f"hello from {program}"
    finally:
        shutil.rmtree(tools, ignore_errors=True)
        shutil.rmtree(env.root / f"probe-tmp-{os.getpid()}", ignore_errors=True)
