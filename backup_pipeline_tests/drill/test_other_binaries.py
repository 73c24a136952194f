"""`BACKUP_PIPELINE_DRILL_PG_BIN`: drills with Debian's PostgreSQL (installed by `.ci/run`) instead of
the embedded one — another major version, and the `amcheck` extension the embedded binaries lack, so
indexes are verified. A dump newer than the binaries fails with PostgreSQL's own reason."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from backup_pipeline.app.sample_databases import SampleDatabase, SampleServer
from backup_pipeline.config.settings import Settings
from backup_pipeline.drill.run import prepare_environment
from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.drill_fixtures import DAY2, SITE, SampleDumps, build_site, gz, staged


def debian_bin_dir() -> Path:
    found = sorted(
        (p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/pg_restore")),
        key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0),
    )
    assert found, "Debian's PostgreSQL is missing: install the `postgresql` package (.ci/run does)"
    return found[-1]


def test_drills_with_debian_binaries_verify_indexes_with_amcheck(
    drill_workspace: Workspace, sample_dumps: SampleDumps, drill_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = debian_bin_dir()
    other = prepare_environment(Settings(drill_dir=drill_dir, home=drill_dir / "home", drill_pg_bin=bin_dir))
    with SampleServer(other) as server:
        own = server.dump(SampleDatabase("own_version", rows=300))
    newer = sample_dumps.get("newer", "custom")  # pg_dump 18's archive format
    build_site(
        drill_workspace,
        {
            "own_version": {DAY2: staged("own_version", DAY2, gz(own), ".sql.gz")},
            "newer": {DAY2: staged("newer", DAY2, newer, ".dump")},
        },
    )
    monkeypatch.setenv("BACKUP_PIPELINE_DRILL_PG_BIN", str(bin_dir))
    major = other.tools.versions["psql"].split(".")[0]
    rows = {r["database_name"]: r for r in drill_workspace.json("drill", "--agent", SITE)}

    restored = rows["own_version"]
    assert restored["outcome"] == "RESTORED", restored
    assert restored["tool_versions"]["server"].split(".")[0] == major
    assert restored["amcheck"] == "3 of 3 btree index(es) verified"  # two primary keys and an index

    if major != "18":
        failed = rows["newer"]
        assert failed["outcome"] == "RESTORE_FAILED"
        assert "unsupported version" in failed["reason"]
