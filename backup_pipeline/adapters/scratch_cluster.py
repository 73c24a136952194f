"""Throw-away PostgreSQL clusters for restore drills: a private folder per drill (data, and a link to
its socket folder: mode 0700, short-named in the temporary folder), the server listening on that
Unix socket only (`listen_addresses=''`, never TCP, never the product's own server), client tools
connected as the restore role, every process in the drill's sandbox, and removal at the end,
whatever happened. A data directory prepared once (`initdb`, the roles, the restore database) is kept
as a template per binaries and user, owned by the product's user, and copied for each drill: a copy
costs a fraction of an `initdb`, and no drill can change what the next one starts from. Processes,
the sandbox, the OS user and the drill folder are `drill_host`'s; SQL sent to a cluster lives in
`storage.scratch`.

Three roles: `drill_admin`, the superuser, prepares templates and nothing else (the sample server
also builds its own databases with it); `drill_restore` owns the drill database, restores into it and
is what the checks run as (no more rights than the dump's own owner); `drill_watch` watches the
restore's statements from the `postgres` database, which no dump can write (pg_stat_activity is
cluster-wide), with nothing but `pg_read_all_stats` and `pg_signal_backend`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
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
    Sandbox,
    Tools,
    disk_usage,
    kill_group,
    kill_under,
    sandboxed_pid,
    socket_parent,
    spawn,
    wait_group_gone,
    write_owner,
)

ADMIN_USER = "drill_admin"  # the cluster's superuser: templates (and the sample server), never a drill
RESTORE_USER = "drill_restore"  # restores: not a superuser, owns the drill database
WATCH_USER = "drill_watch"  # watches statements from postgres: pg_read_all_stats, pg_signal_backend
CHECK_USER = "drill_check"  # the checks: reads every table (pg_read_all_data, BYPASSRLS), writes none
DATABASE = "drill"
PORT = 5432  # only names the socket file: nothing listens on TCP
TEMPLATE_VERSION = 3  # bump when what a template holds changes
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


def own(path: Path, user: OsUser, mode: int) -> None:
    if user.switch:
        os.chown(path, user.uid, user.gid)
    os.chmod(path, mode)


def chown_tree(path: Path, user: OsUser) -> None:
    if not user.switch:
        return
    for folder, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(folder, name), user.uid, user.gid)
    os.lchown(path, user.uid, user.gid)


# ---------------------------------------------------------------- a cluster


@dataclass(frozen=True)
class Template:
    """A prepared data directory copied for each drill, the passwords of its roles, the schema of the
    drill database where the product put amcheck (None: these binaries have no amcheck), and the role
    the checks run as (`drill_check`; the restore role where PostgreSQL has no pg_read_all_data)."""

    pgdata: Path
    admin_password: str
    watch_password: str
    amcheck_schema: str | None
    checker: str

    def password(self, role: str) -> str | None:
        return {ADMIN_USER: self.admin_password, WATCH_USER: self.watch_password}.get(role)


class ScratchCluster:
    """One drill's PostgreSQL: created by `start`, always removed by `close` (a context manager)."""

    def __init__(
        self, root: Path, tools: Tools, user: OsUser, limits: Limits, label: str, sandbox: Sandbox
    ) -> None:
        self.tools, self.user, self.limits, self.sandbox = tools, user, limits, sandbox
        token = secrets.token_hex(4)
        self.directory = root / f"run-{safe_label(label)}-{os.getpid()}-{token}"
        self.pgdata = self.directory / "pgdata"
        self.tmp = self.directory / "tmp"  # the sandbox's /tmp
        # PostgreSQL caps a Unix socket's path at 107 bytes: the socket folder lives in the system's
        # temporary folder under a short name, linked from the drill's folder (for leftovers).
        self.socket_dir = socket_parent() / f"bp-{os.getpid()}-{token}"
        self.log_path = self.directory / "postgres.log"
        self.template: Template | None = None  # what it started from (its roles' passwords)
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
        self.tmp.mkdir()
        for private in (self.socket_dir, self.pgdata, self.tmp):
            own(private, self.user, 0o700)

    def start_from(self, template: Template, settings: dict[str, str]) -> None:
        shutil.copytree(template.pgdata, self.pgdata, symlinks=True, dirs_exist_ok=True)
        chown_tree(self.pgdata, self.user)
        os.chmod(self.pgdata, 0o700)
        self.template = template
        self.start(settings)

    def password(self, role: str) -> str | None:
        return self.template.password(role) if self.template is not None else None

    def sandboxed(
        self,
        args: list[str],
        *,
        env: dict[str, str] | None = None,
        stdin: int | IO[Any] | None = subprocess.DEVNULL,
        stdout: int | IO[Any] | None = subprocess.DEVNULL,
        stderr: int | IO[Any] | None = subprocess.PIPE,
    ) -> subprocess.Popen[bytes]:
        """`args` in the cluster's sandbox as the drill user: only its folders can be written (what
        the server, initdb and the client tools run in)."""
        process = spawn(
            args,
            self.user,
            self.limits,
            sandbox=self.sandbox,
            writable=(self.directory, self.socket_dir),
            tmp=self.tmp,
            env=env or base_environment(self.socket_dir),
            cwd=self.directory,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
        )
        self.children.append(process)
        return process

    def start(self, settings: dict[str, str]) -> None:
        """Start the server on the data directory; return once it accepts connections."""
        options = {**settings, **self.fixed_settings()}
        args = [self.tools.path("postgres"), "-D", str(self.pgdata)]
        for name, value in options.items():
            args += ["-c", f"{name}={value}"]
        with open(self.log_path, "ab") as log:
            self.server = self.sandboxed(args, stdout=log, stderr=log)
        self.children.remove(self.server)
        self._wait_ready()

    def fixed_settings(self) -> dict[str, str]:
        return {
            "listen_addresses": "",
            "unix_socket_directories": str(self.socket_dir),
            "unix_socket_permissions": "0700",
            "port": str(PORT),
            "dynamic_shared_memory_type": "mmap",  # files in the data folder, not the sandbox's /dev/shm
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
        """psql, pg_restore or pg_dump in the sandbox (stderr piped), connected as the restore role, or
        as the superuser with `admin` (only for clusters whose content the product wrote itself)."""
        env = base_environment(self.socket_dir) | {"PGUSER": RESTORE_USER, "PGDATABASE": DATABASE}
        if admin:
            env |= {
                "PGUSER": ADMIN_USER,
                "PGDATABASE": "postgres",
                "PGPASSWORD": self.password(ADMIN_USER) or "",
            }
        return self.sandboxed([self.tools.path(tool), *args], env=env, stdin=stdin, stdout=stdout)

    def server_pid(self) -> int | None:
        """The machine's id of the postmaster (the sandbox's launcher is `server`)."""
        return sandboxed_pid(self.server) if self.server is not None else None

    def abort(self) -> None:
        """Stop everything at once (a limit was reached): callable from another thread."""
        for child in self.children:
            kill_group(child)
        kill_group(self.server)
        kill_under(self.directory, timeout=0)  # anything of the cluster outside those groups

    def disk_usage(self) -> int:
        """Bytes the drill holds: its folder's and its socket folder's (the sandbox writes both)."""
        return disk_usage(self.directory) + disk_usage(self.socket_dir)

    def log_tail(self, limit: int = 2000) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(max(0, os.fstat(log.fileno()).st_size - limit))
                return log.read().decode("utf-8", "replace").strip()
        except OSError:
            return "(no server log)"

    def close_server(self) -> None:
        """Stop the server cleanly (a template must be consistent), keeping the folder. The launcher
        does not pass signals on: the postmaster is signalled itself."""
        postmaster = self.server_pid()
        if self.server is not None and self.server.poll() is None and postmaster is not None:
            os.kill(postmaster, signal.SIGINT)  # fast shutdown: a checkpoint, then exit
            self.server.wait(timeout=60)

    def close(self) -> None:
        """Stop the server (immediate shutdown, then SIGKILL) and remove the drill's folder."""
        for child in self.children:
            kill_group(child)
            wait_group_gone(child)
        postmaster = self.server_pid()
        if self.server is not None and self.server.poll() is None and postmaster is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(postmaster, signal.SIGQUIT)  # immediate shutdown: it stops its backends
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.server.wait(timeout=10)
        kill_group(self.server)  # whatever did not stop in time (the sandbox dies with its launcher)
        wait_group_gone(self.server)
        kill_under(self.directory)  # nothing may keep working in a folder about to be removed
        shutil.rmtree(self.socket_dir, ignore_errors=True)
        shutil.rmtree(self.directory, ignore_errors=True)


def safe_label(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", label)[:40]


# ---------------------------------------------------------------- templates


def ensure_template(
    root: Path,
    tools: Tools,
    user: OsUser,
    limits: Limits,
    sandbox: Sandbox,
    prepare: Callable[[ScratchCluster, str], TemplateFacts],
) -> Template:
    """The prepared data directory for these binaries and user, made once: initdb, then `prepare` on
    a running cluster (given the watch role's password; it answers amcheck's schema and the checks'
    role). It belongs to the product's user: drills work on copies."""
    key = hashlib.sha256(
        f"{tools.bin_dir}|{tools.versions}|{user.uid}|{TEMPLATE_VERSION}".encode()
    ).hexdigest()
    folder = root / "templates" / key[:16]
    if (folder / "pgdata" / "PG_VERSION").exists() and (folder / TEMPLATE_FACTS).exists():
        return _read_template(folder)
    (root / "templates").mkdir(exist_ok=True)
    os.chmod(root / "templates", 0o711 if user.switch else 0o700)
    admin_password, watch_password = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    building = ScratchCluster(root / "templates", tools, user, limits, f"build-{key[:8]}", sandbox)
    with building:
        building.create()
        _initdb(building, admin_password)
        building.template = Template(building.pgdata, admin_password, watch_password, None, RESTORE_USER)
        building.start({"fsync": "off"})
        made = prepare(building, watch_password)
        building.close_server()
        staged = root / "templates" / f"{key[:16]}.{os.getpid()}.{secrets.token_hex(4)}"
        staged.mkdir(mode=0o700)
        facts = {"admin": admin_password, "watch": watch_password} | dataclasses.asdict(made)
        fd = os.open(staged / TEMPLATE_FACTS, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(facts, out)
        os.rename(building.pgdata, staged / "pgdata")
        make_the_products(staged)
        try:
            os.rename(staged, folder)
        except OSError:  # another drill finished the same template first: use theirs
            shutil.rmtree(staged, ignore_errors=True)
    return _read_template(folder)


TEMPLATE_FACTS = "template.json"


@dataclass(frozen=True)
class TemplateFacts:
    """What preparing a template made: amcheck's schema (None: no amcheck), the checks' role."""

    amcheck_schema: str | None
    checker: str


def _read_template(folder: Path) -> Template:
    facts = json.loads((folder / TEMPLATE_FACTS).read_text())
    return Template(
        folder / "pgdata", facts["admin"], facts["watch"], facts["amcheck_schema"], facts["checker"]
    )


def make_the_products(folder: Path) -> None:
    """The template belongs to the product's user, writable by it alone (initdb ran as the drill user)."""
    for path in [folder, *folder.rglob("*")]:
        os.lchown(path, os.geteuid(), os.getegid())
        if not path.is_symlink():
            os.chmod(path, path.lstat().st_mode & 0o700)


def _initdb(cluster: ScratchCluster, password: str) -> None:
    pwfile = cluster.directory / "pwfile"
    pwfile.write_text(password + "\n")
    own(pwfile, cluster.user, 0o600)
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
    process = cluster.sandboxed(args)
    _, err = process.communicate(timeout=120)
    pwfile.unlink()
    if process.returncode != 0:
        raise DrillUnavailable(f"initdb failed: {err.decode('utf-8', 'replace').strip()[-1000:]}")
    (cluster.pgdata / "pg_hba.conf").write_text(
        f"local all {ADMIN_USER} scram-sha-256\n"
        f"local postgres {WATCH_USER} scram-sha-256\n"
        f"local {DATABASE} {RESTORE_USER} trust\n"
        f"local {DATABASE} {CHECK_USER} trust\n"
    )
