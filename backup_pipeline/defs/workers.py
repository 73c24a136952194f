"""The Celery workers that run the steps of the product's runs (`backup-pipeline worker`).

A worker is the Celery application the orchestrator sends steps to (`celery_app.celery_app`: the same
broker, result backend and queues, from the same settings), consuming the queues it is given (by
default both the scans' and the drills'), with one task, `execute_plan`, that executes one step of a
run the way dagster-celery's does, with two differences: a step delivered
after its run ended (the broker hands over again a task whose worker died, once no run can still be
waiting for it) is dropped rather than run against newer data, and the step's first event names the
host and the process that ran it. Everything a step needs comes from PostgreSQL (Dagster's storage,
the step outputs of `StepOutputs`, the product's tables) and the deposit area: nothing from the
orchestrator's disk.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from celery import Celery
from dagster import DagsterInstance, serialize_value

from backup_pipeline.config.settings import Settings
from backup_pipeline.defs.celery_app import EXECUTE_STEP_TASK, celery_app
from backup_pipeline.defs.celery_executor import WatchedCeleryExecutor, parse_step_args
from backup_pipeline.defs.private_dagster import (
    EngineEventData,
    ReconstructableJob,
    create_execution_plan,
    execute_plan_iterator,
)
from backup_pipeline.defs.private_dagster_celery import DELEGATE_MARKER

WORKER_EVENT = "Executing step in a Celery worker"  # the first event of every step a worker runs


def worker_app(settings: Settings) -> Celery:
    """The Celery application of the workers, for these settings."""
    app = celery_app(settings)
    app.task(bind=True, name=EXECUTE_STEP_TASK)(execute_step)
    return app


def run_worker(settings: Settings, *, concurrency: int, queues: list[str], loglevel: str = "INFO") -> None:
    """Run a worker in this process until it is stopped (SIGTERM: a warm shutdown that lets the
    running steps finish; a second one, or SIGQUIT, stops at once)."""
    worker_app(settings).worker_main(
        [
            "worker",
            f"--concurrency={concurrency}",
            f"--queues={','.join(queues)}",
            "--hostname=backup-pipeline@%h",
            "--prefetch-multiplier=1",
            "--without-mingle",  # no start-up chatter with the other workers: ready in about a second
            "--without-gossip",
            f"--loglevel={loglevel}",
        ]
    )


def execute_step(task: Any, step_args: str, executable_dict: dict[str, Any]) -> list:
    """Execute one step of a run; the step's events, serialized, for the orchestrator."""
    args = parse_step_args(step_args)
    assert args.instance_ref is not None, "a Celery step needs the run's instance"
    with DagsterInstance.from_ref(args.instance_ref) as instance:
        run = instance.get_run_by_id(args.run_id)
        if run is None or run.is_finished:
            return []  # redelivered after its run ended: nobody waits for it, and its data is old
        job = ReconstructableJob.from_dict(executable_dict)
        plan = create_execution_plan(
            job, run.run_config, step_keys_to_execute=args.step_keys_to_execute, known_state=args.known_state
        )
        step_keys = ", ".join(args.step_keys_to_execute or [])
        started = instance.report_engine_event(
            f"{WORKER_EVENT}: {step_keys}",
            run,
            EngineEventData(
                {
                    "step_keys": step_keys,
                    "worker": task.request.hostname,
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                },
                marker_end=DELEGATE_MARKER,
            ),
            WatchedCeleryExecutor,
            step_key=plan.step_handle_for_single_step_plans().to_key(),
        )
        events = [started]
        events += execute_plan_iterator(
            execution_plan=plan,
            job=job,
            dagster_run=run,
            instance=instance,
            retry_mode=args.retry_mode,
            run_config=run.run_config,
        )
        return [serialize_value(event) for event in events]
