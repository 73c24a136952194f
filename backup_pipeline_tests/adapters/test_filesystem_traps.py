"""Issue 5: file-system traps in the deposit area, through real scans in their own process.

Reports and staged dumps that are symbolic links (inside and outside the root), directories, named
pipes, sockets, unreadable, or hard links to files outside the root; agent folders, log/ folders,
database/ folders and log/_archive/ folders that are symbolic links. The scan never follows, blocks,
reads outside, writes outside or crashes; everything it cannot read is recorded with why.
Plus: a multi-GiB staged file and decompression bombs measured in constant memory.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

import blake3
import pytest
import zstandard

from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.deposit_builder import Agent, gz, utc
from backup_pipeline_tests.support.scan_harness import ScanEnv, ok, run_cli

AGENT = "SIRPACAM_DOUALA_NEWBELL"
OTHER = "SIRPACAM_DOUALA_AKWA"
AT = "2025-11-21T14:30:00Z"
DAY = "2025-11-21"
END = utc("2025-11-21T13:05:00Z")
NOBODY = 65534

# What the scan subprocess sees as "permission denied": the tests run as root, for whom chmod 000
# means nothing, so the kernel's answer to a non-root server is injected for these names only.
# (test_permission_denied_as_a_real_unprivileged_user checks the same code paths as `nobody`.)
EACCES_FOR = """
import os as _os
_real_open = _os.open
def _open(path, flags, *args, **kwargs):
    if str(path).endswith(("unreadable.json", "unreadable.sql.gz")):
        raise PermissionError(13, "Permission denied", str(path))
    return _real_open(path, flags, *args, **kwargs)
_os.open = _open
"""


def env_of(workspace: Workspace) -> ScanEnv:
    return ScanEnv.of(workspace)


def jobs(*databases: str) -> list[dict[str, object]]:
    return [
        {"agent_id": AGENT, "database_name": d, "expected_hour_utc": 13, "expected_minute_utc": 0}
        for d in databases
    ]


def old(path: Path) -> None:
    os.utime(path, (END.timestamp(), END.timestamp()), follow_symlinks=False)


def report_name(second: int, agent: str = AGENT) -> str:
    return f"20251121_1305{second:02d}_{agent}.json"


def test_report_files_that_are_not_regular_files_are_recorded_never_followed(
    workspace: Workspace, tmp_path: Path
) -> None:
    workspace.write_jobs(jobs("compta_db"))
    agent, other = Agent(workspace.root, AGENT), Agent(workspace.root, OTHER)
    neighbour_report = other.backup(END, "compta_db", b"the neighbour's own dump")
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.json"
    secret.write_text(json.dumps({"agent_id": AGENT, "operation_end_time": "2025-11-21T13:05:00Z"}))
    log = agent.log
    traps = {
        report_name(1): ("symbolic link", lambda p: os.symlink(neighbour_report, p)),
        report_name(2): ("symbolic link", lambda p: os.symlink(secret, p)),
        report_name(3): ("directory", lambda p: p.mkdir()),
        report_name(4): ("named pipe", lambda p: os.mkfifo(p)),
        report_name(5): ("socket", _socket_file),
        report_name(6): ("has 2 hard links", lambda p: os.link(secret, p)),
        "20251121_130507_unreadable.json": ("permission denied", lambda p: p.write_text("{}")),
    }
    for name, (_, make) in traps.items():
        make(log / name)
        old(log / name)
    secret_before = secret.read_bytes()

    result = ok(
        run_cli(
            env_of(workspace), "-v", "scan", "--at", AT, "--partition", DAY, prelude=EACCES_FOR, timeout=120
        )
    )

    records = {(r["agent_id"], r["file_name"]): r for r in workspace.json("reports")}
    assert len(records) == len(traps) + 1
    for name, (what, _) in traps.items():
        record = records[(AGENT, name)]
        assert record["accepted"] is False
        assert what in record["reason"], record["reason"]
        assert "(not read)" in record["reason"] or "permission denied" in record["reason"]
        assert record["archived_path"] and os.path.lexists(record["archived_path"])
    neighbour = records[(OTHER, neighbour_report.name)]
    assert neighbour["accepted"] is True and neighbour["archived_path"]
    assert secret.read_bytes() == secret_before and secret.exists()
    assert sorted(p.name for p in outside.iterdir()) == ["secret.json"], "nothing written outside"
    assert not [p for p in log.iterdir() if p.name != "_archive"]
    # the cycle is judged from the one report that could be read: none of this agent's
    assert workspace.entry(AGENT, "compta_db", f"{DAY}T13:00:00Z")["status"] == "FAILED"
    assert "Traceback" not in result.stderr


def _socket_file(path: Path) -> None:
    here = os.getcwd()
    os.chdir(path.parent)  # AF_UNIX paths are short: bind by the relative name
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(path.name)
    finally:
        os.chdir(here)


def test_staged_files_that_are_traps_are_integrity_failures_never_read(
    workspace: Workspace, tmp_path: Path
) -> None:
    agent, other = Agent(workspace.root, AGENT), Agent(workspace.root, OTHER)
    outside = tmp_path / "outside"
    outside.mkdir()
    dump = gz(b"-- a dump that would verify if it were read\n" * 50)
    (outside / "secret.sql.gz").write_bytes(dump)
    neighbour = other.stage("neighbour.sql.gz", dump)
    staged = agent.folder / "database"
    staged.mkdir(parents=True)
    cases = {
        "link_inside": ("symbolic link (not followed)", lambda p: os.symlink(neighbour, p)),
        "link_outside": ("symbolic link (not followed)", lambda p: os.symlink(outside / "secret.sql.gz", p)),
        "directory": ("is a directory, not a regular file", lambda p: p.mkdir()),
        "fifo": ("is a named pipe, not a regular file", lambda p: os.mkfifo(p)),
        "socket": ("is a socket, not a regular file", _socket_file),
        "hard_link_outside": ("has 2 hard links", lambda p: os.link(outside / "secret.sql.gz", p)),
        "unreadable": ("cannot be read: permission denied", lambda p: p.write_bytes(dump)),
        "regular": (None, lambda p: p.write_bytes(dump)),
    }
    sections = {}
    for case, (_, make) in cases.items():
        name = f"{case}.sql.gz"
        make(staged / name)
        sections[f"db_{case}"] = agent.database_section(name, dump)
    agent.report(END, sections)
    workspace.write_jobs(jobs(*sections))

    ok(run_cli(env_of(workspace), "scan", "--at", AT, "--partition", DAY, prelude=EACCES_FOR, timeout=120))

    for case, (message, _) in cases.items():
        entry = workspace.entry(AGENT, f"db_{case}", f"{DAY}T13:00:00Z")
        if message is None:
            assert entry["status"] == "SUCCESS", entry["message"]
            continue
        assert entry["status"] == "TRANSFER_INTEGRITY_FAILED", (case, entry["message"])
        assert message in entry["message"], (case, entry["message"])
        assert entry["server_calculated_staged_hash"] is None, f"{case} was read"


def test_folders_that_are_symbolic_links_are_never_entered(workspace: Workspace, tmp_path: Path) -> None:
    """An agent folder, a log/, a database/ or a log/_archive/ that is a link: skipped or refused."""
    elsewhere = tmp_path / "elsewhere"
    # an agent folder that is a link to a real-looking agent folder outside the root
    real = Agent(elsewhere, "ACME_YAOUNDE_BASTOS")
    real_report = real.backup(END, "crm", b"outside the deposit")
    os.symlink(real.folder, workspace.root / "ACME_YAOUNDE_BASTOS")
    # an agent whose log/ is a link to a folder outside
    linked_log = workspace.root / "ACME_DOUALA_BONAPRISO"
    linked_log.mkdir()
    outside_log = elsewhere / "some_log"
    outside_log.mkdir()
    (outside_log / "20251121_130500_ACME_DOUALA_BONAPRISO.json").write_text("{}")
    os.symlink(outside_log, linked_log / "log")
    # an agent whose database/ is a link to a folder outside holding the dump it claims
    agent = Agent(workspace.root, AGENT)
    dump = gz(b"rows\n" * 100)
    (elsewhere / "dumps").mkdir()
    (elsewhere / "dumps" / "compta_db.sql.gz").write_bytes(dump)
    agent.folder.mkdir(parents=True, exist_ok=True)
    os.symlink(elsewhere / "dumps", agent.folder / "database")
    agent.report(END, {"compta_db": agent.database_section("compta_db.sql.gz", dump)})
    # an agent whose log/_archive is a link to a folder outside: archiving must refuse to write there
    victim = elsewhere / "victim"
    victim.mkdir()
    other = Agent(workspace.root, OTHER)
    other_report = other.backup(END, "compta_db", b"fine")
    os.symlink(victim, other.log / "_archive")
    workspace.write_jobs(
        [
            *jobs("compta_db"),
            {
                "agent_id": OTHER,
                "database_name": "compta_db",
                "expected_hour_utc": 13,
                "expected_minute_utc": 0,
            },
        ]
    )

    result = run_cli(env_of(workspace), "-v", "scan", "--at", AT, "--partition", DAY, timeout=120)

    # the unusable archive folder is an error a person must see; everything else went on
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert f"{OTHER}/log/_archive is a symbolic link, not a directory (not followed)" in result.stderr
    assert list(victim.iterdir()) == [], "nothing written through the link"
    assert other_report.exists(), "left in log/ until the archive folder is usable"
    assert real_report.exists() and not (real.log / "_archive").exists()
    assert (outside_log / "20251121_130500_ACME_DOUALA_BONAPRISO.json").exists()
    assert not (outside_log / "_archive").exists()
    records = {(r["agent_id"], r["file_name"]) for r in workspace.json("reports")}
    assert {a for a, _ in records} == {AGENT, OTHER}, "linked agents and log/ folders are skipped"
    entry = workspace.entry(AGENT, "compta_db", f"{DAY}T13:00:00Z")
    assert entry["status"] == "TRANSFER_INTEGRITY_FAILED"
    assert "compta_db.sql.gz is absent" in entry["message"]
    assert workspace.entry(OTHER, "compta_db", f"{DAY}T13:00:00Z")["status"] == "SUCCESS"

    # once an administrator replaces the link with a real folder, the next scan archives the report
    os.unlink(other.log / "_archive")
    ok(run_cli(env_of(workspace), "scan", "--at", AT, "--partition", DAY))
    assert not other_report.exists()
    assert (other.log / "_archive" / other_report.name).exists()
    assert all(r["archived_path"] for r in workspace.json("reports"))


def test_permission_denied_as_a_real_unprivileged_user(tmp_path: Path) -> None:
    """The kernel's own EACCES (not an injected one): the same messages as in the scans above.

    Root reads anything, so as root the reading happens in a forked child that has become `nobody`
    (forked, not executed: it needs no interpreter that `nobody` may not be allowed to run)."""
    from backup_pipeline.adapters.deposit import AgentFolder, ReportFile, UnsafeFile, read_report
    from backup_pipeline.adapters.staged_files import StagedFileRequest, check_staged_file

    tmp_path.chmod(0o755)
    for parent in tmp_path.parents:  # pytest's base folder is private to its user
        if parent == Path(tempfile.gettempdir()):
            break
        parent.chmod(parent.stat().st_mode | 0o005)
    agent_dir = tmp_path / AGENT
    (agent_dir / "log").mkdir(parents=True)
    (agent_dir / "database").mkdir()
    for path in (agent_dir, agent_dir / "log", agent_dir / "database"):
        path.chmod(0o755)
    report = agent_dir / "log" / report_name(0)
    report.write_text("{}")
    dump = agent_dir / "database" / "compta_db.sql.gz"
    dump.write_bytes(gz(b"rows"))
    report.chmod(0o000)
    dump.chmod(0o000)

    def look() -> str:
        agent = AgentFolder(AGENT, agent_dir)
        said = []
        try:
            read_report(ReportFile(agent, report.name, 0.0, 2, "file"), 1 << 20)
        except UnsafeFile as exc:
            said.append(f"report: {exc}")
        said.append(f"staged: {check_staged_file(StagedFileRequest(agent.path, 'compta_db.sql.gz')).problem}")
        return "\n".join(said)

    said = look() if os.geteuid() != 0 else _as_nobody(look)
    assert "report: report cannot be read: permission denied" in said
    assert "staged: staged file compta_db.sql.gz cannot be read: permission denied" in said


def _as_nobody(action: Callable[[], str]) -> str:
    """`action()`'s text, computed in a forked child running as user `nobody`."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: demote, act, report, and leave without running any cleanup
        code = 1
        try:
            os.close(read_end)
            os.setgid(NOBODY)
            os.setgroups([])
            os.setuid(NOBODY)
            os.write(write_end, action().encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        said = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, said
    return said


@pytest.mark.slow
def test_a_multi_gib_staged_file_and_decompression_bombs_are_measured_in_constant_memory(
    tmp_path: Path,
) -> None:
    """4 GiB of raw dump (sparse), 2 GiB inside a 2 MB gzip and 2 GiB inside one tiny zstd frame."""
    agent_dir = tmp_path / AGENT
    staged = agent_dir / "database"
    staged.mkdir(parents=True)
    with open(staged / "huge.dump", "wb") as handle:
        handle.truncate(4 << 30)
    chunk = bytes(64 << 20)
    member = gzip.compress(chunk, compresslevel=9, mtime=0)
    with open(staged / "bomb.sql.gz", "wb") as handle:
        for _ in range(32):  # a valid multi-member gzip file: 32 × 64 MiB of content
            handle.write(member)
    with (
        open(staged / "bomb.zst", "wb") as handle,  # one frame of 2 GiB, about 64 KiB on disk
        zstandard.ZstdCompressor(level=3).stream_writer(handle, closefd=False) as frame,
    ):
        for _ in range(32):
            frame.write(chunk)
    code = textwrap.dedent(
        f"""
        import json
        from pathlib import Path
        from backup_pipeline.adapters.staged_files import StagedFileRequest, check_staged_file
        out = {{}}
        for name in ("huge.dump", "bomb.sql.gz", "bomb.zst"):
            check = check_staged_file(StagedFileRequest(Path({str(agent_dir)!r}), name))
            out[name] = [check.size, check.problem, check.archive_problem, check.content_fingerprint]
        # this program's own peak (ru_maxrss would start from pytest's size at fork)
        status = Path("/proc/self/status").read_text().splitlines()
        out["peak_rss_kib"] = int(next(l.split()[1] for l in status if l.startswith("VmHWM:")))
        print(json.dumps(out))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout)
    content = blake3.blake3()
    for _ in range(32):
        content.update(chunk)
    assert measured["huge.dump"][:3] == [4 << 30, None, None]
    # both bombs hold the same 2 GiB of zeros: sound archives with the same content fingerprint
    assert measured["bomb.sql.gz"][1:] == [None, None, f"blake3:{content.hexdigest()}"]
    assert measured["bomb.zst"][1:] == [None, None, f"blake3:{content.hexdigest()}"]
    peak_mib = measured["peak_rss_kib"] / 1024
    print(f"peak RSS {peak_mib:.0f} MiB")
    assert peak_mib < 300, f"peak RSS {peak_mib:.0f} MiB while measuring 8 GiB of content"


def _zstd_cases() -> list[tuple[str, bytes, str | None]]:
    data = os.urandom(300_000) + bytes(500_000)  # raw and RLE-friendly blocks
    checked = zstandard.ZstdCompressor(write_checksum=True).compress(data)
    plain = zstandard.ZstdCompressor(write_checksum=False, write_content_size=False).compress(data)
    skippable = (0x184D2A53).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"agent"
    return [
        ("one frame", checked, None),
        ("frames without checksum or content size", plain + plain, None),
        ("a skippable frame between two frames", checked + skippable + checked, None),
        ("cut inside the frame header", checked[:5], "truncated"),
        ("cut inside a block", checked[: len(checked) // 2], "truncated"),
        ("cut before the checksum", checked[:-2], "truncated"),
        ("cut inside a second frame", checked + checked[:100], "truncated"),
        ("garbage after a frame", checked + b"garbage!", "corrupt"),
        ("a flipped byte", checked[:1000] + bytes([checked[1000] ^ 0xFF]) + checked[1001:], "corrupt"),
        ("empty", b"", "is empty"),
    ]


@pytest.mark.parametrize(("case", "content", "problem"), _zstd_cases(), ids=[c[0] for c in _zstd_cases()])
def test_zstd_archives_are_told_sound_truncated_or_corrupt(
    tmp_path: Path, case: str, content: bytes, problem: str | None
) -> None:
    from backup_pipeline.adapters.staged_files import StagedFileRequest, check_staged_file

    (tmp_path / "database").mkdir()
    (tmp_path / "database" / "dump.zst").write_bytes(content)
    check = check_staged_file(StagedFileRequest(tmp_path, "dump.zst"))
    assert check.problem is None and check.size == len(content)
    if problem is None:
        assert check.archive_problem is None, case
    else:
        assert check.archive_problem is not None and problem in check.archive_problem, (case, check)


def test_a_report_moved_away_between_listing_and_reading_is_not_recorded(tmp_path: Path) -> None:
    """A concurrent scan archived it meanwhile: recording it as an unreadable report would be a
    duplicate of the real record (the concurrency tests race this for real)."""
    from zoneinfo import ZoneInfo

    from backup_pipeline.adapters.deposit import AgentFolder, list_reports
    from backup_pipeline.config.settings import Settings
    from backup_pipeline.scan.context import ScanContext, ScanRequest
    from backup_pipeline.scan.ingest import IngestSummary, _examine

    agent = AgentFolder(AGENT, tmp_path / AGENT)
    agent.log_dir.mkdir(parents=True)
    (agent.log_dir / report_name(0)).write_text("{}")
    (listed,) = list(list_reports(agent))
    (agent.log_dir / report_name(0)).unlink()
    ctx = ScanContext(Settings(storage_root=tmp_path), None, ScanRequest(as_of=END))  # type: ignore[arg-type]
    assert _examine(ctx, agent, listed, ZoneInfo("UTC"), IngestSummary()) is None


def test_the_deposit_sensor_lists_file_names_that_are_not_utf8(tmp_path: Path) -> None:
    """One such name used to make every sensor tick fail (its cursor key could not be encoded)."""
    from backup_pipeline.config.settings import Settings
    from backup_pipeline.scan.days import pending_files

    log = tmp_path / AGENT / "log"
    log.mkdir(parents=True)
    with open(os.fsencode(log) + b"/20251121_130500_\xff.json", "wb") as handle:
        handle.write(b"{}")
    files = pending_files(Settings(storage_root=tmp_path, jobs_file=tmp_path / "jobs.yaml"))
    assert list(files.values()) == [(AGENT, "20251121_130500_\\xff.json")]
