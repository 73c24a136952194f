"""Throw-away PostgreSQL clusters for restore drills: a private folder per drill (data, and a link to
its socket folder: mode 0700, short-named in the temporary folder), the server listening on that
Unix socket only (`listen_addresses=''`, never TCP, never the product's own server), client tools
connected as the restore role, and removal at the end, whatever happened. A data directory prepared
once (`initdb`, the restore role and database) is kept as a template per binaries and user and
copied for each drill: a copy costs a fraction of an `initdb`. Processes, the OS user and the drill
folder are `drill_host`'s; SQL sent to a cluster lives in `storage.scratch`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from backup_pipeline.adapters.drill_host import (
    SOCKET_LINK,
    DrillUnavailable,
    Limits,
    OsUser,
    Tools,
    disk_usage,
    kill_group,
    kill_under,
    socket_parent,
    spawn,
    wait_group_gone,
    write_owner,
)

ADMIN_USER = "drill_admin"  # the cluster's superuser: set-up and checks, by the product only
RESTORE_USER = "drill_restore"  # restores: not a superuser, owns the drill database
DATABASE = "drill"
PORT = 5432  # only names the socket file: nothing listens on TCP
TEMPLATE_VERSION = 1  # bump when what a template holds changes
START_TIMEOUT = 60.0


def base_environment(socket_dir: Path) -> dict[str, str]:
    """What the server and the tools see: nothing of the product's environment."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LC_ALL": "C",
        "LANG": "C",
        "TZ": "UTC",
        "HOME": "/nonexistent",
        "PGHOST": str(socket_dir),
        "PGPORT": str(PORT),
        "PGAPPNAME": "backup_pipeline_drill",
        "PGCONNECT_TIMEOUT": "10",
        "PGPASSFILE": "/nonexistent",
        "PGSERVICEFILE": "/nonexistent",
        "PSQL_HISTORY": "/dev/null",
    }


def _own(path: Path, user: OsUser, mode: int) -> None:
    if user.switch:
        os.chown(path, user.uid, user.gid)
    os.chmod(path, mode)


def _chown_tree(path: Path, user: OsUser) -> None:
    if not user.switch:
        return
    for folder, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(folder, name), user.uid, user.gid)
    os.lchown(path, user.uid, user.gid)


# ---------------------------------------------------------------- a cluster


@dataclass(frozen=True)
class Template:
    """A prepared data directory copied for each drill, and its superuser's password."""

    pgdata: Path
    admin_password: str


class ScratchCluster:
    """One drill's PostgreSQL: created by `start`, always removed by `close` (a context manager)."""

    def __init__(self, root: Path, tools: Tools, user: OsUser, limits: Limits, label: str) -> None:
        self.tools, self.user, self.limits = tools, user, limits
        token = secrets.token_hex(4)
        self.directory = root / f"run-{_safe(label)}-{os.getpid()}-{token}"
        self.pgdata = self.directory / "pgdata"
        # PostgreSQL caps a Unix socket's path at 107 bytes: the socket folder lives in the system's
        # temporary folder under a short name, linked from the drill's folder (for leftovers).
        self.socket_dir = socket_parent() / f"bp-{os.getpid()}-{token}"
        self.log_path = self.directory / "postgres.log"
        self.admin_password = ""
        self.server: subprocess.Popen[bytes] | None = None
        self.children: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> ScratchCluster:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- lifecycle

    def create(self) -> None:
        """The drill's folder, owned by this process, with its owner's identity for `clean_leftovers`."""
        self.directory.mkdir(mode=0o711 if self.user.switch else 0o700)
        write_owner(self.directory)
        self.socket_dir.mkdir(mode=0o700)  # a fresh random name: fails rather than reuse a folder
        (self.directory / SOCKET_LINK).symlink_to(self.socket_dir)
        self.pgdata.mkdir()
        for private in (self.socket_dir, self.pgdata):
            _own(private, self.user, 0o700)

    def start_from(self, template: Template, settings: dict[str, str]) -> None:
        shutil.copytree(template.pgdata, self.pgdata, symlinks=True, dirs_exist_ok=True)
        _chown_tree(self.pgdata, self.user)
        os.chmod(self.pgdata, 0o700)
        self.admin_password = template.admin_password
        self.start(settings)

    def start(self, settings: dict[str, str]) -> None:
        """Start the server on the data directory; return once it accepts connections."""
        options = {**settings, **self.fixed_settings()}
        args = [self.tools.path("postgres"), "-D", str(self.pgdata)]
        for name, value in options.items():
            args += ["-c", f"{name}={value}"]
        with open(self.log_path, "ab") as log:
            self.server = spawn(
                args,
                self.user,
                self.limits,
                env=base_environment(self.socket_dir),
                cwd=self.directory,
                stdout=log,
                stderr=log,
            )
        self._wait_ready()

    def fixed_settings(self) -> dict[str, str]:
        return {
            "listen_addresses": "",
            "unix_socket_directories": str(self.socket_dir),
            "unix_socket_permissions": "0700",
            "port": str(PORT),
        }

    def _wait_ready(self) -> None:
        assert self.server is not None
        deadline = time.monotonic() + START_TIMEOUT
        pid_file = self.pgdata / "postmaster.pid"
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise DrillUnavailable(f"the scratch PostgreSQL did not start: {self.log_tail()}")
            with contextlib.suppress(OSError):
                lines = pid_file.read_text().splitlines()
                if len(lines) >= 8 and lines[7].strip() == "ready":
                    return
            time.sleep(0.02)
        raise DrillUnavailable(f"the scratch PostgreSQL did not start within {START_TIMEOUT:.0f} s")

    def client(
        self,
        tool: str,
        args: list[str],
        *,
        stdin: int | IO[Any] | None = subprocess.DEVNULL,
        stdout: int | IO[Any] | None = subprocess.DEVNULL,
        admin: bool = False,
    ) -> subprocess.Popen[bytes]:
        """psql, pg_restore or pg_dump as the drill user (stderr piped), connected as the restore role,
        or as the superuser with `admin` (only for clusters whose content the product wrote itself)."""
        env = base_environment(self.socket_dir) | {"PGUSER": RESTORE_USER, "PGDATABASE": DATABASE}
        if admin:
            env |= {"PGUSER": ADMIN_USER, "PGDATABASE": "postgres", "PGPASSWORD": self.admin_password}
        process = spawn(
            [self.tools.path(tool), *args],
            self.user,
            self.limits,
            env=env,
            cwd=self.directory,
            stdin=stdin,
            stdout=stdout,
        )
        self.children.append(process)
        return process

    def abort(self) -> None:
        """Stop everything at once (a limit was reached): callable from another thread."""
        for child in self.children:
            kill_group(child)
        kill_group(self.server)
        kill_under(self.directory, timeout=0)  # anything of the cluster outside those groups

    def disk_usage(self) -> int:
        return disk_usage(self.directory)

    def log_tail(self, limit: int = 2000) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(max(0, os.fstat(log.fileno()).st_size - limit))
                return log.read().decode("utf-8", "replace").strip()
        except OSError:
            return "(no server log)"

    def close_server(self) -> None:
        """Stop the server cleanly (a template must be consistent), keeping the folder."""
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGINT)  # fast shutdown: a checkpoint, then exit
            self.server.wait(timeout=60)

    def close(self) -> None:
        """Stop the server (immediate shutdown, then SIGKILL) and remove the drill's folder."""
        for child in self.children:
            kill_group(child)
            wait_group_gone(child)
        if self.server is not None and self.server.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.server.send_signal(signal.SIGQUIT)  # immediate shutdown: it stops its backends
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.server.wait(timeout=10)
        kill_group(self.server)  # whatever did not stop in time
        wait_group_gone(self.server)
        kill_under(self.directory)  # nothing may keep working in a folder about to be removed
        shutil.rmtree(self.socket_dir, ignore_errors=True)
        shutil.rmtree(self.directory, ignore_errors=True)


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", label)[:40]


# ---------------------------------------------------------------- templates


def ensure_template(
    root: Path, tools: Tools, user: OsUser, limits: Limits, prepare: Callable[[ScratchCluster], None]
) -> Template:
    """The prepared data directory for these binaries and user, made once (initdb, then `prepare`
    on a running cluster: the restore role and database)."""
    key = hashlib.sha256(
        f"{tools.bin_dir}|{tools.versions}|{user.uid}|{TEMPLATE_VERSION}".encode()
    ).hexdigest()
    folder = root / "templates" / key[:16]
    secret = folder / "admin.secret"
    if (folder / "pgdata" / "PG_VERSION").exists() and secret.exists():
        return Template(folder / "pgdata", secret.read_text().strip())
    (root / "templates").mkdir(exist_ok=True)
    os.chmod(root / "templates", 0o711 if user.switch else 0o700)
    password = secrets.token_urlsafe(24)
    building = ScratchCluster(root / "templates", tools, user, limits, f"build-{key[:8]}")
    with building:
        building.create()
        _initdb(building, password)
        building.admin_password = password
        building.start({"fsync": "off"})
        prepare(building)
        building.close_server()
        staged = root / "templates" / f"{key[:16]}.{os.getpid()}.{secrets.token_hex(4)}"
        staged.mkdir(mode=0o711 if user.switch else 0o700)
        (staged / "admin.secret").write_text(password)
        os.chmod(staged / "admin.secret", 0o600)
        os.rename(building.pgdata, staged / "pgdata")
        try:
            os.rename(staged, folder)
        except OSError:  # another drill finished the same template first: use theirs
            shutil.rmtree(staged, ignore_errors=True)
    return Template(folder / "pgdata", secret.read_text().strip())


def _initdb(cluster: ScratchCluster, password: str) -> None:
    pwfile = cluster.directory / "pwfile"
    pwfile.write_text(password + "\n")
    _own(pwfile, cluster.user, 0o600)
    args = [
        cluster.tools.path("initdb"),
        "-D",
        str(cluster.pgdata),
        "-U",
        ADMIN_USER,
        f"--pwfile={pwfile}",
        "--auth-local=scram-sha-256",
        "--auth-host=reject",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
        "--no-instructions",
    ]
    process = spawn(
        args, cluster.user, cluster.limits, env=base_environment(cluster.socket_dir), cwd=cluster.directory
    )
    _, err = process.communicate(timeout=120)
    pwfile.unlink()
    if process.returncode != 0:
        raise DrillUnavailable(f"initdb failed: {err.decode('utf-8', 'replace').strip()[-1000:]}")
    (cluster.pgdata / "pg_hba.conf").write_text(
        f"local all {ADMIN_USER} scram-sha-256\nlocal {DATABASE} {RESTORE_USER} trust\n"
    )
