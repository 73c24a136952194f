"""Every drill outcome through `backup-pipeline drill`, on real pg_dump output restored into real
scratch PostgreSQL clusters: RESTORED in every format and compression, RESTORE_FAILED for what does
not restore (or restores nothing, or another database), NOT_DRILLABLE for what is not PostgreSQL's,
RESTORE_SHRANK against the previous drill; one row per entry unless a re-drill is asked; the entry
rows carry their latest drill; exit codes."""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from backup_pipeline.app.simulator import damage_table_of_contents
from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.drill_fixtures import (
    DAY1,
    DAY2,
    SITE,
    SampleDumps,
    Site,
    build_site,
    cycle,
    gz,
    leftovers,
    staged,
    zst,
)
from backup_pipeline_tests.support.metrics_fleet import parse, value, values

JSON_FIELDS = {
    "agent_id",
    "database_name",
    "cycle_expected_at",
    "outcome",
    "reason",
    "tables",
    "rows",
    "bytes",
    "duration_seconds",
}
PGDUMPALL = b"--\n-- PostgreSQL database cluster dump\n--\n\nSET default_transaction_read_only = off;\n"


@pytest.fixture(scope="module")
def site(module_workspace: Workspace, sample_dumps: SampleDumps) -> Site:
    d = sample_dumps
    plain = d.get("plain_gz")
    one_day = {
        "plain_gz": staged("plain_gz", DAY2, gz(plain), ".sql.gz"),
        "plain_zst": staged("plain_zst", DAY2, zst(d.get("plain_zst")), ".sql.zst"),
        "plain_raw": staged("plain_raw", DAY2, d.get("plain_raw"), ".sql"),
        "custom": staged("custom", DAY2, d.get("custom", "custom"), ".dump"),
        "custom_zst": staged("custom_zst", DAY2, zst(d.get("custom_zst", "custom")), ".dump.zst"),
        "tar": staged("tar", DAY2, gz(d.get("tar", "tar")), ".tar.gz"),
        "truncated": staged("truncated", DAY2, gz(d.get("truncated")[: len(plain) * 6 // 10]), ".sql.gz"),
        "truncated_custom": staged(
            "truncated_custom", DAY2, d.get("truncated_custom", "custom")[:-2000], ".dump"
        ),
        "empty": staged("empty", DAY2, gz(d.get("empty", empty=True)), ".sql.gz"),
        "damaged": staged("damaged", DAY2, damage_table_of_contents(d.get("damaged", "custom")), ".dump"),
        "wrong_custom": staged("wrong_custom", DAY2, d.get("someone_else", "custom"), ".dump"),
        "pgdumpall": staged("pgdumpall", DAY2, gz(PGDUMPALL), ".sql.gz"),
        "sqlserver": staged("sqlserver", DAY2, b"TAPE" + bytes(range(256)) * 8, ".bak"),
        "unknown": staged("unknown", DAY2, bytes(range(256)) * 8, ".bin"),
        "redrill_me": staged("redrill_me", DAY2, gz(d.get("redrill_me")), ".sql.gz"),
        # The databases of the tests that are not about a format, so that the format tests are the only
        # ones to drill theirs (whatever the order of the tests).
        "table_gz": staged("table_gz", DAY2, gz(plain), ".sql.gz"),
        "deep_zst": staged("deep_zst", DAY2, zst(d.get("plain_zst")), ".sql.zst"),
        "json_gz": staged("json_gz", DAY2, gz(plain), ".sql.gz"),
        "exported_raw": staged("exported_raw", DAY2, d.get("plain_raw"), ".sql"),
        "replaced": staged("replaced", DAY2, gz(d.get("replaced")), ".sql.gz"),
        "replaced_custom": staged("replaced_custom", DAY2, d.get("replaced_custom", "custom"), ".dump"),
    }
    dumps = {db: {DAY2: files} for db, files in one_day.items()}
    dumps["shrunk"] = {
        DAY1: staged("shrunk", DAY1, gz(d.get("shrunk", rows=2000)), ".sql.gz"),
        DAY2: staged("shrunk", DAY2, gz(d.get("shrunk", rows=100)), ".sql.gz"),
    }
    dumps["wrong_plain"] = {
        DAY1: staged("wrong_plain", DAY1, gz(d.get("wrong_plain")), ".sql.gz"),
        DAY2: staged("wrong_plain", DAY2, gz(d.get("another_db")), ".sql.gz"),
    }
    return build_site(module_workspace, dumps, restore_drill={"max_bytes": "1GiB"})


def drill_rows(site: Site, database: str, day: str = DAY2) -> dict[str, Any]:
    row = site.drill_json(database, day)
    assert set(row) >= JSON_FIELDS
    return row


@pytest.mark.parametrize(
    ("database", "kind"),
    [
        ("plain_gz", "PostgreSQL plain SQL dump (pg_dump 18.4), gzip"),
        ("plain_zst", "PostgreSQL plain SQL dump (pg_dump 18.4), zstd"),
        ("plain_raw", "PostgreSQL plain SQL dump (pg_dump 18.4)"),
        ("custom", "PostgreSQL custom-format archive (pg_dump 18.4)"),
        ("custom_zst", "PostgreSQL custom-format archive (pg_dump 18.4), zstd"),
        ("tar", "PostgreSQL tar-format archive, gzip"),
    ],
)
def test_a_good_dump_in_any_format_restores_with_its_figures(
    site: Site, database: str, kind: str, drill_dir: Path
) -> None:
    row = drill_rows(site, database)
    assert row["outcome"] == "RESTORED", row
    assert row["reason"] is None and row["note"] is None
    assert row["detected_kind"] == kind
    assert row["tables"] == 2 and row["rows"] == 300 + 15  # invoices and their customers
    assert row["bytes"] > 1_000_000  # the restored database's size
    assert 0 < row["duration_seconds"] < 60
    assert row["tool_versions"]["psql"].startswith("18.") and row["tool_versions"]["server"].startswith("18.")
    assert row["amcheck"].startswith("not available")  # the embedded binaries ship no amcheck
    assert row["attempt"] == 1
    assert not leftovers(drill_dir)


@pytest.mark.parametrize(
    ("database", "reason"),
    [
        ("truncated", "the dump ends inside the data of a COPY (truncated) (dump line"),
        ("truncated_custom", "pg_restore: could not read from input file"),
        ("empty", "the dump restored no table (an empty database or schema)"),
        ("damaged", "the archive's table of contents cannot be read"),
        ("wrong_custom", "an archive of database 'someone_else', not 'wrong_custom'"),
    ],
)
def test_a_dump_that_does_not_restore_fails_with_its_reason(site: Site, database: str, reason: str) -> None:
    row = drill_rows(site, database)
    assert row["outcome"] == "RESTORE_FAILED", row
    assert reason in row["reason"], row["reason"]


@pytest.mark.parametrize(
    ("database", "kind"),
    [
        ("pgdumpall", "a pg_dumpall cluster dump (whole clusters are not drilled), gzip"),
        ("sqlserver", "a Microsoft SQL Server backup (MTF)"),
        ("unknown", "unknown binary data (starts with 00 01 02 03 04 05 06 07)"),
    ],
)
def test_what_is_not_a_postgresql_dump_is_not_drillable_with_its_kind(
    site: Site, database: str, kind: str
) -> None:
    row = drill_rows(site, database)
    assert row["outcome"] == "NOT_DRILLABLE"
    assert row["reason"] == kind == row["detected_kind"]
    assert row["tables"] is None and row["rows"] is None


@pytest.mark.parametrize("database", ["replaced", "replaced_custom"])
def test_a_staged_file_replaced_since_the_scan_is_not_drilled_as_this_cycles(
    site: Site, database: str
) -> None:
    """Same size, other bytes: told while the dump streams (plain), or first (a bare archive)."""
    name, data = site.dumps[database][DAY2]
    path = site.agent.folder / "database" / name
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    row = drill_rows(site, database)
    assert row["outcome"] == "NOT_DRILLABLE"
    assert row["reason"].startswith("the staged file no longer holds this cycle's dump")


def test_a_restore_far_smaller_than_the_previous_drill_shrank(site: Site) -> None:
    first = drill_rows(site, "shrunk", DAY1)
    assert first["outcome"] == "RESTORED" and first["rows"] == 2100 and not first["shrank"]
    second = drill_rows(site, "shrunk", DAY2)
    assert second["outcome"] == "RESTORED" and second["shrank"] is True
    assert second["rows"] == 105
    assert (
        "restore shrank since the drill of cycle 2025-11-20T13:00Z: rows 2,100 → 105 (0.05×"
        in second["reason"]
    )


def test_a_plain_dump_of_another_database_fails_against_the_previous_drill(site: Site) -> None:
    assert drill_rows(site, "wrong_plain", DAY1)["outcome"] == "RESTORED"
    second = drill_rows(site, "wrong_plain", DAY2)
    assert second["outcome"] == "RESTORE_FAILED"
    assert "none of the 2 table(s) restored by the drill of cycle 2025-11-20T13:00Z" in second["reason"]


def test_one_row_per_entry_unless_a_redrill_is_asked(site: Site) -> None:
    ws = site.ws
    first = drill_rows(site, "redrill_me")
    again = drill_rows(site, "redrill_me")
    assert again["drill_id"] == first["drill_id"] and again["note"].startswith("already drilled")
    redrilled = site.drill_json("redrill_me", DAY2, "--redrill")
    assert redrilled["attempt"] == 2 and redrilled["drill_id"] != first["drill_id"]
    engine = sa.create_engine(ws.database_url)
    try:
        with engine.connect() as conn:
            attempts = conn.execute(
                sa.text(
                    "SELECT d.attempt FROM restore_drills d JOIN expected_jobs j ON j.id = d.job_id "
                    "WHERE j.database_name = 'redrill_me' ORDER BY d.attempt"
                )
            ).scalars()
            assert list(attempts) == [1, 2]
    finally:
        engine.dispose()
    entry = ws.entry(SITE, "redrill_me", cycle(DAY2))
    assert entry is not None
    assert entry["restore_drill"] == "RESTORED" and entry["restore_drill_id"] == redrilled["drill_id"]
    assert "RESTORED" in ws.cli("entries", f"--agent={SITE}", "--database=redrill_me").stdout


def test_the_table_for_people_and_the_exit_codes(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = site.ws
    chosen = ("--agent", SITE, "--database", "table_gz", "--cycle", cycle(DAY2))
    site.drill(*chosen)
    table = site.drill(*chosen).stdout
    assert "table_gz" in table and "RESTORED" in table and "already drilled" in table
    usage = site.drill("--due", "--agent", SITE, expect_ok=False)
    assert usage.exit_code == 2
    nothing = site.drill("--agent", SITE, "--database", "nope", expect_ok=False)
    assert nothing.exit_code == 1 and "no entry to drill" in nothing.output
    monkeypatch.setenv("BACKUP_PIPELINE_DRILL_PG_BIN", str(ws.root / "no-binaries-here"))
    broken = site.drill(
        "--agent", SITE, "--database", "table_gz", "--cycle", cycle(DAY2), "--redrill", expect_ok=False
    )
    assert broken.exit_code == 1
    assert "the drills could not run: no initdb, postgres, psql, pg_restore in" in broken.output
    assert "Traceback" not in broken.output


def test_a_drill_folder_deeper_than_a_socket_path_may_be_still_drills(
    site: Site, drill_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL caps a Unix socket's path at 107 bytes: the clusters' sockets live in short folders of
    the temporary folder, removed with the drill, so any drill folder works."""
    deep = drill_dir / ("a_rather_deep_folder_" * 6)
    assert len(str(deep)) > 107
    monkeypatch.setenv("BACKUP_PIPELINE_DRILL_DIR", str(deep))
    sockets = set(Path(tempfile.gettempdir()).glob(f"bp-{os.getpid()}-*"))  # the session's sample server's
    row = site.drill_json("deep_zst", DAY2, "--redrill")
    assert row["outcome"] == "RESTORED", row
    assert set(Path(tempfile.gettempdir()).glob(f"bp-{os.getpid()}-*")) == sockets
    assert list(deep.glob("run-*")) == []


def test_json_rows_are_a_json_array_on_stdout(site: Site) -> None:
    result = site.ws.cli("drill", "--agent", SITE, "--database", "json_gz", "--json")
    rows = json.loads(result.stdout)
    assert isinstance(rows, list) and rows[0]["database_name"] == "json_gz"


def test_the_exporter_shows_each_backups_latest_drill(site: Site) -> None:
    """`metrics dump` after real drills: the latest drill's outcome, figures and time per expected
    backup, a shrunk restore flagged, and no drill series for a backup never drilled."""
    drill_rows(site, "shrunk", DAY1)  # the drill the next one of `shrunk` is compared with
    drilled = {db: drill_rows(site, db) for db in ("exported_raw", "truncated", "sqlserver", "shrunk")}
    series = parse(site.ws.cli("metrics", "dump").stdout)

    def of(database: str, name: str, **labels: str) -> float:
        return value(series, name, agent_id=SITE, database=database, schedule="13:00 UTC", **labels)

    for database, row in drilled.items():
        assert of(database, "backup_drill_last_outcome", outcome=row["outcome"]) == 1
        assert sum(values(series, "backup_drill_last_outcome", database=database)) == 1
        assert of(database, "backup_drill_last_duration_seconds") == pytest.approx(
            row["duration_seconds"], abs=0.001
        )
        finished = datetime.fromisoformat(row["finished_at"].replace("Z", "+00:00")).timestamp()
        assert of(database, "backup_drill_last_timestamp_seconds") == pytest.approx(finished, abs=1)
    assert of("exported_raw", "backup_drill_last_success") == 1
    assert of("exported_raw", "backup_drill_last_restored_rows") == drilled["exported_raw"]["rows"]
    assert of("exported_raw", "backup_drill_last_restored_size_bytes") == drilled["exported_raw"]["bytes"]
    assert of("truncated", "backup_drill_last_success") == 0
    assert of("sqlserver", "backup_drill_last_success") == 0
    assert of("shrunk", "backup_drill_last_shrank") == 1 and of("shrunk", "backup_drill_last_success") == 0
    assert of("shrunk", "backup_drill_last_restored_rows") == 105  # the latest drill, not the first
    engine = sa.create_engine(site.ws.database_url)
    try:
        with engine.connect() as conn:
            with_drills = set(
                conn.execute(
                    sa.text(
                        "SELECT DISTINCT j.database_name FROM restore_drills d "
                        "JOIN expected_jobs j ON j.id = d.job_id"
                    )
                ).scalars()
            )
    finally:
        engine.dispose()
    exported = {s.labels["database"] for s in series if s.name == "backup_drill_last_outcome"}
    assert exported == with_drills <= {s.labels["database"] for s in series if s.name == "backup_job_up"}
