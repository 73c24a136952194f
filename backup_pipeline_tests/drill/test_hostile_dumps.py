"""Hostile dumps end RESTORE_FAILED with their reason, and touch nothing outside the scratch cluster.

Each dump tries to write a file into a folder the drill user could write to (so a success would
show): through psql's meta-commands (refused by the guard, before or after `\\restrict`), COPY to a
program or a file (refused by the guard), the same from inside a DO block or with lo_export
(refused by PostgreSQL: the restore role is no superuser), an extension that is not there, an endless
loop (the statement timeout), an endless restore the statement timeout exempts (the time limit),
tables filling the disk and decompression bombs (the disk and size limits). After each: no file,
no cluster folder, no process left. Then the second and third lines of defence on their own: psql
as the drill starts it stays restricted whatever the guard lets through, and runs as the drill user.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from backup_pipeline.adapters.drill_host import Limits
from backup_pipeline.adapters.scratch_cluster import ScratchCluster
from backup_pipeline.drill.restore import DrillEnvironment
from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.drill_fixtures import (
    DAY2,
    Site,
    build_site,
    described,
    drill_processes,
    gz,
    leftovers,
    staged,
)

KEY = "k3yOfTheDump"
SENTINELS = Path(tempfile.gettempdir())


def head(before: str = "") -> str:
    """The beginning of a plain dump as current pg_dump writes it."""
    return (
        "--\n-- PostgreSQL database dump\n--\n\n"
        + before
        + f"\\restrict {KEY}\n\n"
        + "SET statement_timeout = 0;\nSET client_encoding = 'UTF8';\nSET standard_conforming_strings = on;\n"
        + "SELECT pg_catalog.set_config('search_path', '', false);\n\n"
        + "CREATE TABLE public.t (a integer);\n\n"
    )


def script(body: str, *, before: str = "", after: str = "") -> bytes:
    """A plain dump as current pg_dump writes it, around `body`."""
    tail = f"\n--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict {KEY}\n\n"
    return (head(before) + body + tail + after).encode()


@pytest.fixture(scope="module")
def sentinel_dir() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="bp-sentinels-", dir="/tmp"))
    os.chmod(folder, 0o777)  # the drill user could write here: only the defences keep it empty
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def cases(s: Path) -> dict[str, tuple[bytes, str]]:
    """case -> (dump before compression, a part of the reason it fails with)."""
    loop = "DO $$BEGIN LOOP PERFORM pg_sleep(0.05); END LOOP; END$$;\n"
    slow_copy = (
        "CREATE FUNCTION public.slow() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN LOOP PERFORM pg_sleep(0.05); END LOOP; END$$;\n"
        "CREATE TRIGGER slow BEFORE INSERT ON public.t FOR EACH ROW EXECUTE FUNCTION public.slow();\n"
        "COPY public.t (a) FROM stdin;\n1\n\\.\n"
    )
    return {
        "shell": (script(f"\\! touch {s}/shell\n"), "psql meta-command \\! refused"),
        "shell_first": (script("", before=f"\\! touch {s}/first\n"), "psql meta-command \\! refused"),
        "shell_last": (script("", after=f"\\! touch {s}/last\n"), "psql meta-command \\! refused"),
        "pipe": (script(f"\\o |touch {s}/pipe\nSELECT 1;\n"), "psql meta-command \\o refused"),
        "copy_meta": (
            script(f"\\copy public.t to program 'touch {s}/copymeta'\n"),
            "psql meta-command \\copy",
        ),
        "program": (script(f"COPY (SELECT 1) TO PROGRAM 'touch {s}/program';\n"), "COPY … PROGRAM"),
        "file": (script(f"COPY public.t TO '{s}/file';\n"), "COPY with a file on the server"),
        "program_in_do": (
            script(f"DO $$BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch {s}/do'''; END$$;\n"),
            "permission denied to COPY to or from an external program",
        ),
        "lo_export": (
            script(f"SELECT pg_catalog.lo_export(pg_catalog.lo_from_bytea(0, 'x'), '{s}/lo');\n"),
            "permission denied for function lo_export",
        ),
        "extension": (
            script("CREATE EXTENSION IF NOT EXISTS dblink;\n"),
            'extension "dblink" is not available',
        ),
        "loop": (script(loop), "statement timeout"),
        "slow_copy": (script(slow_copy), "time limit of 0.25 minute(s)"),
        "disk": (
            script(
                "CREATE TABLE public.big AS\n"
                "SELECT repeat(md5(g::text), 30) AS a FROM generate_series(1, 3000000) g;\n"
            ),
            "",
        ),
    }


def zstd_bomb() -> bytes:
    """A plain dump whose COPY data decompresses to 10 GiB: one frame of 64 MiB repeated 160 times."""
    start = head() + "CREATE TABLE public.bomb (a text);\nCOPY public.bomb (a) FROM stdin;\n"
    frame = zstandard.ZstdCompressor(level=3).compress((b"x" * 1023 + b"\n") * 65536)
    return zstandard.ZstdCompressor().compress(start.encode()) + frame * 160


def gzip_bomb() -> bytes:
    """A custom archive's header, then 10 GiB of zeros in gzip members."""
    member = gzip.compress(b"\x00" * (64 << 20), compresslevel=9, mtime=0)
    return gzip.compress(b"PGDMP\x01\x10\x00\x04\x08\x01", mtime=0) + member * 160


@pytest.fixture(scope="module")
def hostile(module_workspace: Workspace, sentinel_dir: Path) -> Site:
    dumps = {
        name: {DAY2: staged(name, DAY2, gz(data), ".sql.gz")}
        for name, (data, _) in cases(sentinel_dir).items()
    }
    dumps["zstd_bomb"] = {DAY2: staged("zstd_bomb", DAY2, zstd_bomb(), ".sql.zst")}
    dumps["gzip_bomb"] = {DAY2: staged("gzip_bomb", DAY2, gzip_bomb(), ".dump.gz")}
    per_job = {"slow_copy": {"restore_drill": {"max_minutes": 0.25}}}
    with pytest.MonkeyPatch.context() as patch:  # the scan need not decompress the 10 GiB bombs
        patch.setenv("BACKUP_PIPELINE_VERIFY_ARCHIVES", "false")
        return build_site(module_workspace, dumps, restore_drill={"max_bytes": "64MiB"}, per_job=per_job)


REASONS = {name: reason for name, (_, reason) in cases(Path("/x")).items()}
REASONS |= {
    "zstd_bomb": "",  # the size cap or the disk limit, whichever comes first
    "gzip_bomb": "",
}
LIMITS = ("bytes of disk", "decompresses to more than", "File too large", "temporary file size")


@pytest.mark.parametrize("case", sorted(REASONS))
def test_a_hostile_dump_fails_without_touching_anything_outside(
    hostile: Site, sentinel_dir: Path, drill_dir: Path, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKUP_PIPELINE_DRILL_STATEMENT_TIMEOUT_SECONDS", "2")
    row = hostile.drill_json(case, DAY2)
    assert row["outcome"] == "RESTORE_FAILED", row
    assert REASONS[case] in row["reason"], row["reason"]
    if case in ("disk", "zstd_bomb", "gzip_bomb"):  # whichever limit comes first: size, disk, file size
        assert any(words in row["reason"] for words in LIMITS), row["reason"]
    assert list(sentinel_dir.iterdir()) == []
    assert leftovers(drill_dir) == []
    left = drill_processes(drill_dir)
    assert left == [], described(left)


def test_psql_as_drills_start_it_stays_restricted_and_runs_as_the_drill_user(
    drill_environment: DrillEnvironment, sentinel_dir: Path
) -> None:
    """Whatever reaches psql after the drill's own `\\restrict` line, no meta-command runs; and the
    client tools run as the drill user (the product's own user when it is not root)."""
    env = drill_environment
    limits = Limits(env.memory_bytes, 1 << 30)
    with ScratchCluster(env.root, env.tools, env.user, limits, "defence", env.sandbox) as cluster:
        cluster.create()
        cluster.start_from(env.template, {"fsync": "off"})
        psql = cluster.client("psql", ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"], stdin=subprocess.PIPE)
        uid_line = next(
            line
            for line in Path(f"/proc/{psql.pid}/status").read_text().splitlines()
            if line.startswith("Uid:")
        )
        assert uid_line.split()[1] == str(env.user.uid)
        if os.geteuid() == 0:
            assert env.user.uid != 0
        assert psql.stdin is not None
        psql.stdin.write(f"\\restrict drillkey\nSELECT 1;\n\\! touch {sentinel_dir}/restricted\n".encode())
        psql.stdin.close()
        assert psql.wait(timeout=60) == 3
        assert b"backslash commands are restricted" in (psql.stderr.read() if psql.stderr else b"")
    assert list(sentinel_dir.iterdir()) == []
