"""The small fleet the crash and concurrency tests scan (issue 5): 3 agents, 7 jobs, 2 days.

Successes (gzip and zstd), failed steps, a tampered dump, an invalid report, an archive name clash,
and a report uploaded a day late that turns D1's MISSING into a SUCCESS.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backup_pipeline_tests.support.deposit_builder import Agent, gz, utc, zst
from backup_pipeline_tests.support.scan_harness import (
    ScanEnv,
    create_database,
    database_name,
    drop_database,
    ok,
    run_cli,
    snapshot,
)

A1, A2, A3 = "SIRPACAM_DOUALA_NEWBELL", "SIRPACAM_BAFOUSSAM_CAMPUS_1", "ACME_YAOUNDE_BASTOS"
D1, D2 = "2025-11-20", "2025-11-21"
SYNC_AT = "2025-11-20T00:00:00Z"
FIRST_AT = "2025-11-20T23:00:00Z"
AT = "2025-11-21T14:30:00Z"
JOBS = [
    (A1, "compta_db", 13),
    (A1, "stock_db", 13),
    (A1, "compta_db", 20),
    (A2, "compta_db", 13),
    (A2, "stock_db", 13),
    (A3, "compta_db", 13),
    (A3, "stock_db", 13),
]


def first_day(root: Path) -> None:
    """What the agents wrote on D1, before the first scan."""
    a1, a2, a3 = Agent(root, A1), Agent(root, A2), Agent(root, A3)
    a1.backup(utc(f"{D1}T13:05:00Z"), "compta_db", b"compta monday\n" * 300)
    # A1 stock_db: nothing yet (MISSING), its report arrives late, after the first scan
    a2.backup(utc(f"{D1}T13:04:00Z"), "compta_db", b"a2 compta monday\n" * 300, compression="zst")
    a2.stage("stock_db.sql.gz", gz(b"a2 stock\n" * 300, mtime=1))
    packed = gz(b"a2 stock\n" * 300, mtime=1)
    a3_sections = {"compta_db": a3.database_section("compta_db.sql.gz", gz(b"a3 compta\n" * 100))}
    a3.stage("compta_db.sql.gz", gz(b"a3 compta\n" * 100))
    a3_sections["stock_db"] = a3.database_section(
        "stock_db.sql.gz", b"", backup=False, error="pg_dump: fatal"
    )
    a3.report(utc(f"{D1}T13:06:00Z"), a3_sections)
    a2.report(utc(f"{D1}T13:07:00Z"), {"stock_db": a2.database_section("stock_db.sql.gz", packed)})


def second_day(root: Path) -> None:
    """What landed between the first scan and the interrupted one."""
    a1, a2, a3 = Agent(root, A1), Agent(root, A2), Agent(root, A3)
    # the late D1 report of A1 stock_db (ended inside D1's window, uploaded a day late)
    late = gz(b"stock monday\n" * 200)
    a1.stage("stock_db_1120.sql.gz", late)
    a1.report(utc(f"{D1}T13:50:00Z"), {"stock_db": a1.database_section("stock_db_1120.sql.gz", late)})
    # D2: A1 compta verifies (new content, overwriting Monday's file), stock fails its transfer; an
    # archived file of a previous life already holds the name of today's report (a clash: both kept)
    end = utc(f"{D2}T13:05:00Z")
    (a1.archive / f"{end:%Y%m%d_%H%M%S}_{A1}.json").write_text("an older, different report")
    packed = gz(b"compta tuesday\n" * 300)
    a1.stage("compta_db.sql.gz", packed)
    a1.report(
        end,
        {
            "compta_db": a1.database_section("compta_db.sql.gz", packed),
            "stock_db": a1.database_section("stock_db.sql.gz", b"", transfer=False, error="network down"),
        },
    )
    # D2: A2 compta tampered with (the agent's hash differs), stock identical content → SUCCESS
    tampered = zst(b"a2 compta tuesday\n" * 300)
    a2.stage("compta_db.zst", tampered)
    stock = gz(b"a2 stock\n" * 300, mtime=2)
    a2.stage("stock_db.sql.gz", stock)
    a2.report(
        utc(f"{D2}T13:04:00Z"),
        {
            "compta_db": a2.database_section("compta_db.zst", tampered, agent_hash="00" * 32),
            "stock_db": a2.database_section("stock_db.sql.gz", stock),
        },
    )
    # D2: A3 writes a broken report (both its cycles FAILED: report invalid)
    a3.report(utc(f"{D2}T13:05:00Z"), {}, raw='{"operation_end_time": "2025-11-21T13:05:00Z", "agent_id": ')


def write_jobs(env: ScanEnv) -> None:
    env.write_jobs(
        [
            {"agent_id": a, "database_name": d, "expected_hour_utc": h, "expected_minute_utc": 0}
            for a, d, h in JOBS
        ]
    )


# What an uninterrupted automatic scan at AT decides, after a first scan at FIRST_AT.
EXPECTED = {
    (A1, "compta_db", f"{D1}T13:00"): "SUCCESS",
    (A1, "stock_db", f"{D1}T13:00"): "SUCCESS",  # the late report turned MISSING into SUCCESS
    (A1, "compta_db", f"{D1}T20:00"): "MISSING",
    (A2, "compta_db", f"{D1}T13:00"): "SUCCESS",
    (A2, "stock_db", f"{D1}T13:00"): "SUCCESS",
    (A3, "compta_db", f"{D1}T13:00"): "SUCCESS",
    (A3, "stock_db", f"{D1}T13:00"): "FAILED",
    (A1, "compta_db", f"{D2}T13:00"): "HASH_MISMATCH",  # policy `changed`: new content
    (A1, "stock_db", f"{D2}T13:00"): "FAILED",
    (A2, "compta_db", f"{D2}T13:00"): "TRANSFER_INTEGRITY_FAILED",
    (A2, "stock_db", f"{D2}T13:00"): "SUCCESS",
    (A3, "compta_db", f"{D2}T13:00"): "FAILED",
    (A3, "stock_db", f"{D2}T13:00"): "FAILED",
}  # every due cycle exactly once (D2's 20:00 cycle is not due at AT)


def statuses(state: dict[str, Any]) -> dict[tuple[str, str, str], str]:
    return {(e[0], e[1], e[2][:16]): e[3] for e in state["entries"]}


@dataclass
class Stage:
    """The fleet just before the scan under test (after a first scan at FIRST_AT and the second
    day's uploads), kept pristine and restored for every run: same paths, a fresh database clone."""

    server: str
    template_db: str
    live: Path  # where every run happens (stored archive paths point here)
    pristine: Path

    def restore(self, **extra: str) -> ScanEnv:
        root = self.live / "deposit"
        if root.exists():
            shutil.rmtree(root)
        shutil.copytree(self.pristine, root, symlinks=True)
        url = create_database(self.server, template=database_name(self.template_db))
        return ScanEnv(root, self.live / "jobs.yaml", self.live / "home", url, extra or None)

    def discard(self, env: ScanEnv) -> None:
        drop_database(self.server, env.database_url)


@contextmanager
def prepared_stage(server: str, base: Path) -> Iterator[Stage]:
    env = ScanEnv.under(base / "live", create_database(server))
    write_jobs(env)
    ok(run_cli(env, "jobs", "sync", "--at", SYNC_AT))
    first_day(env.root)
    ok(run_cli(env, "scan", "--at", FIRST_AT))
    second_day(env.root)
    shutil.copytree(env.root, base / "pristine", symlinks=True)
    try:
        yield Stage(server, env.database_url, base / "live", base / "pristine")
    finally:
        drop_database(server, env.database_url)


def control_snapshot(stage: Stage) -> dict[str, Any]:
    """What one uninterrupted automatic scan at AT leaves behind, checked against what the fleet
    deserves."""
    env = stage.restore()
    try:
        ok(run_cli(env, "scan", "--at", AT))
        state = snapshot(env)
    finally:
        stage.discard(env)
    assert statuses(state) == EXPECTED
    return state
