"""Limits hold per drill, and a dump that reaches one is that drill's result, never the run's:

- a 50 MB error message is cut to a few KiB in the drill's reason and failing statement, shorter in its
  alert, under 64 KiB in the `--json` row, and never held whole in the product's memory;
- a dump that fills the drill folder's file system ends RESTORE_FAILED ("limit reached: the drill
  folder's file system is full"), recorded and alerting, and the next entry of the same run is drilled;
- parallel query workers cannot multiply the memory limit: a dump asking for four gets none.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from backup_pipeline_tests.conftest import Workspace
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
    peak_rss_kib,
    run_cli,
)

HUGE_ERROR = "DO $$BEGIN RAISE EXCEPTION '%', pg_catalog.repeat('x', 50000000); END$$;\n"
PARALLEL = """
CREATE TABLE public.big AS SELECT g AS a FROM pg_catalog.generate_series(1, 300000) g;
ANALYZE public.big;
CREATE TABLE public.launched (n integer);
SET max_parallel_workers = 8;
SET max_parallel_workers_per_gather = 4;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
DO $$
DECLARE
    plan json;
    workers integer;
BEGIN
    EXECUTE 'EXPLAIN (ANALYZE, FORMAT JSON) SELECT pg_catalog.count(*) FROM public.big' INTO plan;
    workers := pg_catalog.jsonb_path_query_first(plan::jsonb, 'strict $.**."Workers Launched"')::integer;
    INSERT INTO public.launched SELECT g FROM pg_catalog.generate_series(1, coalesce(workers, 0)) g;
END $$;
"""
FILLING = (
    "CREATE TABLE public.filler AS\n"
    "SELECT pg_catalog.repeat(pg_catalog.md5(g::text), 30) AS a\n"
    "FROM pg_catalog.generate_series(1, 3000000) g;\n"
)


@pytest.fixture(scope="module")
def site(module_workspace: Workspace) -> Site:
    dumps = {
        "huge_error": {DAY2: staged("huge_error", DAY2, gz(script(HUGE_ERROR)), ".sql.gz")},
        "parallel": {DAY2: staged("parallel", DAY2, gz(script(PARALLEL)), ".sql.gz")},
    }
    return build_site(module_workspace, dumps)


def test_a_50_megabyte_error_is_bounded_everywhere(site: Site, drill_dir: Path) -> None:
    env = ScanEnv.of(site.ws)
    env.extra = {"BACKUP_PIPELINE_DRILL_DIR": str(drill_dir)}
    args = ("drill", "--agent", SITE, "--database", "huge_error", "--cycle", cycle(DAY2), "--json")
    result = run_cli(env, *args, prelude=PEAK_RSS, timeout=300)
    stdout, stderr = result.stdout, result.stderr
    assert result.returncode == 0, stderr
    peak_kib = peak_rss_kib(stderr)
    (row,) = json.loads(stdout)
    assert row["outcome"] == "RESTORE_FAILED"
    assert row["reason"].startswith("xxxx") and row["reason"].endswith("…"), row["reason"][:100]
    assert len(row["reason"]) <= 4096 and len(row["failing_statement"] or "") <= 4096
    assert len(json.dumps(row)) < 64 * 1024
    with sa.create_engine(site.ws.database_url).connect() as conn:
        (message,) = conn.execute(
            sa.text(
                "SELECT a.message FROM alerts a JOIN expected_jobs j ON j.id = a.job_id "
                "WHERE a.event = 'RESTORE_FAILED' AND j.database_name = 'huge_error'"
            )
        ).one()
        # the module's other drills (any order) may have restored: their reason is NULL
        stored = conn.execute(sa.text("SELECT length(reason) FROM restore_drills WHERE reason IS NOT NULL"))
        stored = stored.scalars().all()
    assert len(message) <= 1024 and message.endswith("…"), message[:100]
    assert max(stored) <= 4096
    assert peak_kib < 400 * 1024, f"the drill's process held {peak_kib / 1024:.0f} MiB"


def test_parallel_workers_cannot_multiply_a_drills_memory(site: Site) -> None:
    row = site.drill_json("parallel", DAY2)
    assert row["outcome"] == "RESTORED", row
    counted = table_rows(site.ws.database_url, row["drill_id"])
    assert counted["public.big"] == 300000
    assert counted["public.launched"] == 0, "parallel workers were launched"


# ---------------------------------------------------------------- a full file system


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


def test_a_dump_filling_the_file_system_fails_alone_and_the_run_goes_on(
    drill_workspace: Workspace,
    sample_dumps: SampleDumps,
    small_file_system: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ws = drill_workspace
    build_site(
        ws,
        {
            "filling": {DAY2: staged("filling", DAY2, gz(script(FILLING)), ".sql.gz")},
            "sound": {DAY2: staged("sound", DAY2, gz(sample_dumps.get("sound")), ".sql.gz")},
        },
    )
    monkeypatch.setenv("BACKUP_PIPELINE_DRILL_DIR", str(small_file_system))
    rows = {r["database_name"]: r for r in ws.json("drill", "--due", "--at", f"{DAY2}T23:00:00Z")}
    assert rows["filling"]["outcome"] == "RESTORE_FAILED", rows["filling"]
    assert "limit reached: the drill folder's file system is full" in rows["filling"]["reason"]
    assert rows["sound"]["outcome"] == "RESTORED", rows["sound"]
    again = ws.json("drill", "--due", "--at", f"{DAY2}T23:30:00Z")
    assert again == [], "a drilled entry came back as due"
    alerts = ws.json("notify", "alerts")
    assert any(a["event"] == "RESTORE_FAILED" and a["database_name"] == "filling" for a in alerts), alerts
