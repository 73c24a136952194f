"""The deposit area on disk: agent folders, report files, staged dumps and the report archive.

Everything under the root is written by untrusted machines. Nothing here follows a symbolic link,
opens anything but a regular file, or resolves a name outside the agent's own folder; reading is
bounded. Staged dumps are only ever read.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from backup_pipeline.core.reports import is_valid_agent_id

log = logging.getLogger(__name__)

LOG_DIR = "log"
ARCHIVE_DIR = "_archive"
STAGED_DIRS = ("database", "databases")
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


class UnsafeFile(OSError):
    """A file the server refuses to read; the message says why in a person's words."""


@dataclass(frozen=True)
class AgentFolder:
    agent_id: str
    path: Path

    @property
    def log_dir(self) -> Path:
        return self.path / LOG_DIR

    @property
    def archive_dir(self) -> Path:
        return self.path / LOG_DIR / ARCHIVE_DIR


@dataclass(frozen=True)
class ReportFile:
    agent: AgentFolder
    name: str
    mtime: float
    size: int
    kind: str  # "file", or what else sits there under a .json name (symlink, directory, fifo...)

    @property
    def path(self) -> Path:
        return self.agent.log_dir / self.name


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str


def discover_agents(root: Path) -> tuple[list[AgentFolder], list[Skipped]]:
    """Agent folders under the root, and what was skipped (with why). Nothing skipped is touched."""
    agents: list[AgentFolder] = []
    skipped: list[Skipped] = []
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except FileNotFoundError:
        raise FileNotFoundError(f"deposit root {root} does not exist (set BACKUP_STORAGE_ROOT)") from None
    for entry in entries:
        if entry.is_symlink():
            skipped.append(Skipped(entry.name, "is a symbolic link; agent folders must be real directories"))
        elif not entry.is_dir(follow_symlinks=False):
            continue  # stray files at the root are not agent folders
        elif not is_valid_agent_id(entry.name):
            skipped.append(Skipped(entry.name, "name is not ENTREPRISE_VILLE_QUARTIER"))
        elif not _is_real_dir(Path(entry.path) / LOG_DIR):
            skipped.append(Skipped(entry.name, "has no log/ directory"))
        else:
            agents.append(AgentFolder(entry.name, Path(entry.path)))
    return agents, skipped


def _is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def kind_of(mode: int) -> str:
    for test, name in (
        (stat.S_ISREG, "file"),
        (stat.S_ISLNK, "symbolic link"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "named pipe"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return name
    return "special file"


def list_reports(agent: AgentFolder) -> Iterator[ReportFile]:
    """Every `*.json` entry of the agent's log/ (not the archive), whatever its kind."""
    with os.scandir(agent.log_dir) as entries:
        for entry in entries:
            if not entry.name.endswith(".json"):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # moved away between listing and stat: the next scan sees where it went
            yield ReportFile(agent, entry.name, st.st_mtime, st.st_size, kind_of(st.st_mode))


def read_report(report: ReportFile, max_bytes: int) -> bytes:
    """The bytes of a report file, refusing anything unsafe or too large (UnsafeFile says why)."""
    with _open_regular(report.path, what="report") as fd:
        size = os.fstat(fd).st_size
        if size > max_bytes:
            raise UnsafeFile(f"report is {size} bytes, above the {max_bytes}-byte limit (not read)")
        chunks = []
        remaining = max_bytes + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        if len(data) > max_bytes:
            raise UnsafeFile(f"report grew past the {max_bytes}-byte limit while being read (not read)")
        return data


class _open_regular:
    """Open a path as a regular file without following links or blocking on a FIFO."""

    def __init__(self, path: Path, *, what: str, refuse_hard_links: bool = False) -> None:
        self.path, self.what, self.refuse_hard_links = path, what, refuse_hard_links
        self.fd = -1

    def __enter__(self) -> int:
        try:
            self.fd = os.open(self.path, _OPEN_FLAGS)
        except OSError as exc:
            raise UnsafeFile(_open_error(self.what, exc)) from None
        st = os.fstat(self.fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(self.fd)
            raise UnsafeFile(f"{self.what} is a {kind_of(st.st_mode)}, not a regular file")
        if self.refuse_hard_links and st.st_nlink > 1:
            os.close(self.fd)
            raise UnsafeFile(
                f"{self.what} has {st.st_nlink} hard links; it may be a file from outside the deposit"
            )
        os.set_blocking(self.fd, True)
        return self.fd

    def __exit__(self, *_: object) -> None:
        os.close(self.fd)


def _open_error(what: str, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return f"{what} is a symbolic link (not followed)"
    if exc.errno == errno.ENOENT:
        return f"{what} is absent"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"{what} cannot be read: permission denied"
    return f"{what} cannot be opened: {exc.strerror}"


def open_staged_file(agent_dir: Path, file_name: str) -> _open_regular:
    """The staged dump `file_name` in the agent's database/ (or databases/) folder, opened safely.

    `file_name` must be a bare name: anything with a directory part is refused before touching disk.
    """
    if (
        not file_name
        or file_name in (".", "..")
        or "/" in file_name
        or "\\" in file_name
        or "\x00" in file_name
    ):
        raise UnsafeFile(f"staged file name {file_name!r} is not a plain file name (not read)")
    for folder in STAGED_DIRS:
        directory = agent_dir / folder
        if not _is_real_dir(directory):
            continue
        candidate = directory / file_name
        if os.path.lexists(candidate):
            return _open_regular(candidate, what=f"staged file {file_name}", refuse_hard_links=True)
    raise UnsafeFile(f"staged file {file_name} is absent from {agent_dir.name}/database(s)/")


def file_sha256(fd: int) -> str:
    digest = hashlib.sha256()
    while chunk := os.read(fd, 1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- archive


def archive_report(agent: AgentFolder, name: str, content_sha256: str | None) -> Path | None:
    """Move log/<name> into log/_archive/ without ever overwriting; the archived path, or None if gone.

    Crash-safe by construction: the file is hard-linked under a free name, then unlinked, so at any
    instant it exists at least once; a leftover pair is recognised on the next scan by its content.
    """
    source = agent.log_dir / name
    if not os.path.lexists(source):
        return None
    agent.archive_dir.mkdir(exist_ok=True)
    existing = _identical_archived(agent, name, source, content_sha256)
    if existing is not None:
        os.unlink(source)
        return existing
    for target in _free_names(agent.archive_dir, name):
        try:
            os.link(source, target, follow_symlinks=False)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                raise
            if os.path.lexists(target):  # no hard links on this file system: rename if free
                continue
            os.rename(source, target)
            return target
        os.unlink(source)
        return target
    raise RuntimeError("unreachable: _free_names is endless")


def _free_names(directory: Path, name: str) -> Iterator[Path]:
    yield directory / name
    stem = name[: -len(".json")] if name.endswith(".json") else name
    n = 1
    while True:
        yield directory / f"{stem}.dup{n}.json"
        n += 1


def _identical_archived(
    agent: AgentFolder, name: str, source: Path, content_sha256: str | None
) -> Path | None:
    """An archived copy left by an interrupted move: same inode, or same content under a clash name."""
    for target in archived_candidates(agent, name):
        try:
            if os.path.samefile(source, target):
                return target
        except OSError:
            continue
        if content_sha256 is not None and sha256_of_path(target) == content_sha256:
            return target
    return None


def archived_candidates(agent: AgentFolder, name: str) -> list[Path]:
    """Archived files that may hold `name`: itself and its clash-suffixed copies."""
    stem = name[: -len(".json")] if name.endswith(".json") else name
    try:
        names = os.listdir(agent.archive_dir)
    except FileNotFoundError:
        return []
    return [
        agent.archive_dir / n
        for n in sorted(names)
        if n == name or (n.startswith(stem + ".dup") and n.endswith(".json"))
    ]


def sha256_of_path(path: Path) -> str | None:
    try:
        with _open_regular(path, what="file") as fd:
            return file_sha256(fd)
    except UnsafeFile:
        return None
