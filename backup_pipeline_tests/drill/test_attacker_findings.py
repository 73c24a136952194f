"""An attacker's review of the restore-drill defences (issue 19): each test performs an attack that
worked against them, through real drills (the CLI) or the sandbox's own launcher, and states what
must hold instead.

What a dump reaches without any privilege: code of its own runs inside the checks' session (a
row-level security policy the owner is forced under, evaluated by `count(*)`), where it can turn the
session read-write, switch its client encoding, or flood it with notices the product holds in its
own memory; a run of digits the psql guard buffers whole; and a bare archive the site rewrites on
disk between the hash and pg_restore. What a drill killed midway leaves: a postmaster.pid naming a
shared memory segment of the sandbox's own IPC namespace, which the next drill removes from the
machine's. What code running as the drill user inside the sandbox still reaches (defence in depth):
an unbounded tmpfs at /dev, user namespaces, a socket folder outside the disk count, and any number
of processes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from backup_pipeline.adapters.drill_host import Limits
from backup_pipeline.adapters.scratch_cluster import ScratchCluster
from backup_pipeline.config.settings import Settings
from backup_pipeline.drill.restore import DrillEnvironment
from backup_pipeline.drill.run import prepare_environment
from backup_pipeline_tests.conftest import Workspace, reachable_folder
from backup_pipeline_tests.drill.test_other_binaries import debian_bin_dir
from backup_pipeline_tests.support.drill_fixtures import (
    DAY2,
    SITE,
    SampleDumps,
    Site,
    build_site,
    cycle,
    gz,
    staged,
)
from backup_pipeline_tests.support.hostile_dumps import script, table_rows
from backup_pipeline_tests.support.scan_harness import (
    PEAK_RSS,
    ScanEnv,
    finish,
    kill_at,
    ok,
    pause_at,
    paused,
    peak_rss_kib,
    run_cli,
    start_cli,
)


def forced_policy(table: str, function: str, body: str) -> str:
    """A function of the dump's, and a policy calling it that the table's owner — the role the checks
    run as — is forced under: `count(*)` on the table runs the function in the checks' session."""
    return (
        f"CREATE FUNCTION public.{function}() RETURNS boolean LANGUAGE plpgsql AS $f$\n{body}\n$f$;\n"
        f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;\n"
        f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY;\n"
        f"CREATE POLICY {function} ON {table} USING (public.{function}());\n"
    )


NOTICES = "COPY public.t (a) FROM stdin;\n1\n\\.\n" + forced_policy(
    "public.t",
    "noisy",
    "DECLARE big text := pg_catalog.repeat('x', 20000000);\n"
    "BEGIN FOR i IN 1..25 LOOP RAISE NOTICE '%', big; END LOOP; RETURN true; END",
)

READ_WRITE = (
    "CREATE TABLE public.a (x integer);\nCOPY public.a (x) FROM stdin;\n1\n\\.\n"
    "CREATE TABLE public.b (x integer);\nCOPY public.b (x) FROM stdin;\n1\n\\.\n"
    "CREATE TABLE public.c (x integer);\n"  # restored empty
    + forced_policy(
        "public.a",
        "flip",
        "BEGIN PERFORM pg_catalog.set_config('default_transaction_read_only', 'off', false); "
        "RETURN true; END",
    )
    + forced_policy(
        "public.b",
        "pump",
        "BEGIN INSERT INTO public.c SELECT g FROM pg_catalog.generate_series(1, 1000) g; RETURN true; END",
    )
)

ENCODING = (
    "CREATE TABLE public.a (x integer PRIMARY KEY);\nCOPY public.a (x) FROM stdin;\n1\n\\.\n"
    'CREATE INDEX "índice" ON public.a (x);\n'
    + forced_policy(
        "public.a",
        "latin1",
        "BEGIN PERFORM pg_catalog.set_config('client_encoding', 'LATIN1', false); RETURN true; END",
    )
)

DIGITS = "SELECT " + "1" * (128 << 20) + ";\n"  # 128 MiB of one number: 130 KB gzipped
DIGITS_MINUTES = 0.1  # the time limit of that drill: 6 s


@pytest.fixture(scope="module")
def site(module_workspace: Workspace) -> Site:
    plain = {"notices": NOTICES, "read_write": READ_WRITE, "digits": DIGITS}
    dumps = {name: {DAY2: staged(name, DAY2, gz(script(body)), ".sql.gz")} for name, body in plain.items()}
    per_job = {"digits": {"restore_drill": {"max_minutes": DIGITS_MINUTES}}}
    return build_site(module_workspace, dumps, per_job=per_job)


# ---------------------------------------------------------------- the dump's code in the checks


def test_notices_raised_during_the_checks_stay_out_of_the_products_memory(
    site: Site, drill_dir: Path
) -> None:
    """The checks' session is psycopg2 in the product's own process: every notice a statement raises
    is kept there until the statement ends (psycopg2's list of pending notices has no bound). 25
    notices of 20 MB, raised by a policy the count evaluates, cost the drilling process over 1 GiB;
    a policy looping longer (or over more rows) takes the machine's memory, and the whole run with it."""
    env = ScanEnv.of(site.ws)
    env.extra = {"BACKUP_PIPELINE_DRILL_DIR": str(drill_dir)}
    args = ("drill", "--agent", SITE, "--database", "notices", "--cycle", cycle(DAY2), "--json")
    result = run_cli(env, *args, prelude=PEAK_RSS, timeout=300)
    stdout, stderr = result.stdout, result.stderr
    assert result.returncode == 0, stderr[-2000:]
    peak_kib = peak_rss_kib(stderr)
    (row,) = json.loads(stdout)
    assert row["outcome"] is not None, row
    assert peak_kib < 400 * 1024, f"notices held {peak_kib / 1024:.0f} MiB in the product's process: {row}"


def test_the_checks_cannot_be_turned_read_write_by_the_dump(site: Site) -> None:
    """The checks are said to run read-only, but `default_transaction_read_only` is an ordinary
    setting: a policy evaluated by the first count sets it off for the session, and the next count's
    policy inserts 1000 rows into a table the dump restored empty. The drill records them as restored
    (a tiny dump can look as big as it likes, past the shrink comparison)."""
    row = site.drill_json("read_write", DAY2)
    assert row["outcome"] == "RESTORED", row
    counted = table_rows(site.ws.database_url, row["drill_id"])
    assert counted["public.c"] == 0, f"the checks wrote into the restored database: {counted}"


def test_a_dump_switching_the_checks_client_encoding_fails_alone_and_the_run_goes_on(
    drill_workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A policy the count evaluates sets `client_encoding` to LATIN1 for the checks' session; psycopg2
    keeps decoding UTF-8, so the next text it reads (the index names amcheck lists) raises
    UnicodeDecodeError, which no layer expects: the whole `drill --due` run exits 1 ("invalid
    configuration or argument"), nothing is recorded, and the entry is due again — first in line —
    in every later run, so no other entry of the fleet is drilled by the schedule any more."""
    monkeypatch.setenv("BACKUP_PIPELINE_DRILL_PG_BIN", str(debian_bin_dir()))  # amcheck lists indexes
    sound = script("COPY public.t (a) FROM stdin;\n1\n\\.\n")
    build_site(
        drill_workspace,
        {
            "encoding": {DAY2: staged("encoding", DAY2, gz(script(ENCODING)), ".sql.gz")},
            "sound": {DAY2: staged("sound", DAY2, gz(sound), ".sql.gz")},
        },
    )
    result = drill_workspace.cli("drill", "--due", "--at", f"{DAY2}T23:00:00Z", "--json", expect_ok=False)
    assert result.exit_code == 0, result.output[-2000:]
    rows = {r["database_name"]: r for r in json.loads(result.stdout)}
    assert rows["encoding"]["outcome"] in ("RESTORE_FAILED", "RESTORED"), rows["encoding"]
    assert rows["sound"]["outcome"] == "RESTORED", rows["sound"]


# ---------------------------------------------------------------- the guard


def test_a_run_of_digits_cannot_keep_a_drill_past_its_time_limit(site: Site) -> None:
    """The guard holds a number token until it sees its end, and copies its whole buffer again at
    every chunk: one 128 MiB number (130 KB gzipped) takes it tens of seconds of CPU and all of it in
    memory, quadratically more for more (16 GiB, the default max_bytes, never ends). Nothing reaches
    psql meanwhile, so the time limit, which stops the cluster, does not stop the guard."""
    started = time.monotonic()
    row = site.drill_json("digits", DAY2)
    took = time.monotonic() - started
    assert row["outcome"] == "RESTORE_FAILED", row
    limit = DIGITS_MINUTES * 60
    assert took < limit + 15, f"a drill limited to {limit:g} s took {took:.0f} s"


# ---------------------------------------------------------------- racing the hash


def test_a_bare_archive_rewritten_during_its_drill_is_not_recorded_as_restored(
    drill_workspace: Workspace, sample_dumps: SampleDumps, drill_dir: Path, tmp_path: Path
) -> None:
    """A bare custom archive was hashed first, then read again — by `pg_restore --list`, then by the
    restore — from the staged file itself, which lives in the site's own folder. A site whose
    archive does not restore writes a sound archive of the same size over it (the same file) once
    the product read it, and puts the broken one back afterwards: the drill recorded RESTORED for the
    broken archive's SHA-256, which a re-drill shows does not restore. Now pg_restore reads a copy made
    as the file is hashed. (The pause only makes the race deterministic; a site can watch its own
    folder being read.)"""
    ws = drill_workspace
    sound = sample_dumps.get("raced", "custom")
    broken = sound[:-64] + b"\0" * 64  # its last table's data no longer inflates
    name, _ = staged("raced", DAY2, broken, ".dump")
    build_site(ws, {"raced": {DAY2: (name, broken)}})
    staged_file = ws.root / SITE / "database" / name
    env = ScanEnv(
        ws.root, ws.jobs_file, ws.home, ws.database_url, extra={"BACKUP_PIPELINE_DRILL_DIR": str(drill_dir)}
    )
    args = ("drill", "--agent", SITE, "--database", "raced", "--cycle", cycle(DAY2), "--json")

    marker, go = tmp_path / "hashed", tmp_path / "go"
    # once the product read (and hashed) the archive it restores: the site rewrites its file then
    prelude = pause_at("backup_pipeline.drill.restore:write_decompressed", marker, go, when="after")
    process = start_cli(env, *args, prelude=prelude)
    with paused(process, marker, go), open(staged_file, "r+b") as f:
        f.write(sound)  # the site, in its own folder: the same file, the same size
    stdout, stderr = finish(process, 300, "the raced drill")
    assert process.returncode == 0, stderr[-2000:]
    (raced,) = json.loads(stdout)
    staged_file.write_bytes(broken)  # and back

    (again,) = json.loads(ok(run_cli(env, *args, "--redrill")).stdout)
    assert again["outcome"] == "RESTORE_FAILED", again  # what the site staged does not restore
    assert raced["outcome"] != "RESTORED", f"the broken archive is recorded as restored: {raced}"


# ---------------------------------------------------------------- the file system's reserve


@pytest.fixture
def small_file_system() -> Iterator[Path]:
    """A 640 MiB tmpfs as the drill folder (the product keeps 256 MiB of it free)."""
    assert os.geteuid() == 0, "this test mounts a tmpfs: run the suite as root (CI does)"
    folder = Path(tempfile.mkdtemp(prefix="bp-small-fs-", dir="/tmp"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=640m,mode=0711", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
        folder.rmdir()


def archive_bomb(size: int) -> bytes:
    """zstd of an "archive" (pg_dump's magic, then zeros) that decompresses to `size` bytes."""
    compressor = zstandard.ZstdCompressor(write_checksum=True).compressobj()
    zeros = bytes(1 << 20)
    parts = [compressor.compress(b"PGDMP")]
    parts += [compressor.compress(zeros) for _ in range(size >> 20)]
    return b"".join([*parts, compressor.flush()])


def test_a_compressed_archive_cannot_fill_the_reserve_of_the_file_system(
    drill_workspace: Workspace, small_file_system: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compressed archive is decompressed into the drill's folder by the product itself (root: no
    RLIMIT_FSIZE, and root may use a file system's reserved blocks) up to max_bytes (16 GiB by
    default). The watch stops the cluster once the reserve is reached, but not the decompression,
    which goes on until the file system is full: 70 KB of zstd take every free byte of the drill
    folder's file system, which other drills, the product's logs (or its database) share."""
    ws = drill_workspace
    # The scan's own expansion limit (1,000:1) would make this cycle FAILED before any drill: lifted,
    # so that the drill's limits are the ones tested.
    monkeypatch.setenv("BACKUP_PIPELINE_MAX_EXPANSION_RATIO", "1000000")
    build_site(ws, {"bomb": {DAY2: staged("bomb", DAY2, archive_bomb(1 << 30), ".dump.zst")}})
    monkeypatch.setenv("BACKUP_PIPELINE_DRILL_DIR", str(small_file_system))
    lowest = [shutil.disk_usage(small_file_system).free]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            lowest[0] = min(lowest[0], shutil.disk_usage(small_file_system).free)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        (row,) = ws.json("drill", "--agent", SITE, "--database", "bomb", "--cycle", cycle(DAY2))
    finally:
        done.set()
        sampler.join()
    assert row["outcome"] == "RESTORE_FAILED", row
    assert lowest[0] >= 128 << 20, f"the drill folder's file system went down to {lowest[0]:,} free bytes"


# ---------------------------------------------------------------- leftovers


SEGMENT = """
import atexit, ctypes
_libc = ctypes.CDLL(None, use_errno=True)
assert _libc.unshare(0x08000000) == 0  # CLONE_NEWIPC: a machine of our own, its first segment is id 0
_segment = _libc.shmget(0, 4096, 0o1600)  # IPC_PRIVATE, IPC_CREAT: another server's segment
def _report():
    alive = _libc.shmctl(_segment, 2, ctypes.create_string_buffer(512)) >= 0  # IPC_STAT
    sys.stderr.write(f"\\nsegment {_segment}: {'kept' if alive else 'removed'}\\n")
atexit.register(_report)
"""


def test_cleaning_up_a_killed_drill_leaves_the_machines_shared_memory_alone(
    drill_workspace: Workspace, drill_dir: Path
) -> None:
    """A sandboxed postmaster lives in an IPC namespace of its own (which dies with it), so the
    segment id in its postmaster.pid — 0, the namespace's first — names nothing of the machine's.
    The next drill still removes that id from the machine's namespace (`_remove_shared_memory`):
    after any drill killed midway, the machine's segment 0 goes — typically the shared memory of
    the first PostgreSQL started at boot, whose interlock against a second postmaster on its data
    directory goes with it. Code running as the drill user can also write any id there (pgdata is
    theirs). Here the cleaning drill runs in an IPC namespace of its own whose segment 0 stands for
    the machine's."""
    ws = drill_workspace
    build_site(ws, {"plain": {DAY2: staged("plain", DAY2, gz(script("")), ".sql.gz")}})
    env = ScanEnv(
        ws.root, ws.jobs_file, ws.home, ws.database_url, extra={"BACKUP_PIPELINE_DRILL_DIR": str(drill_dir)}
    )
    args = ("drill", "--agent", SITE, "--database", "plain", "--cycle", cycle(DAY2), "--redrill")
    alone = ok(run_cli(env, *args, prelude=SEGMENT))  # a drill on its own leaves segment 0 alone
    assert "segment 0: kept" in alone.stderr, alone.stderr[-500:]

    killed = run_cli(
        env, *args, prelude=kill_at("backup_pipeline.drill.restore:inspect_restore", when="before")
    )
    assert killed.returncode == -9, killed.stderr
    pid_files = list(drill_dir.glob("run-*/pgdata/postmaster.pid"))
    assert any(p.read_text().splitlines()[6].split()[1] == "0" for p in pid_files), pid_files

    done = ok(run_cli(env, *args, prelude=SEGMENT))
    assert "removed 1 folder(s) left by interrupted drills" in done.stderr
    assert "segment 0: kept" in done.stderr, done.stderr[-500:]


# ---------------------------------------------------------------- the sandbox, from inside


def cluster(env: DrillEnvironment, label: str) -> ScratchCluster:
    return ScratchCluster(
        env.root, env.tools, env.user, Limits(env.memory_bytes, 1 << 30), label, env.sandbox
    )


def shell(probed: ScratchCluster, command: str) -> str:
    """`command` run by bash through the launcher the server and its clients use (code execution as
    the drill user, as a dump that broke out of PostgreSQL would have it)."""
    process = probed.sandboxed(["bash", "-c", command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = process.communicate(timeout=120)
    return out.decode(errors="replace")


def test_the_sandbox_has_no_unbounded_tmpfs(drill_environment: DrillEnvironment) -> None:
    """bubblewrap's /dev is a tmpfs owned by the drill user with no size (half the machine's memory):
    files written there are memory that neither the address-space limit nor the disk limit counts.
    Each sandboxed process (the server, psql, pg_restore) gets one."""
    with cluster(drill_environment, "devtmpfs") as probed:
        probed.create()
        out = shell(probed, "dd if=/dev/zero of=/dev/hog bs=1M count=128 2>&1 | tail -1; ls -l /dev/hog")
    assert "134217728" not in out, f"128 MiB of memory written to /dev: {out}"


def test_the_sandbox_refuses_user_namespaces(drill_environment: DrillEnvironment) -> None:
    """Inside the sandbox, a process can still create user namespaces and become root there: mount
    tmpfs file systems of any size (memory again), and reach the kernel's namespaced attack surface.
    bubblewrap's `--disable-userns` (0.8) closes it."""
    with cluster(drill_environment, "userns") as probed:
        probed.create()
        out = shell(probed, "unshare -Urm sh -c 'mount -t tmpfs -o size=64m none /tmp && echo mounted'")
    assert "mounted" not in out, out


def test_what_the_drill_writes_in_its_socket_folder_counts_against_its_disk_limit(
    drill_environment: DrillEnvironment,
) -> None:
    """The socket folder (in the system's temporary folder) is writable inside the sandbox, but the
    disk limit counts the drill's folder only: whatever is written there escapes max_bytes and the
    file system reserve."""
    with cluster(drill_environment, "socketdisk") as probed:
        probed.create()
        shell(probed, f"dd if=/dev/zero of={probed.socket_dir}/hog bs=1M count=32 2>&1")
        written = (probed.socket_dir / "hog").stat().st_size if (probed.socket_dir / "hog").exists() else 0
        counted = probed.disk_usage()
    assert written == 0 or counted >= written, f"{written:,} bytes written, {counted:,} counted"


# Forks until it cannot (or 300), says how many ran, and kills them: Python, so that counting needs no
# further process once the cap is reached.
FORKS = """
import os, signal, time
children = []
try:
    for _ in range(300):
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        children.append(pid)
except OSError:
    pass
print(f"started={len(children)}", flush=True)
for pid in children:
    os.kill(pid, signal.SIGKILL)
"""


@pytest.fixture
def forks_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DrillEnvironment]:
    """Drills as a drill user of their own: the cap on processes counts all of a user's on the
    machine, and filling it as the session's drill user would fail the drills other test workers run
    at the same moment (seen: `bwrap: Creating new namespace failed: Resource temporarily unavailable`)."""
    folder = reachable_folder(tmp_path_factory, "drills-forks")
    yield prepare_environment(
        Settings(drill_dir=folder, home=folder / "home", drill_user="backup-pipeline-drill-forks")
    )
    shutil.rmtree(folder, ignore_errors=True)


def test_the_sandbox_bounds_the_number_of_processes(forks_environment: DrillEnvironment) -> None:
    """Every process has the address-space limit, but nothing bounds how many there are: a drill
    (its server, its backends and whatever they start) could take N × the memory limit, or every
    process id of the machine. A drill needs a few dozen."""
    with cluster(forks_environment, "nproc") as probed:
        probed.create()
        out = shell(probed, f"python3 -c '{FORKS}'")
    started = int(out.rsplit("started=", 1)[1].split()[0])
    assert started < 300, f"{started} processes ran in one drill's sandbox"
