"""The executor comes from the settings, the same in every process that builds the definitions, for
the scan job and the drill job alike; the workers' Celery application agrees with the orchestrator's;
step outputs live in PostgreSQL; one agent's many large dumps are drilled in as many steps.

The distributed behaviour itself (two worker hosts, a killed worker, a stopped broker) is proven in
`e2e/test_celery_workers.py`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from dagster import (
    DynamicOutput,
    Failure,
    build_input_context,
    build_op_context,
    build_output_context,
    op,
    serialize_value,
)
from pydantic import BaseModel

from backup_pipeline.config.settings import Settings
from backup_pipeline.defs import DRILL_JOB, SCAN_JOB, build_definitions
from backup_pipeline.defs.celery_app import celery_queues
from backup_pipeline.defs.drill_job import DrillConfig, DrillStep, plan_drills_op
from backup_pipeline.defs.executors import MAX_RUNTIME_TAG
from backup_pipeline.defs.resources import DatabaseResource
from backup_pipeline.defs.step_outputs import StepOutputs
from backup_pipeline.defs.workers import worker_app
from backup_pipeline.scan.context import ScanRequest
from backup_pipeline.storage import step_outputs
from backup_pipeline.storage.database import open_database
from backup_pipeline_tests.conftest import Workspace

BROKER = "redis://:broker-password@broker.example:6379/0"


def celery_settings(**values: object) -> Settings:
    return Settings(executor="celery", celery_broker=BROKER, run_max_seconds=900, **values)


def test_the_scan_job_runs_on_the_executor_the_settings_name(workspace: Workspace) -> None:
    default = build_definitions(Settings()).resolve_job_def(SCAN_JOB)
    assert default.executor_def.name == "multiprocess"
    assert default.tags[MAX_RUNTIME_TAG] == str(6 * 3600)

    job = build_definitions(celery_settings()).resolve_job_def(SCAN_JOB)
    assert job.executor_def.name == "celery"
    assert job.tags[MAX_RUNTIME_TAG] == "900"
    # What Dagster stores of the job (its snapshot, shown in the UI) holds no broker password.
    assert "broker-password" not in serialize_value(job.get_job_snapshot())


def test_the_drill_job_runs_on_the_same_executor_with_room_for_its_budget(workspace: Workspace) -> None:
    default = build_definitions(Settings(drill_concurrency=3)).resolve_job_def(DRILL_JOB)
    assert default.executor_def.name == "multiprocess"
    assert default.tags[MAX_RUNTIME_TAG] == str(6 * 3600)  # 2 h of budget fit in the settings' limit

    job = build_definitions(celery_settings(drill_budget_minutes=480)).resolve_job_def(DRILL_JOB)
    assert job.executor_def.name == "celery"
    assert job.tags[MAX_RUNTIME_TAG] == str((480 + 30) * 60 + 900)  # the budget, a last drill, a margin
    assert job.tags["backup_pipeline/drill"] == "exclusive"
    assert "broker-password" not in serialize_value(job.get_job_snapshot())


GIB = 1 << 30
INSERT_ENTRY = sa.text(
    "INSERT INTO backup_entries (job_id, cycle_expected_at, status, message, evaluated_at, staged_file_name, "
    "server_calculated_staged_hash, server_calculated_staged_size) "
    "VALUES (:job, '2025-11-20T02:00Z', 'SUCCESS', 'ok', now(), :file, :hash, :size)"
)
DUMPS = {"erp": 3 * GIB, "crm": 3 * GIB, "dwh": 3 * GIB, "wiki": GIB // 2, "mail": GIB // 2, "hr": GIB // 4}


def staged_entries(workspace: Workspace, dumps: dict[str, int]) -> dict[int, int]:
    """One agent's expected backups, each with a good entry of this many staged bytes: {job: entry}."""
    workspace.write_jobs(
        [
            {
                "agent_id": "ACME_LYON_DATACENTER",
                "database_name": name,
                "expected_hour_utc": 2,
                "expected_minute_utc": 0,
            }
            for name in dumps
        ]
    )
    workspace.cli("backups", "sync", "--at", "2025-11-20T00:00:00Z")
    engine = sa.create_engine(workspace.database_url)
    try:
        with engine.begin() as conn:
            jobs = dict(conn.execute(sa.text("SELECT database_name, id FROM expected_jobs")).all())
            for name, size in dumps.items():
                conn.execute(
                    INSERT_ENTRY, {"job": jobs[name], "file": f"{name}.dump", "hash": "ab" * 32, "size": size}
                )
            return dict(conn.execute(sa.text("SELECT job_id, id FROM backup_entries")).all())
    finally:
        engine.dispose()


def planned_steps(settings: Settings, **config: object) -> list[DrillStep]:
    resources = {"settings": settings, "database": DatabaseResource(settings=settings)}
    with build_op_context(resources=resources, partition_key="2025-11-20") as context:
        outputs = plan_drills_op(context, DrillConfig(as_of="2025-11-20T12:00:00Z", **config))
        return [o.value for o in outputs if isinstance(o, DynamicOutput)]


def test_large_dumps_are_drilled_in_steps_sized_by_estimated_time(
    workspace: Workspace,
) -> None:
    """Due drills and drills a person chose alike: a 3 GiB dump (1 s + 3 GiB at the assumed 4 MiB/s,
    769 s) is a step of its own under 800 s a step, whoever's dumps they are."""
    entries = staged_entries(workspace, DUMPS)
    settings = Settings(drill_batch_seconds=800, drill_budget_minutes=24 * 60)
    due = planned_steps(settings)
    assert sorted(s.staged_bytes for s in due) == sorted([3 * GIB] * 3 + [GIB + GIB // 4])
    assert sorted(i for s in due for i in s.entry_ids) == sorted(entries.values())
    chosen = planned_steps(settings, entry_ids=[entries[job] for job in sorted(entries)], redrill=True)
    assert [len(s.entry_ids) for s in chosen] == [1, 1, 1, 3] and all(s.redrill for s in chosen)


def test_many_tiny_dumps_are_spread_over_steps_by_the_fixed_cost_of_each_drill(workspace: Workspace) -> None:
    """30 dumps of 1 KiB weigh nothing in bytes, but each drill costs its fixed second: 10 a step
    within 10.5 s, and a budget of 20 s takes 20 of them."""
    entries = staged_entries(workspace, {f"tiny_{i:02d}": 1024 for i in range(30)})
    steps = planned_steps(Settings(drill_batch_seconds=10.5, drill_budget_minutes=24 * 60))
    assert [len(s.entry_ids) for s in steps] == [10, 10, 10]
    assert sorted(i for s in steps for i in s.entry_ids) == sorted(entries.values())
    budgeted = planned_steps(Settings(drill_batch_seconds=10.5, drill_budget_minutes=20 / 60))
    assert [len(s.entry_ids) for s in budgeted] == [10, 9]  # 1.0002 s each: 19 fit in 20 s


def test_scan_steps_and_drill_steps_go_to_their_own_queues_which_workers_consume_by_default(
    workspace: Workspace,
) -> None:
    """What each job's executor sends its steps to, what the workers declare and consume: the real
    routing through Redis, and a scan running while a drill holds a worker, are proven in
    `e2e/test_celery_workers.py`."""
    settings = celery_settings(celery_queue="backups_prod", celery_drill_queue="restores")
    defs = build_definitions(settings)

    def executor_of(job: str) -> Any:
        # Dagster calls this with the run's InitExecutorContext, of which the executor reads its config.
        init = SimpleNamespace(executor_config={"retries": {"enabled": {}}})
        return defs.resolve_job_def(job).executor_def.executor_creation_fn(init)  # type: ignore[misc]

    scans, drills = executor_of(SCAN_JOB), executor_of(DRILL_JOB)
    assert (scans.queue, drills.queue) == ("backups_prod", "restores")
    # dagster-celery's loop sends a step with no queue tag of its own to its app's default queue.
    assert scans.app_args()["config_source"]["task_default_queue"] == "backups_prod"
    assert drills.app_args()["config_source"]["task_default_queue"] == "restores"
    assert drills.app_args()["broker"] == BROKER == scans.app_args()["backend"]

    app = worker_app(settings)
    assert {(q.name, q.routing_key) for q in app.conf.task_queues} == {
        ("backups_prod", "backups_prod"),
        ("restores", "restores"),
    }
    assert celery_queues(settings) == ["backups_prod", "restores"]  # a worker's queues by default
    assert app.conf.task_acks_late and app.conf.worker_prefetch_multiplier == 1
    # Redis hands a dead worker's task over only once no run can still wait for it.
    assert app.conf.broker_transport_options["visibility_timeout"] > settings.run_max_seconds
    assert "execute_plan" in app.tasks


def test_the_worker_command_refuses_an_empty_queue_name(workspace: Workspace, monkeypatch) -> None:
    monkeypatch.setenv("BACKUP_PIPELINE_EXECUTOR", "celery")
    monkeypatch.setenv("BACKUP_PIPELINE_CELERY_BROKER", BROKER)
    result = workspace.cli("worker", "--queue", "dagster,", expect_ok=False)
    assert result.exit_code == 2 and "a queue name is empty" in result.stderr


def test_the_worker_command_needs_the_celery_executor(workspace: Workspace, monkeypatch) -> None:
    result = workspace.cli("worker", expect_ok=False)
    assert result.exit_code == 1 and "BACKUP_PIPELINE_EXECUTOR=celery" in result.stderr
    monkeypatch.setenv("BACKUP_PIPELINE_EXECUTOR", "celery")
    result = workspace.cli("worker", expect_ok=False)
    assert result.exit_code == 1 and "BACKUP_PIPELINE_CELERY_BROKER" in result.stderr
    assert "Traceback" not in result.stderr


class _Output(BaseModel):
    request: ScanRequest
    ids: list[int]


@op
def _produces() -> _Output:
    raise AssertionError("never run: only its output's type is used")


OUTPUT_TYPE = _produces.output_defs[0].dagster_type  # what Dagster makes of an op's annotation


def test_step_outputs_round_trip_through_postgresql_and_a_missing_one_says_so(workspace: Workspace) -> None:
    settings = Settings()
    manager = StepOutputs(database=DatabaseResource(settings=settings))
    value = _Output(request=ScanRequest(as_of=datetime(2025, 11, 21, tzinfo=UTC)), ids=[3, 1])
    output = build_output_context(
        run_id="r1", step_key="plan_evaluation", name="measurements", mapping_key="m_1"
    )
    manager.handle_output(output, value)
    manager.handle_output(output, value.model_copy(update={"ids": [7]}))  # a retried step: replaced

    upstream = build_output_context(
        run_id="r1",
        step_key="plan_evaluation",
        name="measurements",
        mapping_key="m_1",
        dagster_type=OUTPUT_TYPE,
    )
    assert manager.load_input(build_input_context(upstream_output=upstream)) == value.model_copy(
        update={"ids": [7]}
    )
    gone = build_output_context(
        run_id="r0", step_key="ingest_reports", name="result", dagster_type=OUTPUT_TYPE
    )
    with pytest.raises(Failure, match="step ingest_reports of run r0 is not stored"):
        manager.load_input(build_input_context(upstream_output=gone))
    with pytest.raises(TypeError, match="pydantic"):
        manager.handle_output(build_output_context(run_id="r1", step_key="x", name="result"), {"a": 1})

    engine = sa.create_engine(workspace.database_url)
    try:
        with engine.begin() as conn:
            stored = conn.execute(sa.text("SELECT value FROM step_outputs WHERE run_id = 'r1'")).scalars()
            assert [json.loads(v)["ids"] for v in stored] == [[7]]  # JSON, readable by any process
            # Outputs older than the retention are forgotten; younger ones are kept.
            conn.execute(sa.text("UPDATE step_outputs SET stored_at = now() - interval '31 days'"))
        manager.handle_output(build_output_context(run_id="r2", step_key="notify", name="result"), value)
        with open_database(settings).sessions() as session:
            assert step_outputs.prune(session) == 1
            session.commit()
        with engine.connect() as conn:
            kept = conn.execute(sa.text("SELECT run_id FROM step_outputs")).scalars().all()
    finally:
        engine.dispose()
    assert kept == ["r2"]
