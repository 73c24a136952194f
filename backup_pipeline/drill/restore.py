"""One restore: a staged dump restored into a throw-away server and looked at.

The file is opened safely and must still hold the entry's dump (its SHA-256). Its format is told
from its bytes. Plain SQL streams through decompression and the guard into psql (restricted under a
key of the drill's own, `ON_ERROR_STOP`), never written decompressed to disk; a custom or tar archive
is checked with `pg_restore --list` first, then restored with `--exit-on-error`. A compressed archive
is decompressed into the drill's folder first, since pg_restore needs a file it can seek in: it
counts against the drill's disk limit (`max_bytes`) like the restored data, and archives are
compressed inside, so the copy costs about the staged size. A MariaDB/MySQL dump is restored into a
scratch MariaDB (`restore_mariadb`). Then the checks: tables, rows per table, the restored size,
amcheck where the extension exists (CHECK TABLE for MariaDB), and the backup's validation queries.
No product table is written here.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from backup_pipeline.adapters.deposit import UnsafeFile, open_staged_file
from backup_pipeline.adapters.drill_host import (
    MARIADB_NOT_FOUND,
    DrillUnavailable,
    Limits,
    MariadbMissing,
    MariadbTools,
    OsUser,
    Sandbox,
    Tools,
    free_bytes,
    kill_group,
)
from backup_pipeline.adapters.dump_files import (
    READ_BLOCK,
    DumpUnreadable,
    HashingReader,
    TooLarge,
    decompressed,
    file_sha256,
    head,
    write_decompressed,
)
from backup_pipeline.adapters.scratch_cluster import DATABASE, ScratchCluster, Template
from backup_pipeline.adapters.scratch_mariadb import MariadbTemplate, ScratchMariadb, ensure_mariadb_template
from backup_pipeline.core.drills import (
    CheckResult,
    DrillOutcome,
    DrillPolicy,
    bind_cycle,
    check_reason,
    failed_check,
    judge_check,
)
from backup_pipeline.core.dump_formats import (
    Compression,
    Detected,
    DumpFormat,
    Engine,
    compression_of,
    detect,
    unsupported,
)
from backup_pipeline.core.psql_guard import PsqlScriptGuard, ScriptRefused
from backup_pipeline.drill.watch import Watch, full_file_system
from backup_pipeline.storage.drills import DrillTarget
from backup_pipeline.storage.scratch import (
    Inspection,
    ScratchFailure,
    inspect_restore,
    run_check,
    server_version,
)

log = logging.getLogger(__name__)

STDERR_CAP = 64 * 1024  # of a tool's error output, kept; the rest is read and dropped
REASON_CAP = 2048  # a drill's reason and failing statement, as recorded and shown
CHANGED = (
    "the staged file no longer holds this cycle's dump (it changed since the cycle was evaluated: "
    "replaced by a later upload?)"
)
LISTING_CAP = 4 * 1024 * 1024
DISK_RESERVE = 256 * 1024 * 1024  # left free on the drill folder's file system


class MariadbSetup:
    """MariaDB drills' share of the environment: the binaries looked for once, and the template made
    on the first MariaDB dump (a machine that drills none never runs mariadb-install-db)."""

    def __init__(
        self,
        configured: Path | None,
        *,
        root: Path,
        user: OsUser,
        sandbox: Sandbox,
        memory_bytes: int,
        find: Callable[[Path | None], MariadbTools],
        prepare: Callable[[ScratchMariadb, dict[str, str]], None],
        restore: Callable[[DumpRestore, ScratchMariadb, Watch, Detected], RestoreReport],
    ) -> None:
        self.root, self.user, self.memory_bytes, self.prepare = root, user, memory_bytes, prepare
        self.restore = restore  # `restore_mariadb.restore_in_mariadb`, which builds on this module
        self.tools: MariadbTools | None = None
        self.missing: str | None = None
        try:
            self.tools = find(configured)
        except MariadbMissing as exc:
            self.missing = str(exc)
        self.sandbox = sandbox.showing(self.tools.folders()) if self.tools is not None else sandbox
        self._template: MariadbTemplate | None = None
        self._lock = threading.Lock()

    def template(self) -> MariadbTemplate:
        assert self.tools is not None
        with self._lock:
            if self._template is None:
                limits = Limits(memory_bytes=self.memory_bytes, file_bytes=1 << 40)
                self._template = ensure_mariadb_template(
                    self.root, self.tools, self.user, limits, self.sandbox, self.prepare
                )
            return self._template

    def server(self, limits: Limits, label: str) -> ScratchMariadb:
        assert self.tools is not None
        return ScratchMariadb(self.root, self.tools, self.user, limits, label, self.sandbox)


@dataclass(frozen=True)
class DrillEnvironment:
    """What every drill of a process shares: binaries, the OS user, the folder, the template."""

    tools: Tools
    user: OsUser
    sandbox: Sandbox
    root: Path
    template: Template
    memory_bytes: int
    statement_timeout: float
    mariadb: MariadbSetup | None = None  # MariaDB/MySQL dumps' server (None: not looked for)


@dataclass
class RestoreReport:
    outcome: DrillOutcome
    reason: str | None = None
    failing_statement: str | None = None
    detected: Detected | None = None
    inspection: Inspection | None = None
    left_out: dict[str, int] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    staged_sha256: str | None = None
    staged_size: int | None = None
    dumped_database: str | None = None
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def engine(self) -> Engine | None:
        return self.detected.engine if self.detected is not None else None


def not_drillable(reason: str, detected: Detected | None = None, **known: object) -> RestoreReport:
    return RestoreReport(DrillOutcome.NOT_DRILLABLE, reason, detected=detected, **known)  # type: ignore[arg-type]


def restore_entry(
    env: DrillEnvironment, target: DrillTarget, policy: DrillPolicy, storage_root: Path
) -> RestoreReport:
    """Restore one entry's staged dump and check it; DrillUnavailable when the machine cannot."""
    name = target.staged_file_name
    if not name:
        return not_drillable("the entry records no staged file")
    try:
        with open_staged_file(storage_root / target.agent_id, name) as fd:
            return bounded(_checked(DumpRestore(env, target, policy, fd)))
    except UnsafeFile as exc:
        return not_drillable(f"the staged file cannot be drilled now: {exc}")
    except OSError as exc:
        return not_drillable(f"staged file {name} could not be read: {exc.strerror or exc}")


def _checked(restore: DumpRestore) -> RestoreReport:
    """The restore's report; an error nobody foresaw (the dump's doing, until shown otherwise) is that
    drill's RESTORE_FAILED, logged whole, never the end of the run: no entry may keep the others from
    being drilled. The machine's own unavailability still stops the run."""
    try:
        return restore.run()
    except DrillUnavailable:
        raise
    except Exception as exc:
        log.exception("drill of entry %s stopped on an unexpected error", restore.target.entry_id)
        first = (str(exc).strip().splitlines() or [""])[0]
        return RestoreReport(
            DrillOutcome.RESTORE_FAILED,
            f"the drill stopped on an unexpected error: {type(exc).__name__}: {first}",
        )


class DumpRestore:
    def __init__(self, env: DrillEnvironment, target: DrillTarget, policy: DrillPolicy, fd: int) -> None:
        self.env, self.target, self.policy, self.fd = env, target, policy, fd
        self.started = time.monotonic()
        self.size = os.fstat(fd).st_size
        self.room = 0  # what the drill folder's file system has for this drill (measured at its start)

    def run(self) -> RestoreReport:
        """The file must still hold the entry's dump: a size that differs says it at once; its SHA-256
        is checked on the very bytes the restore uses — streamed to psql, or copied into the drill's
        folder for pg_restore (the site could rewrite its file between a hash and a later read) — or
        first, for what is not drillable."""
        if self.size != self.target.staged_size:
            return not_drillable(CHANGED, staged_size=self.size)
        compression = compression_of(os.pread(self.fd, 8, 0))
        detected = (
            detect(head(self.fd, compression), compression)
            if isinstance(compression, Compression)
            else unsupported(compression)
        )
        missing = self._missing_server(detected)
        sha = None if detected.drillable and not missing else file_sha256(self.fd)
        if sha is not None and sha != self.target.staged_sha256:
            return not_drillable(CHANGED, staged_sha256=sha, staged_size=self.size)
        if not detected.drillable or missing:
            reason = missing or detected.kind
            return not_drillable(reason, detected, staged_sha256=sha, staged_size=self.size)
        if detected.format is DumpFormat.PLAIN and not self.env.tools.restrict_supported:
            raise DrillUnavailable(
                f"psql {self.env.tools.versions.get('psql')} in {self.env.tools.bin_dir} lacks \\restrict "
                "(PostgreSQL 18, or 17.6, 16.10, 15.14, 14.19, 13.22 and later): plain dumps are not "
                "restored with it (BACKUP_PIPELINE_DRILL_PG_BIN)"
            )
        report = self._in_cluster(detected)
        report.detected, report.staged_size = detected, self.size
        report.staged_sha256 = report.staged_sha256 or sha
        return report

    def _missing_server(self, detected: Detected) -> str | None:
        """Why the server a drillable dump needs is not here (MariaDB's binaries), if it is not."""
        if detected.format is not DumpFormat.MARIADB:
            return None
        if self.env.mariadb is None:
            return MARIADB_NOT_FOUND
        return self.env.mariadb.missing

    def verified(self, reader: HashingReader, report: RestoreReport) -> RestoreReport:
        """The report of a restore that read the file through `reader`, once the whole file is hashed
        (what the restore did not read is read now): a file that changed is not this cycle's dump."""
        while reader.read(READ_BLOCK):
            pass
        sha = reader.sha256.hexdigest()
        if sha != self.target.staged_sha256:
            return not_drillable(CHANGED, staged_sha256=sha)
        report.staged_sha256 = sha
        return report

    # ------------------------------------------------------------ the cluster

    def _in_cluster(self, detected: Detected) -> RestoreReport:
        env, policy = self.env, self.policy
        room = free_bytes(env.root) - DISK_RESERVE
        if room < 64 * 1024 * 1024:
            raise DrillUnavailable(f"the drill folder {env.root} has no room left ({max(room, 0):,} bytes)")
        self.room = room
        limits = Limits(memory_bytes=env.memory_bytes, file_bytes=policy.max_bytes)
        label = f"e{self.target.entry_id}"
        server: ScratchCluster | ScratchMariadb
        if detected.format is DumpFormat.MARIADB:
            assert env.mariadb is not None
            server, in_mariadb = env.mariadb.server(limits, label), env.mariadb.restore
            restore = lambda watch: in_mariadb(self, server, watch, detected)  # noqa: E731
        else:
            server = ScratchCluster(env.root, env.tools, env.user, limits, label, env.sandbox)
            restore = lambda watch: self._restore(server, watch, detected)  # noqa: E731
        with server:
            server.create()
            watch = Watch(
                server,
                started=self.started,
                max_seconds=policy.max_seconds,
                max_bytes=policy.max_bytes,
                free_bytes=room,
                statement_timeout=env.statement_timeout,
            ).start()
            try:
                report = restore(watch)
            except DrillUnavailable:
                if watch.stopped_it:  # the server was stopped under the start: the limit says why
                    report = RestoreReport(DrillOutcome.RESTORE_FAILED)
                else:
                    raise
            finally:
                watch.stop()
            if watch.violation:
                report.outcome, report.reason, report.inspection = (
                    DrillOutcome.RESTORE_FAILED,
                    watch.violation,
                    None,
                )
                report.checks = []
            elif watch.cancelled and report.outcome is DrillOutcome.RESTORE_FAILED:
                report.reason = (
                    f"cancelled after {env.statement_timeout:g} s (statement timeout): {watch.cancelled[0]}"
                )
            elif report.outcome is DrillOutcome.RESTORE_FAILED and _out_of_room(report.reason):
                report.reason = f"{full_file_system()}; {report.reason}"
            return report

    def validate(self, run: Callable[[str], list[tuple[Any, ...]]], report: RestoreReport) -> RestoreReport:
        """The backup's validation queries, once the restore checked out: every result is kept, and the
        first that does not pass fails the drill."""
        if report.outcome is not DrillOutcome.RESTORED or not self.policy.checks:
            return report
        mariadb = report.engine is Engine.MARIADB
        for check in self.policy.checks:
            sql = bind_cycle(check.sql, hash_comments=mariadb)
            try:
                result = judge_check(check.name, run(sql), booleans=not mariadb)
            except ScratchFailure as exc:
                text = str(exc)
                if _timed_out(text):
                    text = f"timed out after {self.env.statement_timeout:g} s (statement timeout): {text}"
                result = failed_check(check.name, text)
            report.checks.append(result)
        reason = check_reason(report.checks)
        if reason is not None:
            report.outcome, report.reason = DrillOutcome.RESTORE_FAILED, reason
        return report

    def _restore(self, cluster: ScratchCluster, watch: Watch, detected: Detected) -> RestoreReport:
        cluster.start_from(self.env.template, server_settings(self.policy, self.env.statement_timeout))
        watch.watch_statements()
        try:
            versions = dict(self.env.tools.versions) | {"server": server_version(cluster)}
        except ScratchFailure as exc:
            if watch.stopped_it:  # a limit stopped the server as it started: the limit says why
                return RestoreReport(DrillOutcome.RESTORE_FAILED)
            raise DrillUnavailable(f"the scratch PostgreSQL does not answer: {exc}") from None
        if detected.format is DumpFormat.PLAIN:
            report = self._plain(cluster, detected.compression or Compression.NONE, watch)
        else:
            report = self._archive(cluster, detected.compression or Compression.NONE, watch)
        report.versions, report.detected = versions, detected
        if report.outcome is not DrillOutcome.RESTORED or watch.stopped_it:
            return report
        try:
            report.inspection = inspect_restore(cluster, self.env.statement_timeout)
        except ScratchFailure as exc:  # the checks' own failure (a statement timeout on a huge table…)
            if watch.stopped_it:
                return report
            report.outcome, report.reason = DrillOutcome.RESTORE_FAILED, f"the checks failed: {exc}"
            return report
        report = sanity(report, self.target.database_name)
        cycle, timeout = self.target.cycle_expected_at, self.env.statement_timeout
        return self.validate(lambda sql: run_check(cluster, sql, cycle, timeout), report)

    # ------------------------------------------------------------ plain SQL

    def _plain(self, cluster: ScratchCluster, compression: Compression, watch: Watch) -> RestoreReport:
        key = secrets.token_hex(32)  # never in the dump: psql stays restricted to the end
        psql = cluster.client(
            "psql", ["-X", "-q", "-b", "-v", "ON_ERROR_STOP=1", "-f", "-"], stdin=subprocess.PIPE
        )
        errors = StderrTail(psql.stderr)
        guard = PsqlScriptGuard(max_bytes=self.policy.max_bytes)
        reader = HashingReader(self.fd)
        refused: str | None = None
        excerpt: str | None = None
        assert psql.stdin is not None
        try:
            psql.stdin.write(f"\\restrict {key}\n".encode())
            for chunk in decompressed(reader, compression):
                if watch.stopped_it:  # a limit stopped the cluster: nothing more to feed (or to read)
                    raise OSError("stopped")
                data = guard.feed(chunk)
                if data:
                    psql.stdin.write(data)
            psql.stdin.write(guard.finish())
            psql.stdin.close()
        except ScriptRefused as exc:
            kill_group(psql)  # before psql sees the end of its input: nothing more runs
            refused, excerpt = f"{exc.reason} (dump line {exc.line})", exc.excerpt or None
        except DumpUnreadable as exc:
            kill_group(psql)
            refused = str(exc)
        except OSError:
            pass  # psql stopped reading: its errors say why
        code = psql.wait()
        errors.join()
        left_out = dict(guard.left_out)
        if refused:
            report = RestoreReport(DrillOutcome.RESTORE_FAILED, refused, excerpt, left_out=left_out)
        elif code != 0:
            reason, statement = psql_failure(errors.text, line_offset=1)
            report = RestoreReport(DrillOutcome.RESTORE_FAILED, reason, statement, left_out=left_out)
        else:
            report = RestoreReport(
                DrillOutcome.RESTORED, left_out=left_out, dumped_database=guard.created_database
            )
        return self.verified(reader, report)

    # ------------------------------------------------------------ archives

    def _archive(self, cluster: ScratchCluster, compression: Compression, watch: Watch) -> RestoreReport:
        """pg_restore reads a copy in the drill's folder, made (decompressed where need be) as the file
        is hashed, at most the drill's bytes and what the file system has room for: the very bytes
        hashed are restored, and the product's own writing cannot fill the disk."""
        copy = os.open(
            cluster.directory / "archive", os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600
        )
        try:
            reader = HashingReader(self.fd)
            room = self.room - cluster.disk_usage()
            cap = min(self.policy.max_bytes, room)
            try:
                write_decompressed(reader, compression, copy, cap=cap, stop=lambda: watch.stopped_it)
            except TooLarge as exc:
                reason = full_file_system(self.room) if cap < self.policy.max_bytes else str(exc)
                return self.verified(reader, RestoreReport(DrillOutcome.RESTORE_FAILED, reason))
            except (DumpUnreadable, OSError) as exc:
                return self.verified(reader, RestoreReport(DrillOutcome.RESTORE_FAILED, str(exc)))
            checked = self.verified(reader, RestoreReport(DrillOutcome.RESTORED))
            if checked.outcome is DrillOutcome.NOT_DRILLABLE or watch.stopped_it:
                return checked
            report = self._pg_restore(cluster, copy)
            report.staged_sha256 = checked.staged_sha256
            return report
        finally:
            os.close(copy)

    def _pg_restore(self, cluster: ScratchCluster, fd: int) -> RestoreReport:
        os.lseek(fd, 0, os.SEEK_SET)
        listing = cluster.client("pg_restore", ["--list"], stdin=fd, stdout=subprocess.PIPE)
        errors = StderrTail(listing.stderr)
        assert listing.stdout is not None
        header = read_capped(listing.stdout, LISTING_CAP)
        if listing.wait() != 0:
            errors.join()
            return RestoreReport(
                DrillOutcome.RESTORE_FAILED,
                f"the archive's table of contents cannot be read: {pg_restore_failure(errors.text)[0]}",
            )
        errors.join()
        dumped = archive_database(header)
        if dumped is not None and dumped != self.target.database_name:
            return RestoreReport(
                DrillOutcome.RESTORE_FAILED,
                f"an archive of database {dumped!r}, not {self.target.database_name!r}: the dump of another "
                "database",
                dumped_database=dumped,
            )
        os.lseek(fd, 0, os.SEEK_SET)
        restore = cluster.client("pg_restore", [*PG_RESTORE_OPTIONS, "-d", DATABASE], stdin=fd)
        errors = StderrTail(restore.stderr)
        code = restore.wait()
        errors.join()
        if code != 0:
            reason, statement = pg_restore_failure(errors.text)
            return RestoreReport(DrillOutcome.RESTORE_FAILED, reason, statement, dumped_database=dumped)
        return RestoreReport(DrillOutcome.RESTORED, dumped_database=dumped)


PG_RESTORE_OPTIONS = [
    "--exit-on-error",
    "--no-owner",
    "--no-privileges",
    "--no-subscriptions",
    "--no-security-labels",
]


def server_settings(policy: DrillPolicy, statement_timeout: float) -> dict[str, str]:
    """A throw-away cluster tuned for one restore: no durability, no background work, limits."""
    return {
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "wal_level": "minimal",
        "max_wal_senders": "0",
        "archive_mode": "off",
        "autovacuum": "off",
        "jit": "off",
        # One drill's memory is its restore session's (plus psql's): no parallel worker may multiply it.
        "max_worker_processes": "0",
        "max_parallel_workers": "0",
        "max_parallel_workers_per_gather": "0",
        "max_parallel_maintenance_workers": "0",
        "max_logical_replication_workers": "0",
        "max_connections": "10",
        "shared_buffers": "256MB",
        "maintenance_work_mem": "256MB",
        "max_wal_size": "2GB",
        "checkpoint_timeout": "1h",
        "statement_timeout": str(int(statement_timeout * 1000)),
        "temp_file_limit": str(min(policy.max_bytes // 1024, 2**31 - 1)),
        "log_min_messages": "error",
        "log_min_error_statement": "panic",
        "lc_messages": "C",
    }


def sanity(report: RestoreReport, database_name: str) -> RestoreReport:
    """A clean restore that brought back nothing usable is a failure too."""
    found = report.inspection
    assert found is not None
    if report.dumped_database is not None and report.dumped_database != database_name:
        report.outcome = DrillOutcome.RESTORE_FAILED
        report.reason = f"a dump of database {report.dumped_database!r}, not {database_name!r}"
    elif not found.tables:
        report.outcome = DrillOutcome.RESTORE_FAILED
        report.reason = "the dump restored no table (an empty database or schema)"
    elif found.amcheck_failures:
        report.outcome = DrillOutcome.RESTORE_FAILED
        what = (
            "CHECK TABLE found damaged tables"
            if report.engine is Engine.MARIADB
            else ("amcheck found damaged indexes")
        )
        report.reason = f"{what}: {'; '.join(found.amcheck_failures[:3])}"
    return report


# ---------------------------------------------------------------- the tools' words


class StderrTail:
    """A child's stderr read by a thread (so it never blocks) in bounded pieces, its beginning kept
    (STDERR_CAP), and its last TAIL_CAP bytes: a line of any length costs no more memory than that."""

    def __init__(self, stream: IO[bytes] | None) -> None:
        self._kept = bytearray()
        self._tail = bytearray()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes] | None) -> None:
        if stream is None:
            return
        while piece := stream.read1(READ_PIECE) if hasattr(stream, "read1") else stream.read(READ_PIECE):
            if len(self._kept) < STDERR_CAP:
                self._kept += piece[: STDERR_CAP - len(self._kept)]
            self._tail = (self._tail + piece)[-TAIL_CAP:]
        stream.close()

    @property
    def tail(self) -> str:
        """The end of the output (where a tool's last words are, after a statement it echoed)."""
        return bytes(self._tail).decode("utf-8", "replace")

    def join(self) -> None:
        self._thread.join(timeout=30)

    @property
    def text(self) -> str:
        return bytes(self._kept).decode("utf-8", "replace")


READ_PIECE = 64 * 1024
TAIL_CAP = 8 * 1024


def read_capped(stream: IO[bytes], cap: int) -> str:
    """A child's output, its first `cap` bytes kept, the rest read and dropped (in bounded pieces)."""
    kept = bytearray()
    while piece := stream.read(READ_PIECE):
        if len(kept) < cap:
            kept += piece[: cap - len(kept)]
    return kept.decode("utf-8", "replace")


_PSQL_LINE = re.compile(r"^psql:[^:]*:(\d+): (ERROR|FATAL|error|fatal|PANIC):\s+(.*)$")
_PSQL_STATEMENT = re.compile(r"^psql:[^:]*:\d+: STATEMENT:\s+(.*)$")


def psql_failure(stderr: str, line_offset: int = 0) -> tuple[str, str | None]:
    """The first error psql reported, with its context and the dump's line, and the statement."""
    lines = stderr.splitlines()
    for index, line in enumerate(lines):
        match = _PSQL_LINE.match(line)
        if not match:
            continue
        number, message = int(match.group(1)) - line_offset, match.group(3).strip()
        context = [
            rest.split(":", 1)[1].strip()
            for rest in _continuation(lines, index)
            if rest.startswith(("CONTEXT:", "DETAIL:"))
        ]
        statement = _statement(lines, index)
        detail = f" ({'; '.join(context)})" if context else ""
        return f"{message}{detail} (dump line {number})", statement
    tail = " ".join(stderr.split())[-300:]
    return f"psql failed: {tail or 'no message'}", None


def _continuation(lines: list[str], index: int) -> list[str]:
    following = []
    for line in lines[index + 1 :]:
        if line.startswith("psql:"):
            break
        following.append(line)
    return following


def _statement(lines: list[str], index: int) -> str | None:
    for position in range(index + 1, len(lines)):
        match = _PSQL_STATEMENT.match(lines[position])
        if match:
            text = "\n".join([match.group(1), *_continuation(lines, position)])
            return shorten(text)
        if _PSQL_LINE.match(lines[position]):
            return None
    return None


def pg_restore_failure(stderr: str) -> tuple[str, str | None]:
    lines = stderr.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("pg_restore: error:"):
            message = line.removeprefix("pg_restore: error:").strip()
            message = re.sub(r"^could not execute query:\s*", "", message)
            statement = None
            for position in range(index + 1, len(lines)):
                if lines[position].startswith("Command was:"):
                    rest = [lines[position].removeprefix("Command was:").strip()]
                    rest += [x for x in lines[position + 1 :] if not x.startswith("pg_restore:")]
                    statement = shorten("\n".join(rest))
                    break
                if lines[position].startswith("pg_restore:"):
                    break
                if lines[position].startswith(("DETAIL:", "CONTEXT:", "LINE ")):
                    message += f" ({lines[position].split(':', 1)[-1].strip()})"
            return f"pg_restore: {message}", statement
    tail = " ".join(stderr.split())[-300:]
    return f"pg_restore failed: {tail or 'no message'}", None


_DBNAME = re.compile(r"^;\s+dbname: (.*)$", re.MULTILINE)


def archive_database(listing: str) -> str | None:
    match = _DBNAME.search(listing)
    return match.group(1).strip() if match else None


def shorten(text: str, limit: int = REASON_CAP) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def bounded(report: RestoreReport) -> RestoreReport:
    """A report whose words fit a record, a table and an alert: a dump chooses its error messages."""
    if report.reason is not None:
        report.reason = shorten(report.reason)
    if report.failing_statement is not None:
        report.failing_statement = shorten(report.failing_statement)
    return report


def _out_of_room(reason: str | None) -> bool:
    words = ("No space left on device", "could not extend file", "(errno: 28", "Disk full", "error 28")
    return reason is not None and any(w in reason for w in words)


def _timed_out(error: str) -> bool:
    return "statement timeout" in error or "max_statement_time" in error
