"""Where the steps of the product's runs execute, chosen by the settings, identically in every process.

`executor_for(settings)` is the one place the choice is made: the scan job and the drill job (the jobs
that move bytes) are built with it by `build_definitions(settings)`, so the webserver, the daemon, the
code server, the run's own process and the Celery workers all derive the same executor from the same
settings. Nothing of it is run configuration: a broker password never reaches Dagster's storage.

- `multiprocess` (the default): steps in subprocesses of the run's process (forkserver, modules
  preloaded), `max_concurrent` at a time (two for scans, `BACKUP_PIPELINE_DRILL_CONCURRENCY` for drills).
- `celery`: every step is a task on a broker (Redis or RabbitMQ) run by `backup-pipeline worker`
  processes on any number of hosts (`defs/workers.py`). dagster-celery's loop waits for each task's
  result and would wait forever for a task whose worker died, or while no worker listens; the
  executor here watches the workers and the broker as it waits, and fails the step with a reason
  instead (the run then fails and the daemon's `run_retries` re-executes it from the failed step).
  `dagster/max_runtime` (`run_tags`) bounds whatever still escapes. How many steps run at once is
  then each worker's `--concurrency`, summed over the workers.
"""

from __future__ import annotations

from typing import Any

from dagster import ExecutorDefinition, multiprocess_executor

from backup_pipeline.config.settings import Settings

MAX_RUNTIME_TAG = "dagster/max_runtime"  # run monitoring fails a run still going after this (seconds)


def executor_for(settings: Settings, *, max_concurrent: int = 2) -> ExecutorDefinition:
    """The executor of every job whose steps move bytes, for these settings (`max_concurrent`: steps
    at once under `multiprocess`; Celery workers have their own `--concurrency`)."""
    if settings.executor == "celery":
        from backup_pipeline.defs.celery_executor import celery_executor  # Celery only where used

        return celery_executor(settings)
    return multiprocess_executor.configured(
        {
            "max_concurrent": max_concurrent,
            "start_method": {"forkserver": {"preload_modules": ["backup_pipeline.definitions"]}},
        }
    )


def run_tags(settings: Settings, *, at_least_seconds: float = 0) -> dict[str, str]:
    """Tags of every run of those jobs: the runtime limit the daemon's run monitoring enforces (the
    settings' limit, or `at_least_seconds` when a job's own budget needs longer)."""
    return {MAX_RUNTIME_TAG: str(max(settings.run_max_seconds, int(at_least_seconds)))}


def broker_problem(settings: Settings) -> str | None:
    """Why the configured broker URL cannot be used (its scheme names no transport Celery knows),
    or None. Never quotes the URL, which may hold a password."""
    from kombu.transport import TRANSPORT_ALIASES

    url = settings.celery_broker.get_secret_value()
    scheme = url.partition("://")[0] if "://" in url else ""
    transport = scheme.split("+", 1)[0]
    if transport not in TRANSPORT_ALIASES:
        known = ", ".join(sorted(t for t in TRANSPORT_ALIASES if t.islower()))
        shown = f"the scheme {transport!r}" if transport.isidentifier() else "no scheme Celery knows"
        return f"BACKUP_PIPELINE_CELERY_BROKER has {shown}; Celery's transports: {known}"
    return None


def celery_app_args(settings: Settings) -> dict[str, Any]:
    """The Celery application's arguments, shared by the orchestrator and the workers (they must
    agree on the broker, the result backend and the queue)."""
    return {
        "broker": settings.celery_broker.get_secret_value(),
        "backend": settings.celery_backend_url,
        "include": [],
        "config_source": {
            "task_default_queue": settings.celery_queue,
            "worker_prefetch_multiplier": 1,
            # A worker takes a task only when a process is free, and acknowledges it once done, so
            # a worker that dies holds no task that another could have run.
            "task_acks_late": True,
            "task_track_started": True,  # a started task names its worker: see `_Watch`
            # Redis hands an unacknowledged task to another worker after this long: only after any
            # run could still be waiting for it (and a task of a finished run is dropped).
            "broker_transport_options": {
                "visibility_timeout": settings.run_max_seconds + 3600,
                "max_retries": 3,
                "interval_start": 0,
                "interval_step": 0.5,
                "interval_max": 2,
            },
            "broker_connection_timeout": 5,
            "redis_socket_connect_timeout": 5,
            "redis_socket_timeout": 15,
            "result_backend_always_retry": False,
            "result_expires": 7 * 24 * 3600,
            "worker_cancel_long_running_tasks_on_connection_loss": False,
        },
    }
