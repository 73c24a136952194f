"""Throw-away MariaDB servers for restore drills of MariaDB/MySQL dumps, built like the PostgreSQL
clusters of `scratch_cluster`: a private folder per drill (data, temporary files, an empty folder that
is the server's only place for files, and a link to its socket folder, 0700 and short-named in the
temporary folder), the server on that Unix socket only (`--skip-networking`), every process — the
server, `mariadb-install-db`, the client — in the drill's sandbox as the drill user, and removal at the
end, whatever happened. A data directory prepared once (`mariadb-install-db`, the accounts, the drill
database) is kept as a template per binaries and user, owned by the product's user, and copied for each
drill. SQL sent to a server lives in `storage.scratch_mariadb`.

The server is started with nothing it could reach beyond its folder: `--secure-file-priv` an empty
folder of its own, `--local-infile=0`, no symbolic links, no event scheduler, no binary log, its
temporary files in the drill's folder. The client runs with `--sandbox` (no `system`, `tee`, `pager`,
`source`), `--local-infile=0`, no option files, and an editor that does nothing.

Three accounts, as for PostgreSQL: `drill_admin` prepares templates (and the sample databases) and
nothing else; `drill_restore` has every right on the drill database and none elsewhere — it restores,
and it is what the checks run as; `drill_watch` holds PROCESS and CONNECTION ADMIN, to see and stop the
restore's statements, from no database at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
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
    MariadbTools,
    OsUser,
    Sandbox,
    disk_usage,
    kill_group,
    kill_under,
    sandboxed_pid,
    socket_parent,
    spawn,
    wait_group_gone,
    write_owner,
)
from backup_pipeline.adapters.scratch_cluster import chown_tree, make_the_products, own, safe_label

ADMIN_USER = "drill_admin"  # templates and sample databases, never a drill
RESTORE_USER = "drill_restore"  # every right on the drill database, none elsewhere
WATCH_USER = "drill_watch"  # PROCESS, CONNECTION ADMIN: sees and stops the restore's statements
DATABASE = "drill"
TEMPLATE_VERSION = 1  # bump when what a template holds changes
START_TIMEOUT = 120.0
READY = b": ready for connections"
SOCKET_NAME = "mysqld.sock"
SERVER_SQL_MODE = "STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_AUTO_CREATE_USER,NO_ENGINE_SUBSTITUTION"


def base_environment() -> dict[str, str]:
    """What the server and the client see: nothing of the product's environment, no editor, no pager,
    no history, no option file."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin",
        "LC_ALL": "C",
        "LANG": "C",
        "TZ": "UTC",
        "HOME": "/nonexistent",
        "MYSQL_HISTFILE": "/dev/null",
        "EDITOR": "/bin/false",
        "VISUAL": "/bin/false",
        "PAGER": "/bin/cat",
    }


@dataclass(frozen=True)
class MariadbTemplate:
    """A prepared data directory copied for each drill, and the passwords of its accounts."""

    datadir: Path
    passwords: dict[str, str]

    def password(self, account: str) -> str | None:
        return self.passwords.get(account)


class ScratchMariadb:
    """One drill's MariaDB: created by `create`, always removed by `close` (a context manager)."""

    def __init__(
        self, root: Path, tools: MariadbTools, user: OsUser, limits: Limits, label: str, sandbox: Sandbox
    ) -> None:
        self.tools, self.user, self.limits, self.sandbox = tools, user, limits, sandbox
        token = secrets.token_hex(4)
        self.directory = root / f"run-{safe_label(label)}-{os.getpid()}-{token}"
        self.datadir = self.directory / "data"
        self.tmp = self.directory / "tmp"  # the sandbox's /tmp, and the server's temporary files
        self.files = self.directory / "files"  # secure_file_priv: empty, and the server's only one
        self.socket_dir = socket_parent() / f"bp-{os.getpid()}-{token}"
        self.socket = self.socket_dir / SOCKET_NAME
        self.log_path = self.directory / "mariadb.log"
        self.template: MariadbTemplate | None = None
        self.server: subprocess.Popen[bytes] | None = None
        self.children: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> ScratchMariadb:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- lifecycle

    def create(self) -> None:
        self.directory.mkdir(mode=0o711 if self.user.switch else 0o700)
        write_owner(self.directory)
        self.socket_dir.mkdir(mode=0o700)
        (self.directory / SOCKET_LINK).symlink_to(self.socket_dir)
        for private in (self.datadir, self.tmp, self.files):
            private.mkdir()
        for private in (self.socket_dir, self.datadir, self.tmp, self.files):
            own(private, self.user, 0o700)

    def start_from(self, template: MariadbTemplate, settings: dict[str, str]) -> None:
        shutil.copytree(template.datadir, self.datadir, symlinks=True, dirs_exist_ok=True)
        chown_tree(self.datadir, self.user)
        os.chmod(self.datadir, 0o700)
        self.template = template
        self.start(settings)

    def password(self, account: str) -> str | None:
        return self.template.password(account) if self.template is not None else None

    def sandboxed(
        self,
        args: list[str],
        *,
        env: dict[str, str] | None = None,
        stdin: int | IO[Any] | None = subprocess.DEVNULL,
        stdout: int | IO[Any] | None = subprocess.DEVNULL,
        stderr: int | IO[Any] | None = subprocess.PIPE,
    ) -> subprocess.Popen[bytes]:
        """`args` in the server's sandbox as the drill user: only its folders can be written."""
        process = spawn(
            args,
            self.user,
            self.limits,
            sandbox=self.sandbox,
            writable=(self.directory, self.socket_dir),
            tmp=self.tmp,
            env=env or base_environment(),
            cwd=self.directory,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
        )
        self.children.append(process)
        return process

    def start(self, settings: dict[str, str]) -> None:
        """Start the server on the data directory; return once it accepts connections."""
        args = [str(self.tools.server), "--no-defaults"]
        args += [f"--{name}={value}" for name, value in {**settings, **self.fixed_settings()}.items()]
        args += ["--skip-networking", "--skip-symbolic-links", "--skip-name-resolve", "--skip-log-bin"]
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.server = self.sandboxed(args, stdout=log, stderr=log)
        self.children.remove(self.server)
        self._wait_ready(offset)

    def fixed_settings(self) -> dict[str, str]:
        return {
            "basedir": str(self.tools.basedir),
            "datadir": str(self.datadir),
            "socket": str(self.socket),
            "pid-file": str(self.tmp / "mariadbd.pid"),  # a folder of the drill user's
            "tmpdir": str(self.tmp),
            "secure-file-priv": str(self.files),
            "local-infile": "0",
            "event-scheduler": "DISABLED",
            "sql-mode": SERVER_SQL_MODE,
        }

    def _wait_ready(self, offset: int) -> None:
        assert self.server is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise DrillUnavailable(f"the scratch MariaDB did not start: {self.log_tail()}")
            with contextlib.suppress(OSError), open(self.log_path, "rb") as log:
                log.seek(offset)
                if READY in log.read() and self.socket.exists():
                    return
            time.sleep(0.05)
        raise DrillUnavailable(f"the scratch MariaDB did not start within {START_TIMEOUT:.0f} s")

    def client(
        self,
        args: list[str],
        *,
        stdin: int | IO[Any] | None = subprocess.DEVNULL,
        stdout: int | IO[Any] | None = subprocess.DEVNULL,
        admin: bool = False,
    ) -> subprocess.Popen[bytes]:
        """The `mariadb` client in the sandbox (stderr piped), in sandbox mode, connected as the
        restore account to the drill database, or as the admin (only to servers whose content the
        product wrote itself)."""
        account = ADMIN_USER if admin else RESTORE_USER
        command = [
            str(self.tools.client),
            "--no-defaults",
            f"--socket={self.socket}",
            f"--user={account}",
            "--batch",
            "--sandbox",
            "--local-infile=0",
            "--skip-named-commands",
            "--skip-reconnect",
            "--max-allowed-packet=1G",
            "--default-character-set=utf8mb4",
            *args,
        ]
        env = base_environment() | {"MYSQL_PWD": self.password(account) or ""}
        return self.sandboxed(command, env=env, stdin=stdin, stdout=stdout)

    def dump_tool(self, args: list[str], *, stdout: int | IO[Any] | None) -> subprocess.Popen[bytes]:
        """mariadb-dump as the admin (sample databases only)."""
        if self.tools.dump is None:
            raise DrillUnavailable("no mariadb-dump next to the MariaDB binaries")
        command = [str(self.tools.dump), "--no-defaults", f"--socket={self.socket}", f"--user={ADMIN_USER}"]
        env = base_environment() | {"MYSQL_PWD": self.password(ADMIN_USER) or ""}
        return self.sandboxed([*command, *args], env=env, stdout=stdout)

    def server_pid(self) -> int | None:
        return sandboxed_pid(self.server) if self.server is not None else None

    def abort(self) -> None:
        """Stop everything at once (a limit was reached): callable from another thread."""
        for child in self.children:
            kill_group(child)
        kill_group(self.server)
        kill_under(self.directory, timeout=0)

    def disk_usage(self) -> int:
        """Bytes the drill holds: its folder's and its socket folder's (the sandbox writes both)."""
        return disk_usage(self.directory) + disk_usage(self.socket_dir)

    def database_bytes(self) -> int:
        """The restored database's size: its files' sizes (the server keeps a database's tables in
        a folder of their own)."""
        total = 0
        for folder, _, files in os.walk(self.datadir / DATABASE):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(folder, name)).st_size
        return total

    def log_tail(self, limit: int = 2000) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(max(0, os.fstat(log.fileno()).st_size - limit))
                return log.read().decode("utf-8", "replace").strip()
        except OSError:
            return "(no server log)"

    def close_server(self) -> None:
        """Stop the server cleanly (a template must be consistent), keeping the folder."""
        pid = self.server_pid()
        if self.server is not None and self.server.poll() is None and pid is not None:
            os.kill(pid, signal.SIGTERM)
            self.server.wait(timeout=120)

    def close(self) -> None:
        """Kill the server and its clients (nothing of a drill is worth a clean shutdown) and remove
        the drill's folder."""
        for child in self.children:
            kill_group(child)
            wait_group_gone(child)
        kill_group(self.server)  # the sandbox dies with its launcher, and the server with it
        wait_group_gone(self.server)
        kill_under(self.directory)
        shutil.rmtree(self.socket_dir, ignore_errors=True)
        shutil.rmtree(self.directory, ignore_errors=True)


# ---------------------------------------------------------------- templates

TEMPLATE_FACTS = "template.json"


def ensure_mariadb_template(
    root: Path,
    tools: MariadbTools,
    user: OsUser,
    limits: Limits,
    sandbox: Sandbox,
    prepare: Callable[[ScratchMariadb, dict[str, str]], None],
) -> MariadbTemplate:
    """The prepared data directory for these binaries and user, made once: mariadb-install-db, then
    `prepare` on the running server (given the accounts' passwords). It belongs to the product's user:
    drills work on copies."""
    key = hashlib.sha256(
        f"mariadb|{tools.server}|{tools.versions}|{user.uid}|{TEMPLATE_VERSION}".encode()
    ).hexdigest()
    folder = root / "templates" / f"mariadb-{key[:16]}"
    if (folder / "data" / "mysql").is_dir() and (folder / TEMPLATE_FACTS).exists():
        return _read_template(folder)
    (root / "templates").mkdir(exist_ok=True)
    os.chmod(root / "templates", 0o711 if user.switch else 0o700)
    passwords = {account: secrets.token_urlsafe(24) for account in (ADMIN_USER, RESTORE_USER, WATCH_USER)}
    building = ScratchMariadb(root / "templates", tools, user, limits, f"build-m{key[:8]}", sandbox)
    with building:
        building.create()
        _install_db(building)
        building.start({"innodb-buffer-pool-size": "64M"})
        prepare(building, passwords)
        building.template = MariadbTemplate(building.datadir, passwords)
        building.close_server()
        staged = root / "templates" / f"mariadb-{key[:16]}.{os.getpid()}.{secrets.token_hex(4)}"
        staged.mkdir(mode=0o700)
        fd = os.open(staged / TEMPLATE_FACTS, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(passwords, out)
        os.rename(building.datadir, staged / "data")
        make_the_products(staged)
        try:
            os.rename(staged, folder)
        except OSError:  # another drill finished the same template first: use theirs
            shutil.rmtree(staged, ignore_errors=True)
    return _read_template(folder)


def _read_template(folder: Path) -> MariadbTemplate:
    return MariadbTemplate(folder / "data", json.loads((folder / TEMPLATE_FACTS).read_text()))


def _install_db(server: ScratchMariadb) -> None:
    args = [
        str(server.tools.install_db),
        "--no-defaults",
        f"--basedir={server.tools.basedir}",
        f"--datadir={server.datadir}",
        "--auth-root-authentication-method=normal",
        "--skip-test-db",
        "--skip-name-resolve",
        "--force",  # the sandbox shows no /etc/hosts to look the host's name up in: no need to
    ]
    process = server.sandboxed(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = process.communicate(timeout=300)
    if process.returncode != 0:
        text = out.decode("utf-8", "replace").strip()[-1000:]
        raise DrillUnavailable(f"mariadb-install-db failed: {text}")
