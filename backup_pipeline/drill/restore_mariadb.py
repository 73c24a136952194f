"""One restore of a MariaDB/MySQL dump: streamed through decompression and the client's guard into
the `mariadb` client (sandbox mode, the restore account, the drill database), never written
decompressed to disk; then the same figures as PostgreSQL drills — tables, exact rows, the restored
size, `CHECK TABLE … EXTENDED` of every table as amcheck's counterpart — and the validation queries.

A sound dump in a dialect the installed server cannot restore — a MySQL 8 dump using what MariaDB
lacks (`utf8mb4_0900_ai_ci`, functional indexes…), or a newer MariaDB's — is NOT_DRILLABLE with the
server's words, never a false RESTORE_FAILED: when the client stops on such an error, the rest of the
dump is read through the guard, and only a dump that ends as mariadb-dump's do is judged sound.
"""

from __future__ import annotations

import re
import secrets
import subprocess
from collections.abc import Iterator

from backup_pipeline.adapters.drill_host import DrillUnavailable, kill_group
from backup_pipeline.adapters.dump_files import DumpUnreadable, HashingReader, decompressed
from backup_pipeline.adapters.scratch_mariadb import DATABASE, ScratchMariadb
from backup_pipeline.core.drills import DrillOutcome, DrillPolicy
from backup_pipeline.core.dump_formats import Compression, Detected
from backup_pipeline.core.mariadb_guard import MariadbScriptGuard, ScriptRefused
from backup_pipeline.drill.restore import DumpRestore, RestoreReport, StderrTail, sanity, shorten
from backup_pipeline.drill.watch import Watch
from backup_pipeline.storage.scratch import ScratchFailure
from backup_pipeline.storage.scratch_mariadb import (
    MariadbStatementWatch,
    inspect_mariadb,
    mariadb_version,
    run_mariadb_check,
)

# Errors of a server that does not know what the dump uses: a syntax it lacks, an unknown collation,
# character set, variable, storage engine or plugin.
DIALECT_ERRORS = {1064, 1115, 1193, 1273, 1286, 1524}
_ERROR = re.compile(r"^ERROR (\d+) \(([0-9A-Z]{5})\) at line (\d+)(?: in file: '[^']*')?: (.*)$", re.M)
_CLIENT_ERROR = re.compile(r"^ERROR(?: at line (\d+))?: (.*)$", re.M)
_STATEMENT = re.compile(r"^-{14}\n(.*?)\n-{14}$", re.S | re.M)


def mariadb_server_settings(policy: DrillPolicy, statement_timeout: float) -> dict[str, str]:
    """A throw-away server tuned for one restore: no durability, no background work, limits."""
    return {
        "innodb-buffer-pool-size": "512M",  # within the address-space limit, with room for the rest
        "innodb-flush-log-at-trx-commit": "0",
        "innodb-doublewrite": "0",
        # Through the page cache: a database larger than the buffer pool is read again and again by
        # CHECK TABLE … EXTENDED, and O_DIRECT (the default) would read it from the disk each time.
        "innodb-flush-method": "fsync",
        "innodb-stats-persistent": "0",
        "performance-schema": "OFF",
        "max-connections": "10",
        "max-allowed-packet": "1G",
        "max-statement-time": f"{statement_timeout:g}",
        "key-buffer-size": "16M",
        "lc-messages": "en_US",
    }


def restore_in_mariadb(
    restore: DumpRestore, server: ScratchMariadb, watch: Watch, detected: Detected
) -> RestoreReport:
    env, policy, target = restore.env, restore.policy, restore.target
    assert env.mariadb is not None and env.mariadb.tools is not None
    server.start_from(env.mariadb.template(), mariadb_server_settings(policy, env.statement_timeout))
    watch.watch_statements(MariadbStatementWatch(server, env.statement_timeout))
    try:
        versions = dict(env.mariadb.tools.versions) | {"server": mariadb_version(server)}
    except ScratchFailure as exc:
        if watch.stopped_it:
            return RestoreReport(DrillOutcome.RESTORE_FAILED)
        raise DrillUnavailable(f"the scratch MariaDB does not answer: {exc}") from None
    report = _stream(restore, server, watch, detected)
    report.versions, report.detected = versions, detected
    if report.outcome is not DrillOutcome.RESTORED or watch.stopped_it:
        return report
    try:
        report.inspection = inspect_mariadb(server, env.statement_timeout)
    except ScratchFailure as exc:
        if watch.stopped_it:
            return report
        report.outcome, report.reason = DrillOutcome.RESTORE_FAILED, f"the checks failed: {exc}"
        return report
    report = sanity(report, target.database_name)
    cycle, timeout = target.cycle_expected_at, env.statement_timeout
    return restore.validate(lambda sql: run_mariadb_check(server, sql, cycle, timeout), report)


def _stream(restore: DumpRestore, server: ScratchMariadb, watch: Watch, detected: Detected) -> RestoreReport:
    """The dump through the guard into the client; the file hashed as it is read."""
    guard = MariadbScriptGuard(max_bytes=restore.policy.max_bytes, database=detected.database)
    client = server.client([DATABASE], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    errors, output = StderrTail(client.stderr), StderrTail(client.stdout)
    end = secrets.randbits(62)  # the dump cannot guess it: only the client's own run prints it
    reader = HashingReader(restore.fd)
    chunks = decompressed(reader, detected.compression or Compression.NONE)
    refused: str | None = None
    excerpt: str | None = None
    assert client.stdin is not None
    try:
        for chunk in chunks:
            if watch.stopped_it:  # a limit stopped the server: nothing more to feed (or to read)
                raise OSError("stopped")
            data = guard.feed(chunk)
            if data:
                client.stdin.write(data)
        client.stdin.write(guard.finish())
        client.stdin.write(b"\nSELECT %d AS restore_end" % end + guard.delimiter + b"\n")
        client.stdin.close()
    except ScriptRefused as exc:
        kill_group(client)  # before the client sees a delimiter or a line end: nothing more runs
        refused, excerpt = f"{exc.reason} (dump line {exc.line})", exc.excerpt or None
    except DumpUnreadable as exc:
        kill_group(client)
        refused = str(exc)
    except OSError:
        pass  # the client stopped reading: its errors say why
    code = client.wait()
    errors.join()
    output.join()
    left_out = dict(guard.left_out)
    if refused:
        report = RestoreReport(DrillOutcome.RESTORE_FAILED, refused, excerpt, left_out=left_out)
    elif code != 0:
        report = _failure(restore, guard, chunks, errors, detected, watch)
        report.left_out = left_out
    elif not output.tail.rstrip().endswith(f"\n{end}"):
        report = RestoreReport(DrillOutcome.RESTORE_FAILED, EARLY_END, left_out=left_out)
    else:
        dumped = guard.created_database or detected.database
        report = RestoreReport(DrillOutcome.RESTORED, left_out=left_out, dumped_database=dumped)
    return restore.verified(reader, report)


EARLY_END = (
    "the mariadb client ended before the dump did (it never ran the statement the drill sends after "
    "the footer): the dump holds a client command or a quote the guard read otherwise"
)


def _failure(
    restore: DumpRestore,
    guard: MariadbScriptGuard,
    chunks: Iterator[bytes],
    errors: StderrTail,
    detected: Detected,
    watch: Watch,
) -> RestoreReport:
    reason, statement, code = mariadb_failure(errors.text, errors.tail)
    if code not in DIALECT_ERRORS or not _foreign_dialect(restore, detected) or watch.stopped_it:
        return RestoreReport(DrillOutcome.RESTORE_FAILED, reason, statement)
    try:  # sound, or cut? the rest of the dump says (within the drill's time and bytes)
        for chunk in chunks:
            if watch.stopped_it:
                return RestoreReport(DrillOutcome.RESTORE_FAILED, reason, statement)
            guard.feed(chunk)
        guard.finish()
    except ScriptRefused as exc:
        return RestoreReport(DrillOutcome.RESTORE_FAILED, f"{exc.reason} (dump line {exc.line})")
    except DumpUnreadable as exc:
        return RestoreReport(DrillOutcome.RESTORE_FAILED, str(exc))
    server = restore.env.mariadb.tools.versions.get("mariadbd", "?") if restore.env.mariadb else "?"
    origin = (
        f"a MySQL {detected.server_version} dump"
        if detected.from_mysql
        else f"a dump of MariaDB {detected.server_version}"
    )
    return RestoreReport(
        DrillOutcome.NOT_DRILLABLE,
        f"{origin} the installed MariaDB {server} cannot restore: {reason}",
        statement,
    )


def _foreign_dialect(restore: DumpRestore, detected: Detected) -> bool:
    """A MySQL dump, or a newer MariaDB's: what the installed server lacks is the dialect's fault."""
    if detected.from_mysql:
        return True
    installed = restore.env.mariadb.tools.versions.get("mariadbd", "") if restore.env.mariadb else ""
    return _version(detected.server_version or "") > _version(installed)


def _version(text: str) -> tuple[int, ...]:
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(part or 0) for part in match.groups()) if match else ()


def mariadb_failure(head: str, tail: str) -> tuple[str, str | None, int | None]:
    """The client's error (its message, code and the dump's line), the statement it echoed before
    it, and the code."""
    match = _ERROR.search(tail) or _ERROR.search(head)
    statement_match = _STATEMENT.search(head)
    statement = shorten(statement_match.group(1)) if statement_match else None
    if match:
        code, line, message = int(match.group(1)), match.group(3), match.group(4).strip()
        return f"{message} (error {code}, dump line {line})", statement, code
    client = _CLIENT_ERROR.search(tail) or _CLIENT_ERROR.search(head)
    if client:
        where = f" (dump line {client.group(1)})" if client.group(1) else ""
        return f"mariadb: {client.group(2).strip()}{where}", statement, None
    words = " ".join(tail.split())[-300:]
    return f"mariadb failed: {words or 'no message'}", statement, None
