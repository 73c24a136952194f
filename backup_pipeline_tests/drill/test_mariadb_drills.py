"""Restore drills of MariaDB and MySQL dumps: real `mariadb-dump` output of databases a MariaDB source
server (Debian's binaries, started by the tests, socket only) made, drilled through the CLI into a
scratch MariaDB — the same outcomes and figures as PostgreSQL drills, a cut dump is RESTORE_FAILED, a
MySQL 8 dump of a dialect MariaDB lacks is NOT_DRILLABLE with the server's words, and without MariaDB
binaries MariaDB dumps are NOT_DRILLABLE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.drill_fixtures import (
    DAY1,
    DAY2,
    MariadbDumps,
    Site,
    build_site,
    gz,
    leftovers,
    staged,
    zst,
)
from backup_pipeline_tests.support.paths import PROJECT_ROOT

MYSQL8 = (PROJECT_ROOT / "backup_pipeline_tests" / "fixtures" / "mysql8" / "shop.sql").read_bytes()
FOOTER = b"-- Dump completed\n"


def renamed(dump: bytes, old: str, new: str) -> bytes:
    """The dump as if its database were named `new` (the header names the database dumped)."""
    return dump.replace(f"Database: {old}\n".encode(), f"Database: {new}\n".encode(), 1)


@pytest.fixture(scope="module")
def site(module_workspace: Workspace, mariadb_dumps: MariadbDumps) -> Site:
    d = mariadb_dumps
    sound = d.get("m_gz")
    one_day = {
        "m_gz": staged("m_gz", DAY2, gz(sound), ".sql.gz"),
        "m_zst": staged("m_zst", DAY2, zst(d.get("m_zst")), ".sql.zst"),
        "m_raw": staged("m_raw", DAY2, d.get("m_raw"), ".sql"),
        "m_cut": staged("m_cut", DAY2, gz(d.get("m_cut")[: len(sound) * 6 // 10]), ".sql.gz"),
        "m_no_footer": staged("m_no_footer", DAY2, gz(d.get("m_no_footer").replace(FOOTER, b"")), ".sql.gz"),
        "m_empty": staged("m_empty", DAY2, gz(d.get("m_empty", empty=True)), ".sql.gz"),
        "m_other": staged("m_other", DAY2, gz(d.get("someone_else")), ".sql.gz"),
        "shop": staged("shop", DAY2, gz(MYSQL8), ".sql.gz"),
        "m_mysql_cut": staged("m_mysql_cut", DAY2, renamed(MYSQL8, "shop", "m_mysql_cut")[:-60], ".sql"),
    }
    dumps = {db: {DAY2: files} for db, files in one_day.items()}
    dumps["m_shrunk"] = {
        DAY1: staged("m_shrunk", DAY1, gz(d.get("m_shrunk", rows=2000)), ".sql.gz"),
        DAY2: staged("m_shrunk", DAY2, gz(d.get("m_shrunk", rows=100)), ".sql.gz"),
    }
    return build_site(module_workspace, dumps, restore_drill={"max_bytes": "1GiB"})


def test_a_mariadb_dump_in_any_compression_restores_with_its_figures(site: Site, drill_dir: Path) -> None:
    for database, suffix in (("m_gz", ", gzip"), ("m_zst", ", zstd"), ("m_raw", "")):
        row = site.drill_json(database, DAY2)
        assert row["outcome"] == "RESTORED", row
        assert row["engine"] == "mariadb" and row["reason"] is None
        assert row["detected_kind"].startswith("MariaDB dump (mariadb-dump 10.")
        assert row["detected_kind"].endswith(suffix)
        assert row["tables"] == 2 and row["rows"] == 300 + 15  # invoices and their customers
        assert row["bytes"] > 100_000  # the restored database's files
        assert row["amcheck"] == "2 of 2 table(s) verified (CHECK TABLE … EXTENDED)"
        assert row["tool_versions"]["server"].startswith("10.") and "mariadbd" in row["tool_versions"]
        assert row["checks"] == [] and row["slow"] is False
    assert not leftovers(drill_dir)


@pytest.mark.parametrize(
    ("database", "reason"),
    [
        ("m_cut", "(truncated)"),
        ("m_no_footer", "does not end with mariadb-dump's '-- Dump completed' footer (truncated)"),
        ("m_empty", "the dump restored no table"),
        ("m_other", "a dump of database 'someone_else', not 'm_other'"),
        ("m_mysql_cut", "(truncated)"),
    ],
)
def test_a_mariadb_dump_that_does_not_restore_fails_with_its_reason(
    site: Site, database: str, reason: str
) -> None:
    row = site.drill_json(database, DAY2)
    assert row["outcome"] == "RESTORE_FAILED", row
    assert reason in row["reason"], row["reason"]
    assert row["engine"] == "mariadb"


def test_a_sound_mysql_8_dump_of_a_dialect_mariadb_lacks_is_not_drillable(site: Site) -> None:
    row = site.drill_json("shop", DAY2)
    assert row["outcome"] == "NOT_DRILLABLE", row
    assert row["detected_kind"] == "MySQL dump (mysqldump 10.13, server 8.0.36), gzip"
    assert row["reason"].startswith("a MySQL 8.0.36 dump the installed MariaDB 10."), row["reason"]
    assert "Unknown collation: 'utf8mb4_0900_ai_ci' (error 1273, dump line 25)" in row["reason"]


def test_a_shrunk_mariadb_restore_is_flagged(site: Site) -> None:
    site.drill_json("m_shrunk", DAY1)
    row = site.drill_json("m_shrunk", DAY2)
    assert row["outcome"] == "RESTORED" and row["shrank"], row
    assert "rows 2,100 → 105" in row["reason"]


def test_without_mariadb_binaries_mariadb_dumps_are_not_drillable(
    drill_workspace: Workspace, mariadb_dumps: MariadbDumps, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_site(
        drill_workspace,
        {"m_nobin": {DAY2: staged("m_nobin", DAY2, gz(mariadb_dumps.get("m_nobin")), ".sql.gz")}},
    )
    empty = tmp_path / "no-mariadb"
    empty.mkdir()
    monkeypatch.setenv("BACKUP_PIPELINE_DRILL_MARIADB_BIN", str(empty))
    (row,) = drill_workspace.json("drill", "--agent", "ACME_DOUALA_PORT", "--database", "m_nobin")
    assert row["outcome"] == "NOT_DRILLABLE", row
    assert row["reason"].startswith("no MariaDB server binaries"), row["reason"]
    assert row["engine"] == "mariadb" and row["tables"] is None


def json_row(site: Site, database: str) -> dict[str, Any]:
    return site.drill_json(database, DAY2)
