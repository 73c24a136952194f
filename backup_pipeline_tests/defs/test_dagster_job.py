"""The scan as a Dagster job: loadable definitions, daily UTC partitions, evaluation fanned out in
batches of whole agents, and entries written (then rewritten in place) by the run that evaluated them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetKey, DagsterInstance, DailyPartitionsDefinition, Definitions, ExecuteInProcessResult

from backup_pipeline.app.simulator import SimulationSpec, simulate
from backup_pipeline.defs import SCAN_JOB
from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.dagster_runs import definitions, run_scan_job
from backup_pipeline_tests.support.paths import PROJECT_ROOT

DAY = "2025-11-21"
# After every simulated operation of DAY (the latest expected time is 22:45, ending by 23:11)...
SIMULATED_AT = datetime(2025, 11, 21, 23, 30, tzinfo=UTC)
# ... and after every cycle's deadline (window 60 min): every cycle of DAY gets its entry.
SCAN_AT = "2025-11-22T00:30:00Z"


def execute(instance: DagsterInstance, day: str = DAY, at: str = SCAN_AT) -> ExecuteInProcessResult:
    return run_scan_job(day, at, instance)


def evaluate_steps(result: ExecuteInProcessResult) -> set[str]:
    return {
        event.step_key
        for event in result.all_events
        if event.is_step_success and event.step_key and event.step_key.startswith("evaluate[")
    }


def simulate_fleet(ws: Workspace, agents: int, databases: int) -> None:
    simulate(
        SimulationSpec(
            root=ws.root,
            agents=agents,
            databases=databases,
            days=1,
            size=4096,
            seed=5,
            at=SIMULATED_AT,
            jobs_file=ws.jobs_file,
        )
    )


def entries_by_cycle(ws: Workspace) -> dict[tuple[str, str, str], dict[str, Any]]:
    rows = ws.entries()
    keyed = {(r["agent_id"], r["database_name"], r["cycle_expected_at"]): r for r in rows}
    assert len(keyed) == len(rows), "two entries for one cycle"
    return keyed


def test_definitions_for_a_simulated_fleet_are_loadable(workspace: Workspace) -> None:
    simulate_fleet(workspace, agents=3, databases=2)
    defs = definitions()
    Definitions.validate_loadable(defs)
    assert defs.resolve_job_def(SCAN_JOB).name == SCAN_JOB
    assert len(defs.resolve_asset_graph().get_all_asset_keys()) == 3 * 2 + 2  # + reports and digest
    assert len(defs.resolve_asset_graph().asset_check_keys) == 3 * 2 * 3  # integrity, size, restorable


def test_the_scan_job_of_a_large_fleet_reports_one_asset_per_agent(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above the per-database threshold every agent is one asset: the run materializes it once per
    agent, with integrity and size checks that agree with the on-demand checks of the same asset."""
    monkeypatch.setenv("BACKUP_PIPELINE_PER_DATABASE_ASSETS_MAX", "2")
    simulate_fleet(workspace, agents=3, databases=2)
    defs = definitions()
    Definitions.validate_loadable(defs)
    with DagsterInstance.ephemeral() as instance:
        result = run_scan_job(DAY, SCAN_AT, instance, defs=defs)
    assert result.success
    agents = {e["agent_id"] for e in workspace.entries()}
    materialized = {m.asset_key.path[-1] for m in result.asset_materializations_for_node("evaluate")}
    assert materialized == agents
    checks = {(c.asset_key.path[-1], c.check_name): c.passed for c in result.get_asset_check_evaluations()}
    assert set(checks) == {(a, name) for a in agents for name in ("integrity", "size")}
    assert all(checks[(a, "integrity")] for a in agents)  # the simulated fleet is healthy


def test_job_is_partitioned_daily_in_utc_with_todays_partition(workspace: Workspace) -> None:
    job = definitions().resolve_job_def(SCAN_JOB)
    partitions = job.partitions_def
    assert isinstance(partitions, DailyPartitionsDefinition)
    assert partitions.timezone == "UTC"
    today = datetime.now(UTC).date()
    keys = partitions.get_partition_keys()
    assert today.isoformat() in keys
    assert keys[-1] == today.isoformat()  # today included, tomorrow not yet
    assert (today + timedelta(days=1)).isoformat() not in keys
    assert DAY in keys
    window = partitions.time_window_for_partition_key(DAY)
    assert window.start == datetime(2025, 11, 21, tzinfo=UTC)
    assert window.end == datetime(2025, 11, 22, tzinfo=UTC)


@pytest.mark.parametrize(
    ("agents", "databases", "max_batches"),
    [
        (12, 3, 4),  # more agents than batches: agents share batches
        (3, 4, 8),  # fewer agents than batches: one batch per agent, still not one per database
    ],
)
def test_evaluation_is_fanned_out_in_batches_of_agents(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch, agents: int, databases: int, max_batches: int
) -> None:
    monkeypatch.setenv("BACKUP_PIPELINE_MAX_BATCHES", str(max_batches))
    simulate_fleet(workspace, agents, databases)

    result = execute(DagsterInstance.ephemeral())

    assert result.success
    steps = evaluate_steps(result)
    assert len(steps) == min(agents, max_batches)
    assert len(steps) < agents * databases  # never one step per database
    entries = entries_by_cycle(workspace)
    assert len(entries) == agents * databases
    assert {e["status"] for e in entries.values()} == {"SUCCESS"}
    assert {e["dagster_run_id"] for e in entries.values()} == {result.run_id}


def test_entries_carry_the_run_id_and_a_rerun_updates_them_in_place(workspace: Workspace) -> None:
    simulate_fleet(workspace, agents=3, databases=2)
    with DagsterInstance.ephemeral() as instance:
        first = execute(instance)
        assert first.success
        run = instance.get_run_by_id(first.run_id)
        assert run is not None and run.tags.get("dagster/partition") == DAY
        before = entries_by_cycle(workspace)
        assert len(before) == 6
        assert {e["dagster_run_id"] for e in before.values()} == {first.run_id}

        second = execute(instance)
        assert second.success
        assert second.run_id != first.run_id
        after = entries_by_cycle(workspace)

    assert after.keys() == before.keys()
    assert {e["dagster_run_id"] for e in after.values()} == {second.run_id}
    for key, entry in after.items():
        assert entry["entry_id"] == before[key]["entry_id"]  # the same row, updated
        assert entry["status"] == before[key]["status"]
        assert entry["server_calculated_staged_hash"] == before[key]["server_calculated_staged_hash"]
    # The re-run rewrote every entry: each asset's latest materialization is the re-run's, marked
    # unchanged (so the UI and the entries name the same run).
    materialized = [e for e in second.all_events if e.is_step_materialization]
    assert len(materialized) == 6
    assert {m.partition for m in (e.step_materialization_data.materialization for e in materialized)} == {DAY}
    assert all(
        e.step_materialization_data.materialization.metadata["changed"].value is False for e in materialized
    )
    batches = second.output_for_node("evaluate").values()
    assert (sum(len(b.outcomes) for b in batches), sum(len(b.changed) for b in batches)) == (6, 0)


@pytest.mark.slow
def test_dagster_definitions_validate_cli(workspace: Workspace, tmp_path: Path) -> None:
    """`dagster definitions validate -w workspace.yaml` beside the shipped `dagster.yaml`, with the
    venv's dagster.

    The shipped `dagster.yaml` (read from the working directory when DAGSTER_HOME is unset) keeps
    Dagster's storage in PostgreSQL at BACKUP_PIPELINE_DAGSTER_PG_URL: give it the test's database.
    A jobs file declares a few databases so their assets, checks, schedule and sensor load too. Not
    run in the checkout itself: Dagster would load a `.env` there (the demo's) over this environment.
    """
    simulate_fleet(workspace, agents=3, databases=2)
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env["BACKUP_PIPELINE_DAGSTER_PG_URL"] = workspace.database_url
    dagster = Path(sys.executable).parent / "dagster"
    beside = tmp_path / "checkout_like"
    beside.mkdir()
    for shipped in ("dagster.yaml", "workspace.yaml"):
        shutil.copyfile(PROJECT_ROOT / shipped, beside / shipped)
    completed = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=beside,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "Traceback" not in completed.stderr
    assert "All code locations passed validation" in completed.stdout + completed.stderr


@pytest.mark.slow
def test_dg_checks_and_lists_the_definitions_from_the_checkout(workspace: Workspace) -> None:
    """Dagster's project CLI (`dg`, [tool.dg] in pyproject.toml) finds the package at the repository
    root and loads its definitions; the shipped dagster.yaml needs no URL of its own (Dagster's
    storage goes to the product's PostgreSQL)."""
    simulate_fleet(workspace, agents=2, databases=2)
    workspace.cli("backups", "sync")
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "BACKUP_PIPELINE_DAGSTER_PG_URL")}
    env["VIRTUAL_ENV"] = str(Path(sys.executable).parent.parent)
    dg = Path(sys.executable).parent / "dg"
    project = checkout_without_local_state(workspace.home.parent / "checkout")

    def run(*args: str) -> str:
        completed = subprocess.run(
            [str(dg), *args], cwd=project, env=env, capture_output=True, text=True, timeout=300
        )
        said = completed.stdout + completed.stderr
        assert completed.returncode == 0, said
        assert "Traceback" not in said
        return said

    assert "All definitions loaded successfully" in run("check", "defs")
    listed = run("list", "defs", "--json")
    assert "backups/SIRPACAM" in listed and "backup_scan" in listed and "restore_drills" in listed


def checkout_without_local_state(folder: Path) -> Path:
    """The checkout's project files, without what running the product there left behind: Dagster's
    commands load the `.env` of their working folder over the environment, and the demo writes one
    naming its embedded server (which may have been stopped since)."""
    folder.mkdir()
    for name in ("pyproject.toml", "dagster.yaml", "workspace.yaml"):
        shutil.copyfile(PROJECT_ROOT / name, folder / name)
    (folder / "backup_pipeline").symlink_to(PROJECT_ROOT / "backup_pipeline")
    return folder


def _scan_with_dagster_home(workspace: Workspace, home: Path) -> subprocess.CompletedProcess[str]:
    """`backup-pipeline scan` in its own process with DAGSTER_HOME set and no Dagster storage URL."""
    env = {k: v for k, v in os.environ.items() if k != "BACKUP_PIPELINE_DAGSTER_PG_URL"}
    env["DAGSTER_HOME"] = str(home)
    cli = Path(sys.executable).parent / "backup-pipeline"
    return subprocess.run(
        [str(cli), "scan", "--at", SCAN_AT, "--partition", DAY],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.slow
def test_scan_with_an_explicit_dagster_home_gets_the_storage_url_itself(workspace: Workspace) -> None:
    """An operator's DAGSTER_HOME holding the shipped dagster.yaml, without the storage URL variable:
    the scan gives Dagster the product's PostgreSQL, as `backup-pipeline dev` does, and its run is
    recorded there."""
    simulate_fleet(workspace, agents=1, databases=2)
    home = workspace.home / "operator_dagster_home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text((PROJECT_ROOT / "dagster.yaml").read_text())

    completed = _scan_with_dagster_home(workspace, home)

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "Traceback" not in completed.stderr
    run_ids = {e["dagster_run_id"] for e in workspace.entries()}
    os.environ["BACKUP_PIPELINE_DAGSTER_PG_URL"] = workspace.database_url
    try:
        instance = DagsterInstance.from_config(str(home))
        recorded = [instance.get_run_by_id(r) for r in run_ids]
        assert {r.job_name for r in recorded} == {SCAN_JOB}
        # dagster.yaml re-executes failed daemon runs; an in-process run cannot be, and says so.
        assert {r.tags.get("dagster/max_retries") for r in recorded} == {"0"}
        instance.dispose()
    finally:
        del os.environ["BACKUP_PIPELINE_DAGSTER_PG_URL"]


def test_scan_with_an_unusable_dagster_yaml_says_so_without_a_traceback(workspace: Workspace) -> None:
    simulate_fleet(workspace, agents=1, databases=1)
    home = workspace.home / "operator_dagster_home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(
        "storage:\n  postgres:\n    postgres_url:\n      env: NOT_SET_ANYWHERE_BP_TEST\n"
    )

    completed = _scan_with_dagster_home(workspace, home)

    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    assert f"cannot open the Dagster instance at DAGSTER_HOME={home}" in completed.stderr
    assert "NOT_SET_ANYWHERE_BP_TEST" in completed.stderr
    assert workspace.entries() == []


def test_an_agent_without_entries_gets_one_integrity_verdict_from_the_check_and_from_scans(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One asset per agent: the on-demand integrity check and the check evaluation a scan reports
    for the agent's day come from one verdict, so they agree even when nothing was evaluated yet
    (the check said "failed", the scan's event "passed")."""
    from dagster import AssetCheckEvaluation, AssetSelection, define_asset_job

    from backup_pipeline.defs.fleet import agent_day_events
    from backup_pipeline.scan.outcomes import AssetDay

    monkeypatch.setenv("BACKUP_PIPELINE_PER_DATABASE_ASSETS_MAX", "0")
    agent = "SIRPACAM_DOUALA_NEWBELL"
    workspace.write_jobs(
        [{"agent_id": agent, "database_name": "compta_db", "expected_hour_utc": 13, "expected_minute_utc": 0}]
    )
    workspace.cli("jobs", "sync")
    check_now = define_asset_job(
        "check_now", selection=AssetSelection.checks_for_assets(AssetKey(["backups", agent]))
    )
    defs = Definitions.merge(definitions(), Definitions(jobs=[check_now]))
    with DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("check_now").execute_in_process(instance=instance)
    on_demand = {c.check_name: c for c in result.get_asset_check_evaluations()}["integrity"]
    empty = AssetDay(
        agent_id=agent, day=datetime(2025, 11, 21).date(), statuses={}, problems=[], total_size=0, entries=0
    )
    (reported,) = [
        e
        for e in agent_day_events(AssetKey(["backups", agent]), empty)
        if isinstance(e, AssetCheckEvaluation) and e.check_name == "integrity"
    ]
    assert on_demand.passed is False and reported.passed is False
    assert on_demand.metadata["problems"].value == "no cycle evaluated yet"
    assert reported.metadata["problems"].value == "no cycle evaluated yet"


@pytest.mark.slow
def test_without_dagster_home_a_scan_runs_on_the_instance_dev_prepared(workspace: Workspace) -> None:
    """After `dev` (or the demo) made BACKUP_PIPELINE_HOME/dagster_home, a scan from the command line
    records its runs there, so they show in that UI; before, it runs on a throwaway instance."""
    simulate_fleet(workspace, agents=1, databases=1)
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "BACKUP_PIPELINE_DAGSTER_PG_URL")}
    cli = str(Path(sys.executable).parent / "backup-pipeline")
    printed = subprocess.run(
        [cli, "dev", "--print-env"], env=env, capture_output=True, text=True, timeout=180
    )
    assert printed.returncode == 0, printed.stderr
    home = workspace.home / "dagster_home"
    assert f"export DAGSTER_HOME={home}" in printed.stdout and (home / "dagster.yaml").is_file()

    scanned = subprocess.run(
        [cli, "scan", "--at", SCAN_AT, "--partition", DAY],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert scanned.returncode == 0, scanned.stdout + scanned.stderr
    run_ids = {e["dagster_run_id"] for e in workspace.entries()}
    os.environ["BACKUP_PIPELINE_DAGSTER_PG_URL"] = workspace.database_url
    try:
        instance = DagsterInstance.from_config(str(home))
        assert all(instance.get_run_by_id(r) is not None for r in run_ids)
        instance.dispose()
    finally:
        del os.environ["BACKUP_PIPELINE_DAGSTER_PG_URL"]
