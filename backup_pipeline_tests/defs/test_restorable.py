"""The `restorable` check's verdict over drills: a slow restore warns, as a shrunk one does; its
metadata says the engine, the validation queries and the objective."""

from __future__ import annotations

from datetime import UTC, datetime

from dagster import AssetCheckSeverity, AssetKey

from backup_pipeline.defs.restorable import database_evaluation, verdict

CYCLE = datetime(2025, 11, 21, 13, tzinfo=UTC)


def test_a_restore_slower_than_its_objective_warns() -> None:
    assert verdict([{"outcome": "RESTORED"}]) == (True, AssetCheckSeverity.WARN)
    assert verdict([{"outcome": "RESTORED", "slow": True}]) == (False, AssetCheckSeverity.WARN)
    assert verdict([{"outcome": "RESTORED", "slow": True}, {"outcome": "RESTORE_FAILED"}]) == (
        False,
        AssetCheckSeverity.ERROR,
    )


def test_the_evaluation_shows_the_engine_checks_and_objective() -> None:
    drill = {
        "outcome": "RESTORED",
        "cycle_expected_at": CYCLE,
        "engine": "mariadb",
        "checks": [{"name": "fresh", "passed": True, "detail": "true"}],
        "objective_seconds": 300.0,
        "duration_seconds": 412.0,
        "slow": True,
        "drill_id": 7,
    }
    evaluation = database_evaluation(AssetKey(["A_B_C", "db"]), drill)
    assert not evaluation.passed and evaluation.severity == AssetCheckSeverity.WARN
    metadata = {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}
    assert metadata["engine"] == "mariadb" and metadata["objective_seconds"] == 300.0
    assert metadata["checks"] == [{"name": "fresh", "passed": True, "detail": "true"}]
    assert metadata["slow"] == "restored in 412 s, over its objective of 300 s"
