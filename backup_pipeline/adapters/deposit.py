"""The deposit area on disk: agent folders, report files, staged dumps and the report archive.

Everything under the root is written by untrusted machines. Nothing here follows a symbolic link,
opens anything but a regular file, or resolves a name outside the agent's own folder; reading is
bounded. Staged dumps are only ever read.

What is checked is what is used: every name is resolved relative to a descriptor of the folder
above it, opened without following a link (O_NOFOLLOW at every level, from the agent's folder down),
and a file is looked at through an O_PATH descriptor before it is opened through that descriptor. An
agent that swaps a folder or a file for a link at any moment gets a refusal with the reason, never
a read outside its folder; a FIFO or a device node is never opened.
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
# The root is the operator's; every name below it is opened relative to its folder's descriptor,
# never following a link. A file is first looked at through an O_PATH descriptor (Linux), which
# opens nothing (no FIFO writer released, no device driver reached), then opened through it.
_ROOT_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC  # only ever a regular file: nothing to block on


class UnsafeFile(OSError):
    """A file the server refuses to read; the message says why in a person's words."""


class Vanished(UnsafeFile):
    """The file was there when listed and is gone now (moved by a concurrent scan, or by its agent)."""


class UnsafeFolder(OSError):
    """An agent's folder, its log/, log/_archive/ or database(s)/ cannot be used safely or at all
    (a link, a file, absent...); `strerror` says why in a person's words."""


ArchiveUnavailable = UnsafeFolder  # what archiving callers catch


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
    """Agent folders under the root, and what was skipped (with why). Nothing skipped is touched.

    What is checked here is only looked at: every later use opens each folder again, relative to
    its parent's descriptor and without following a link, so a folder swapped since is refused then.
    """
    agents: list[AgentFolder] = []
    skipped: list[Skipped] = []
    try:
        root_fd = os.open(root, _ROOT_FLAGS)  # the operator's own path: links in it are theirs
    except FileNotFoundError:
        raise FileNotFoundError(f"deposit root {root} does not exist (set BACKUP_STORAGE_ROOT)") from None
    try:
        with os.scandir(root_fd) as listing:
            entries = sorted(listing, key=lambda e: e.name)
        for entry in entries:
            name = shown_name(entry.name)
            if entry.is_symlink():
                skipped.append(Skipped(name, "is a symbolic link; agent folders must be real directories"))
            elif not entry.is_dir(follow_symlinks=False):
                continue  # stray files at the root are not agent folders
            elif (
                problem := agent_id_problem(entry.name) or _log_dir_problem(entry.name, root_fd)
            ) is not None:
                skipped.append(Skipped(name, problem))
            else:
                agents.append(AgentFolder(entry.name, root / entry.name))
    finally:
        os.close(root_fd)
    return agents, skipped


def _log_dir_problem(agent_id: str, root_fd: int) -> str | None:
    try:
        mode = os.stat(f"{agent_id}/{LOG_DIR}", dir_fd=root_fd, follow_symlinks=False).st_mode
    except OSError:
        return "has no log/ directory"
    if stat.S_ISLNK(mode):
        return "log/ is a symbolic link (not followed)"
    return None if stat.S_ISDIR(mode) else f"log/ is a {kind_of(mode)}, not a directory"


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


# ---------------------------------------------------------------- folders and files, by descriptor


@contextmanager
def _folder(agent_dir: Path, *parts: str) -> Iterator[int]:
    """A descriptor of the agent's folder (or of `parts` inside it, each one level), every level
    opened relative to the one above without following a link (UnsafeFolder says which is not a
    real directory). The deposit root is the operator's own path and is opened as it is."""
    opened: list[int] = []
    names = [agent_dir.name, *parts]
    try:
        opened.append(os.open(agent_dir.parent, _ROOT_FLAGS))
        for depth, name in enumerate(names):
            opened.append(_open_dir(name, opened[-1], shown_name("/".join(names[: depth + 1]))))
        yield opened[-1]
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
        raise UnsafeFolder(exc.errno, reason) from None


def _open_file(dir_fd: int, name: str, what: str, *, refuse_hard_links: bool = False) -> int:
    """A descriptor to read the regular file `name` of the folder `dir_fd`.

    The name is first opened with O_PATH (which reaches no driver and blocks on nothing: a FIFO's
    writer is not released, a device is not opened) and not followed when it is a link; only once
    that descriptor shows a regular file is the file itself opened, through the descriptor, so what
    is read is what was checked even if the name is swapped meanwhile."""
    try:
        path_fd = os.open(name, _PATH_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        error = Vanished if exc.errno == errno.ENOENT else UnsafeFile
        raise error(_open_error(what, exc)) from None
    try:
        st = os.fstat(path_fd)
        if stat.S_ISLNK(st.st_mode):
            raise UnsafeFile(f"{what} is a symbolic link (not followed)")
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(f"{what} is a {kind_of(st.st_mode)}, not a regular file")
        if refuse_hard_links and st.st_nlink > 1:
            raise UnsafeFile(
                f"{what} has {st.st_nlink} hard links; it may be a file from outside the deposit"
            )
        try:
            fd = os.open(f"/proc/self/fd/{path_fd}", _READ_FLAGS)
        except OSError as exc:
            raise UnsafeFile(_open_error(what, exc)) from None
    finally:
        os.close(path_fd)
    opened = os.fstat(fd)
    if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):  # /proc is not what it should be
        os.close(fd)
        raise UnsafeFile(f"{what} changed while being opened (not read)")
    return fd


def _open_error(what: str, exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return f"{what} is absent"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"{what} cannot be read: permission denied"
    return f"{what} cannot be opened: {exc.strerror}"


@contextmanager
def _reading(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def list_reports(agent: AgentFolder) -> Iterator[ReportFile]:
    """Every `*.json` entry of the agent's log/ (not the archive), whatever its kind. UnsafeFolder
    when log/ is no longer a real directory of the agent's folder."""
    with _folder(agent.path, LOG_DIR) as log_fd:
        listed = list(os.scandir(log_fd))
        for entry in listed:
            if not entry.name.endswith(".json"):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # moved away between listing and stat: the next scan sees where it went
            yield ReportFile(agent, entry.name, st.st_mtime, st.st_size, kind_of(st.st_mode))


def read_report(report: ReportFile, max_bytes: int) -> bytes:
    """The bytes of a report file, refusing anything unsafe or too large (UnsafeFile says why)."""
    try:
        with (
            _folder(report.agent.path, LOG_DIR) as log_fd,
            _reading(_open_file(log_fd, report.name, "report")) as fd,
        ):
            st = os.fstat(fd)
            if st.st_nlink > 1 and not _twin_in_archive(log_fd, report.shown, st):
                raise UnsafeFile(
                    f"report has {st.st_nlink} hard links; it may be a file from outside the deposit "
                    "(not read)"
                )
            if st.st_size > max_bytes:
                raise UnsafeFile(f"report is {st.st_size} bytes, above the {max_bytes}-byte limit (not read)")
            return _read_at_most(fd, max_bytes)
    except UnsafeFolder as exc:
        raise UnsafeFile(f"report not read: {exc.strerror}") from None


def _read_at_most(fd: int, max_bytes: int) -> bytes:
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


def _plain_file_name(file_name: str) -> bool:
    return bool(file_name) and file_name not in (".", "..") and not any(c in file_name for c in "/\\\x00")


@contextmanager
def open_staged_file(agent_dir: Path, file_name: str) -> Iterator[int]:
    """A read descriptor of the staged dump `file_name` in the agent's database/ (or databases/)
    folder: a regular file inside the agent's folder, found without following any link, with one
    name only. UnsafeFile (raised on entering) says why not.

    `file_name` must be a bare name: anything with a directory part is refused before touching disk.
    """
    if not _plain_file_name(file_name):
        raise UnsafeFile(f"staged file name {file_name!r} is not a plain file name (not read)")
    what = f"staged file {file_name}"
    with contextlib.ExitStack() as opened:
        try:
            folder_fd = opened.enter_context(_staged_folder(agent_dir, file_name))
            fd = _open_file(folder_fd, file_name, what, refuse_hard_links=True)
        except UnsafeFolder as exc:
            raise UnsafeFile(f"{what} not read: {exc.strerror}") from None
        opened.callback(os.close, fd)
        yield fd


@contextmanager
def _staged_folder(agent_dir: Path, file_name: str) -> Iterator[int]:
    """The descriptor of the staged folder holding `file_name` (database/, else databases/)."""
    with _folder(agent_dir) as agent_fd:
        refused: UnsafeFolder | None = None
        for folder in STAGED_DIRS:
            try:
                folder_fd = _open_dir(folder, agent_fd, f"{shown_name(agent_dir.name)}/{folder}")
            except UnsafeFolder as exc:
                if exc.errno != errno.ENOENT:
                    refused = refused or exc
                continue
            try:
                if _lstat(file_name, folder_fd) is not None:
                    yield folder_fd
                    return
            finally:
                os.close(folder_fd)
        if refused is not None:
            raise refused
    raise UnsafeFile(f"staged file {file_name} is absent from {shown_name(agent_dir.name)}/database(s)/")


def staged_file_size(agent_dir: Path, file_name: str) -> int:
    """How many bytes measuring the staged dump `file_name` will read: its size when it is a regular
    file where `open_staged_file` looks (a link is never followed), else 0. For spreading work only."""
    if not _plain_file_name(file_name):
        return 0
    try:
        with _staged_folder(agent_dir, file_name) as folder_fd:
            st = _lstat(file_name, folder_fd)
    except OSError:  # UnsafeFile and UnsafeFolder included: absent, unsafe
        return 0
    return st.st_size if st is not None and stat.S_ISREG(st.st_mode) else 0


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


def archived_candidates(agent: AgentFolder, name: str) -> list[str]:
    """Names in log/_archive/ that may hold `name`: itself and its clash-suffixed copies (none if
    unsafe)."""
    try:
        with _log_dirs(agent, create_archive=False) as (_, archive_fd):
            return [] if archive_fd is None else _candidate_names(archive_fd, name)
    except UnsafeFolder:
        return []


def waiting_names(agent: AgentFolder) -> dict[str, list[str]]:
    """Entries of log/ by recorded (shown) name → their names on disk (none when log/ is unsafe)."""
    found: dict[str, list[str]] = {}
    with contextlib.suppress(UnsafeFolder), _folder(agent.path, LOG_DIR) as log_fd:
        for entry in os.listdir(log_fd):
            if entry != ARCHIVE_DIR:
                found.setdefault(shown_name(entry), []).append(entry)
    return found


def synthetic_hash(kind: str, name: str) -> str:
    """Identity of an entry that cannot be read (link, directory, FIFO, too large...): name and kind."""
    return hashlib.sha256(f"unreadable:{kind}:{name}".encode()).hexdigest()


def holds_report(
    agent: AgentFolder, disk_name: str, name: str, recorded_hash: str, *, archived: bool
) -> bool:
    """Whether `disk_name` in log/ (or in log/_archive/) is still the recorded report `name` (by
    content, or by identity when it could not be read)."""
    folders = (LOG_DIR, ARCHIVE_DIR) if archived else (LOG_DIR,)
    try:
        with _folder(agent.path, *folders) as folder_fd:
            return _holds(folder_fd, disk_name, name, recorded_hash)
    except UnsafeFolder:
        return False


def _holds(folder_fd: int, disk_name: str, name: str, recorded_hash: str) -> bool:
    st = _lstat(disk_name, folder_fd)
    if st is None:
        return False
    kind = kind_of(st.st_mode)
    if synthetic_hash(kind, name) == recorded_hash:
        return True
    return kind == "file" and _sha256_of(folder_fd, disk_name) == recorded_hash


def _sha256_of(folder_fd: int, name: str) -> str | None:
    try:
        with _reading(_open_file(folder_fd, name, "file")) as fd:
            return file_sha256(fd)
    except UnsafeFile:
        return None


@contextmanager
def _log_dirs(agent: AgentFolder, *, create_archive: bool) -> Iterator[tuple[int, int | None]]:
    """Descriptors of the agent's log/ and log/_archive/ (None when absent and not created)."""
    with _folder(agent.path, LOG_DIR) as log_fd:
        where = f"{agent.agent_id}/{LOG_DIR}/{ARCHIVE_DIR}"
        if create_archive:
            try:
                os.mkdir(ARCHIVE_DIR, 0o755, dir_fd=log_fd)
            except FileExistsError:
                pass
            except OSError as exc:
                raise UnsafeFolder(exc.errno, f"cannot create {where}: {exc.strerror}") from None
        elif _lstat(ARCHIVE_DIR, log_fd) is None:
            yield log_fd, None
            return
        archive_fd = _open_dir(ARCHIVE_DIR, log_fd, where)
        try:
            yield log_fd, archive_fd
        finally:
            os.close(archive_fd)


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
    """The names `name` may be archived under, in order: itself, then `<stem>.dup1.json`, ..."""
    name = archive_name(name)
    yield name
    stem = name[: -len(".json")] if name.endswith(".json") else name
    n = 1
    while True:
        yield f"{stem}.dup{n}.json"
        n += 1


def _candidate_names(archive_fd: int, name: str) -> list[str]:
    """The archived names that may hold `name`, found by looking each one up in turn until the first
    that does not exist (a file is always archived under the first free one): the cost depends on
    how many copies of this one name were archived, never on the size of the archive."""
    found = []
    for candidate in _free_names(name):
        if _lstat(candidate, archive_fd) is None:
            return found
        found.append(candidate)
    raise RuntimeError("unreachable: _free_names is endless")


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
        regular = stat.S_ISREG(st.st_mode)
        if content_sha256 is not None and regular and _sha256_of(archive_fd, candidate) == content_sha256:
            return candidate
    return None


def _twin_in_archive(log_fd: int, name: str, st: os.stat_result) -> bool:
    """Whether the report's other hard link is its own copy in log/_archive/ (an interrupted move)."""
    try:
        archive_fd = _open_dir(ARCHIVE_DIR, log_fd, ARCHIVE_DIR)
    except UnsafeFolder:
        return False
    try:
        for candidate in _candidate_names(archive_fd, name):
            other = _lstat(candidate, archive_fd)
            if other is not None and (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                return True
        return False
    finally:
        os.close(archive_fd)
