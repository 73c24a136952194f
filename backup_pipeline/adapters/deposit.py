"""The deposit area on disk: agent folders, report files, staged dumps and the report archive.

Everything under the root is written by untrusted machines. Nothing here follows a symbolic link,
opens anything but a regular file, or resolves a name outside the agent's own folder; reading is
bounded. Staged dumps are only ever read.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from backup_pipeline.core.reports import MAX_FILE_NAME_BYTES, MAX_RECORDED_NAME, agent_id_problem

log = logging.getLogger(__name__)

LOG_DIR = "log"
ARCHIVE_DIR = "_archive"
STAGED_DIRS = ("database", "databases")
# Archived names leave room for a clash suffix (`.dup<n>.json`) within a file name's 255 bytes.
ARCHIVE_NAME_BYTES = MAX_FILE_NAME_BYTES - 15
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class UnsafeFile(OSError):
    """A file the server refuses to read; the message says why in a person's words."""


class Vanished(UnsafeFile):
    """The file was there when listed and is gone now (moved by a concurrent scan, or by its agent)."""


class ArchiveUnavailable(OSError):
    """log/ or log/_archive/ cannot be used safely or at all; the message says why in a person's words."""


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

    @property
    def shown(self) -> str:
        """The name as recorded and shown (bytes that are not UTF-8 escaped)."""
        return shown_name(self.name)


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str


def shown_name(name: str) -> str:
    """A file name as recorded: itself, or with its non-UTF-8 bytes escaped, within MAX_RECORDED_NAME.

    Names come from untrusted machines: `\\xff` in a name must not crash a scan (Python keeps such
    bytes as lone surrogates, which no UTF-8 text can hold). A name longer than the column once
    escaped (no Linux file system has one) is cut, and told apart from others by a digest of it.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        name = os.fsencode(name).decode("utf-8", "backslashreplace")
    if len(name) > MAX_RECORDED_NAME:
        name = _shortened(name, MAX_RECORDED_NAME, in_bytes=False)
    return name


def _shortened(name: str, limit: int, *, in_bytes: bool) -> str:
    """`name` cut to `limit` characters (or UTF-8 bytes), keeping `.json`, with a digest of the whole
    name so that two long names sharing their beginning stay apart."""
    suffix = "~" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16] + ".json"
    head = name[: -len(".json")] if name.endswith(".json") else name
    room = limit - len(suffix)
    if in_bytes:
        return head.encode()[:room].decode("utf-8", "ignore") + suffix
    return head[:room] + suffix


def discover_agents(root: Path) -> tuple[list[AgentFolder], list[Skipped]]:
    """Agent folders under the root, and what was skipped (with why). Nothing skipped is touched."""
    agents: list[AgentFolder] = []
    skipped: list[Skipped] = []
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except FileNotFoundError:
        raise FileNotFoundError(f"deposit root {root} does not exist (set BACKUP_STORAGE_ROOT)") from None
    for entry in entries:
        name = shown_name(entry.name)
        if entry.is_symlink():
            skipped.append(Skipped(name, "is a symbolic link; agent folders must be real directories"))
        elif not entry.is_dir(follow_symlinks=False):
            continue  # stray files at the root are not agent folders
        elif (problem := agent_id_problem(entry.name)) is not None:
            skipped.append(Skipped(name, problem))
        elif not _is_real_dir(Path(entry.path) / LOG_DIR):
            skipped.append(Skipped(name, "has no log/ directory"))
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
        st = os.fstat(fd)
        size = st.st_size
        if st.st_nlink > 1 and not _twin_in_archive(report, st):
            raise UnsafeFile(
                f"report has {st.st_nlink} hard links; it may be a file from outside the deposit (not read)"
            )
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

    def __init__(
        self, path: Path | str, *, what: str, refuse_hard_links: bool = False, dir_fd: int | None = None
    ) -> None:
        self.path, self.what, self.refuse_hard_links, self.dir_fd = path, what, refuse_hard_links, dir_fd
        self.fd = -1

    def __enter__(self) -> int:
        try:
            self.fd = os.open(self.path, _OPEN_FLAGS, dir_fd=self.dir_fd)
        except OSError as exc:
            error = Vanished if exc.errno == errno.ENOENT else UnsafeFile
            raise error(_open_error(self.what, exc, self._kind())) from None
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

    def _kind(self) -> str | None:
        try:
            return kind_of(os.stat(self.path, dir_fd=self.dir_fd, follow_symlinks=False).st_mode)
        except OSError:
            return None


def _open_error(what: str, exc: OSError, kind: str | None = None) -> str:
    if exc.errno == errno.ELOOP:
        return f"{what} is a symbolic link (not followed)"
    if exc.errno == errno.ENOENT:
        return f"{what} is absent"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"{what} cannot be read: permission denied"
    if kind not in (None, "file"):  # a socket gives ENXIO, a device its own error
        return f"{what} is a {kind}, not a regular file"
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


def staged_file_size(agent_dir: Path, file_name: str) -> int:
    """How many bytes measuring the staged dump `file_name` will read: its size when it is a regular
    file where `open_staged_file` looks (a link is never followed), else 0. For spreading work only."""
    try:
        located = open_staged_file(agent_dir, file_name)
        st = os.stat(located.path, follow_symlinks=False)
    except OSError:  # UnsafeFile included: absent, unsafe name
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


def file_sha256(fd: int) -> str:
    digest = hashlib.sha256()
    while chunk := os.read(fd, 1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- archive
#
# Every archive operation works relative to file descriptors of the agent's folder, its log/ and
# log/_archive/, each opened without following a symbolic link: an agent that swaps one of them for
# a link (to /etc, to another agent) makes the move fail with a clear reason, never write elsewhere.


def archive_report(
    agent: AgentFolder, name: str, content_sha256: str | None, *, source_name: str | None = None
) -> Path | None:
    """Move log/<name> into log/_archive/ without ever overwriting; the archived path, or None if gone.

    `name` is the recorded (shown) name, under which the file is archived; `source_name` is its
    name on disk when that differs (bytes that are not UTF-8). Crash-safe by construction: the file
    is hard-linked under a free name, then unlinked, so at any instant it exists at least once; a
    leftover pair is recognised on the next scan by its inode or its content.
    """
    source = source_name or name
    with _log_dirs(agent, create_archive=True) as (log_fd, archive_fd):
        assert archive_fd is not None
        if _lstat(source, log_fd) is None:
            return None
        existing = _identical_archived(log_fd, archive_fd, source, name, content_sha256)
        if existing is not None:
            os.unlink(source, dir_fd=log_fd)
            return agent.archive_dir / existing
        for target in _free_names(name):
            try:
                os.link(source, target, src_dir_fd=log_fd, dst_dir_fd=archive_fd, follow_symlinks=False)
            except FileExistsError:
                continue
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                    raise
                if _lstat(target, archive_fd) is not None:  # no hard links here: rename if free
                    continue
                os.rename(source, target, src_dir_fd=log_fd, dst_dir_fd=archive_fd)
                return agent.archive_dir / target
            os.unlink(source, dir_fd=log_fd)
            return agent.archive_dir / target
    raise RuntimeError("unreachable: _free_names is endless")


def archived_candidates(agent: AgentFolder, name: str) -> list[Path]:
    """Archived files that may hold `name`: itself and its clash-suffixed copies (none if unsafe)."""
    try:
        with _log_dirs(agent, create_archive=False) as (_, archive_fd):
            if archive_fd is None:
                return []
            return [agent.archive_dir / n for n in _candidate_names(archive_fd, name)]
    except ArchiveUnavailable:
        return []


def waiting_names(agent: AgentFolder) -> dict[str, list[str]]:
    """Entries of log/ by recorded (shown) name → their names on disk."""
    found: dict[str, list[str]] = {}
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.listdir(agent.log_dir):
            if entry != ARCHIVE_DIR:
                found.setdefault(shown_name(entry), []).append(entry)
    return found


def sha256_of_path(path: Path) -> str | None:
    try:
        with _open_regular(path, what="file") as fd:
            return file_sha256(fd)
    except UnsafeFile:
        return None


def synthetic_hash(kind: str, name: str) -> str:
    """Identity of an entry that cannot be read (link, directory, FIFO, too large...): name and kind."""
    return hashlib.sha256(f"unreadable:{kind}:{name}".encode()).hexdigest()


def holds_report(path: Path, name: str, recorded_hash: str) -> bool:
    """Whether the file at `path` is still the recorded report `name` (by content, or by identity
    when it could not be read)."""
    try:
        kind = kind_of(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False
    if synthetic_hash(kind, name) == recorded_hash:
        return True
    return kind == "file" and sha256_of_path(path) == recorded_hash


@contextmanager
def _log_dirs(agent: AgentFolder, *, create_archive: bool) -> Iterator[tuple[int, int | None]]:
    """Descriptors of the agent's log/ and log/_archive/ (None when absent and not created)."""
    opened: list[int] = []
    try:
        agent_fd = _open_dir(str(agent.path), None, agent.agent_id)
        opened.append(agent_fd)
        log_fd = _open_dir(LOG_DIR, agent_fd, f"{agent.agent_id}/{LOG_DIR}")
        opened.append(log_fd)
        where = f"{agent.agent_id}/{LOG_DIR}/{ARCHIVE_DIR}"
        if create_archive:
            try:
                os.mkdir(ARCHIVE_DIR, 0o755, dir_fd=log_fd)
            except FileExistsError:
                pass
            except OSError as exc:
                raise ArchiveUnavailable(exc.errno, f"cannot create {where}: {exc.strerror}") from None
        elif _lstat(ARCHIVE_DIR, log_fd) is None:
            yield log_fd, None
            return
        archive_fd = _open_dir(ARCHIVE_DIR, log_fd, where)
        opened.append(archive_fd)
        yield log_fd, archive_fd
    finally:
        for fd in reversed(opened):
            os.close(fd)


def _open_dir(name: str, dir_fd: int | None, where: str) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        st = _lstat(name, dir_fd)
        if st is not None and not stat.S_ISDIR(st.st_mode):
            reason = f"{where} is a {kind_of(st.st_mode)}, not a directory (not followed)"
        elif exc.errno == errno.ENOENT:
            reason = f"{where} does not exist"
        else:
            reason = f"{where} cannot be opened: {exc.strerror}"
        raise ArchiveUnavailable(exc.errno, reason) from None


def _lstat(name: str, dir_fd: int | None) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def archive_name(name: str) -> str:
    """The name a recorded report is archived under: its recorded name, shortened (with a digest of
    it) when that is too long for a file name once a clash suffix (`.dup12.json`) is added."""
    if len(name.encode()) <= ARCHIVE_NAME_BYTES:
        return name
    return _shortened(name, ARCHIVE_NAME_BYTES, in_bytes=True)


def _free_names(name: str) -> Iterator[str]:
    name = archive_name(name)
    yield name
    stem = name[: -len(".json")] if name.endswith(".json") else name
    n = 1
    while True:
        yield f"{stem}.dup{n}.json"
        n += 1


def _candidate_names(archive_fd: int, name: str) -> list[str]:
    name = archive_name(name)
    stem = name[: -len(".json")] if name.endswith(".json") else name
    return [
        n
        for n in sorted(os.listdir(archive_fd))
        if n == name or (n.startswith(stem + ".dup") and n.endswith(".json"))
    ]


def _identical_archived(
    log_fd: int, archive_fd: int, source: str, name: str, content_sha256: str | None
) -> str | None:
    """An archived copy left by an interrupted move: same inode, or same content under a clash name."""
    source_st = _lstat(source, log_fd)
    for candidate in _candidate_names(archive_fd, name):
        st = _lstat(candidate, archive_fd)
        if st is None:
            continue
        if source_st is not None and (st.st_dev, st.st_ino) == (source_st.st_dev, source_st.st_ino):
            return candidate
        if content_sha256 is not None and stat.S_ISREG(st.st_mode):
            try:
                with _open_regular(candidate, what="file", dir_fd=archive_fd) as fd:
                    if file_sha256(fd) == content_sha256:
                        return candidate
            except UnsafeFile:
                continue
    return None


def _twin_in_archive(report: ReportFile, st: os.stat_result) -> bool:
    """Whether the report's other hard link is its own copy in log/_archive/ (an interrupted move)."""
    try:
        with _log_dirs(report.agent, create_archive=False) as (_, archive_fd):
            if archive_fd is None:
                return False
            for candidate in _candidate_names(archive_fd, report.shown):
                other = _lstat(candidate, archive_fd)
                if other is not None and (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                    return True
    except ArchiveUnavailable:
        return False
    return False
