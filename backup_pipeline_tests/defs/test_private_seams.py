"""Canaries for the private parts of Dagster, dagster-celery and dagster-postgres the product builds on
(`defs/private_dagster*.py`): each test checks one assumption a seam module states, and fails naming
the symbol and the assumption when an upgrade of the pinned family breaks it. Run them first after
an upgrade (docs/upgrading-dagster.md); the end-to-end tests then show the whole still works.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import pytest
from dagster import DagsterEventType, DagsterInstance, Executor, job, op, reconstructable

SEAMS = [
    "backup_pipeline.defs.private_dagster",
    "backup_pipeline.defs.private_dagster_celery",
    "backup_pipeline.defs.private_dagster_postgres",
]
FAMILY = ("dagster", "dagster-celery", "dagster-postgres")


def broken(symbol: str, assumption: str, detail: object = "") -> str:
    installed = ", ".join(f"{name} {version(name)}" for name in FAMILY)
    said = f"{symbol}: {assumption} — no longer true with {installed}"
    return (
        f"{said} ({detail}); see docs/upgrading-dagster.md"
        if detail
        else f"{said}; see docs/upgrading-dagster.md"
    )


def holds(symbol: str, assumption: str, check: Callable[[], object]) -> None:
    """Fail naming the symbol and the assumption when `check` is false or raises."""
    try:
        ok = check()
    except Exception as exc:
        pytest.fail(broken(symbol, assumption, f"{type(exc).__name__}: {exc}"), pytrace=False)
    if not ok:
        pytest.fail(broken(symbol, assumption), pytrace=False)


def parameters(function: Any) -> list[str]:
    """The parameters' names, without a leading `self` or `cls`."""
    names = list(inspect.signature(function).parameters)
    return names[1:] if names[:1] in (["self"], ["cls"]) else names


def source(function: Any) -> str:
    """The function's source without whitespace (for call-shape checks)."""
    return re.sub(r"\s+", "", inspect.getsource(function))


def seam(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # names the missing symbol and where it was looked for
        pytest.fail(broken(module, "every private part it imports still exists", exc), pytrace=False)


@pytest.mark.parametrize("module", SEAMS)
def test_each_seam_imports_what_it_names(module: str) -> None:
    imported = seam(module)
    for name in imported.__all__:
        holds(f"{module}.{name}", "is importable", lambda n=name: hasattr(imported, n))


# ---------------------------------------------------------------- Dagster: the executor


def test_the_executor_takes_and_hands_on_retries_as_dagster_s_own_executors() -> None:
    d = seam(SEAMS[0])
    holds(
        "get_retries_config", "is the `retries` config of Dagster's executors", lambda: d.get_retries_config()
    )
    holds(
        "RetryMode.from_config",
        "{'enabled': {}} is RetryMode.ENABLED",
        lambda: d.RetryMode.from_config({"enabled": {}}) == d.RetryMode.ENABLED,
    )
    holds(
        "RetryMode.for_inner_plan",
        "a step's own process runs with a RetryMode",
        lambda: isinstance(d.RetryMode.ENABLED.for_inner_plan(), d.RetryMode),
    )


def test_a_lost_step_is_reported_with_an_engine_error_then_a_failure_or_a_retry() -> None:
    d = seam(SEAMS[0])
    error = d.SerializableErrorInfo(message="step x: lost\n", stack=[], cls_name="StepLost")
    holds(
        "EngineEventData.engine_error",
        "takes a SerializableErrorInfo(message=, stack=, cls_name=) and keeps it as `error`",
        lambda: d.EngineEventData.engine_error(error).error == error,
    )
    holds(
        "Executor.log_failure_or_retry_event_after_error",
        "exists with (step_context, err_info, known_state)",
        lambda: (
            parameters(Executor.log_failure_or_retry_event_after_error)
            == ["step_context", "err_info", "known_state"]
        ),
    )


def test_a_step_s_arguments_are_what_dagster_sends_a_step_s_process() -> None:
    d = seam(SEAMS[0])
    needed = ["job_origin", "run_id", "step_keys_to_execute", "instance_ref", "retry_mode", "known_state"]
    holds(
        "ExecuteStepArgs",
        f"takes {', '.join(needed)}",
        lambda: parameters(d.ExecuteStepArgs.__new__)[: len(needed)] == needed,
    )


# ---------------------------------------------------------------- Dagster: the worker's task


@op
def canary_op() -> int:
    return 1


@job
def canary_job() -> None:
    canary_op()


def test_a_worker_rebuilds_the_job_plans_one_step_and_executes_it() -> None:
    d = seam(SEAMS[0])
    recon = reconstructable(canary_job)
    holds(
        "ReconstructableJob.from_dict",
        "rebuilds the job from its to_dict()",
        lambda: d.ReconstructableJob.from_dict(recon.to_dict()).get_definition().name == "canary_job",
    )
    rebuilt = d.ReconstructableJob.from_dict(recon.to_dict())
    with DagsterInstance.ephemeral() as instance:
        run = instance.create_run_for_job(job_def=canary_job, run_config={})
        plan = d.create_execution_plan(
            rebuilt, run.run_config, step_keys_to_execute=["canary_op"], known_state=None
        )
        holds(
            "ExecutionPlan.step_handle_for_single_step_plans",
            "names the one step planned",
            lambda: plan.step_handle_for_single_step_plans().to_key() == "canary_op",
        )
        holds(
            "DagsterInstance.report_engine_event",
            "takes (message, dagster_run, engine_event_data, cls, step_key)",
            lambda: (
                parameters(instance.report_engine_event)[:5]
                == ["message", "dagster_run", "engine_event_data", "cls", "step_key"]
            ),
        )
        holds(
            "EngineEventData",
            "takes (metadata, marker_end=)",
            lambda: d.EngineEventData({"host": "h"}, marker_end="m").marker_end == "m",
        )
        events = list(
            d.execute_plan_iterator(
                execution_plan=plan,
                job=rebuilt,
                dagster_run=run,
                instance=instance,
                retry_mode=d.RetryMode.DISABLED,
                run_config=run.run_config,
            )
        )
    holds(
        "execute_plan_iterator",
        "executes the planned step and yields its STEP_SUCCESS",
        lambda: DagsterEventType.STEP_SUCCESS in {e.event_type for e in events},
    )


# ---------------------------------------------------------------- Dagster: the storage


def test_the_storage_plugs_into_dagster_yaml_as_dagster_postgres_does() -> None:
    d = seam(SEAMS[0])
    holds(
        "pg_config",
        "is the schema of `storage: postgres:` (postgres_url…)",
        lambda: "postgres_url" in d.pg_config(),
    )
    holds(
        "ConfigurableClassData",
        "takes (module_name, class_name, config_yaml)",
        lambda: parameters(d.ConfigurableClassData.__new__) == ["module_name", "class_name", "config_yaml"],
    )
    from dagster_postgres import DagsterPostgresStorage

    holds(
        "DagsterStorage",
        "is the base of dagster-postgres's storage",
        lambda: issubclass(DagsterPostgresStorage, d.DagsterStorage),
    )


# ---------------------------------------------------------------- dagster-celery


def test_dagster_celery_s_loop_sends_and_waits_for_steps_as_the_executor_expects() -> None:
    c = seam(SEAMS[1])
    loop = c.core_celery_execution_loop
    holds(
        "core_celery_execution_loop",
        "takes (job_context, execution_plan, step_execution_fn)",
        lambda: parameters(loop) == ["job_context", "execution_plan", "step_execution_fn"],
    )
    text = source(loop)
    calls = {
        "builds its app with make_app(executor.app_args())": "make_app(executor.app_args())",
        "sends a step with step_execution_fn(app, job_context, step, queue, priority, known state)": (
            "step_execution_fn(app,job_context,step,queue,priority,active_execution.get_known_state(),)"
        ),
        "sends a step to its dagster-celery/queue tag or the app's task_default_queue": (
            "queue=step.tags.get(DAGSTER_CELERY_QUEUE_TAG,task_default_queue)"
        ),
        "waits with result.ready()": "result.ready()",
        "takes the step's serialized events from result.get()": "step_events=result.get()",
        "revokes results when the run is stopped": "result.revoke()",
        "opens DELEGATE_MARKER when it sends a step": "EngineEventData(marker_start=DELEGATE_MARKER)",
    }
    for assumption, call in calls.items():
        holds("core_celery_execution_loop", assumption, lambda call=call: call in text)
    holds(
        "DELEGATE_MARKER",
        "is a marker name",
        lambda: isinstance(c.DELEGATE_MARKER, str) and c.DELEGATE_MARKER,
    )


# ---------------------------------------------------------------- dagster-postgres


def test_dagster_postgres_s_storages_are_built_and_pooled_as_the_storage_expects() -> None:
    p = seam(SEAMS[2])
    from dagster_postgres import (
        DagsterPostgresStorage,
        PostgresEventLogStorage,
        PostgresRunStorage,
        PostgresScheduleStorage,
    )

    url = "postgresql+psycopg2://u:secret@db.example:5432/dagster"
    holds(
        "pg_url_from_config",
        "gives back `postgres_url`",
        lambda: p.pg_url_from_config({"postgres_url": url}) == url,
    )
    holds(
        "get_token_provider_from_config",
        "is None without auth",
        lambda: p.get_token_provider_from_config({}) is None,
    )
    for storage in (PostgresRunStorage, PostgresEventLogStorage, PostgresScheduleStorage):
        name = storage.__name__
        holds(
            f"{name}.__init__",
            "takes (postgres_url, should_autocreate_tables, token_provider=)",
            lambda s=storage: (
                parameters(s.__init__)[:2] == ["postgres_url", "should_autocreate_tables"]
                and "token_provider" in parameters(s.__init__)
            ),
        )
    for storage in (PostgresRunStorage, PostgresEventLogStorage):
        name = storage.__name__
        holds(
            f"{name}.optimize_for_webserver",
            "takes (statement_timeout, pool_recycle, max_overflow) and replaces `self._engine`",
            lambda s=storage: (
                parameters(s.optimize_for_webserver) == ["statement_timeout", "pool_recycle", "max_overflow"]
                and "self._engine=" in source(s.optimize_for_webserver)
            ),
        )
    holds(
        "PostgresEventLogStorage.has_table",
        "takes (table_name)",
        lambda: parameters(PostgresEventLogStorage.has_table) == ["table_name"],
    )
    built = source(DagsterPostgresStorage.__init__)
    for attribute in (
        "_run_storage",
        "_event_log_storage",
        "_schedule_storage",
        "_inst_data",
        "postgres_url",
    ):
        holds(
            f"DagsterPostgresStorage.{attribute}",
            "is set by __init__ (the pooled storage sets it itself)",
            lambda a=attribute: f"self.{a}=" in built,
        )
