"""Where the steps of the product's runs execute, chosen by the settings, identically in every process.

`executor_for(settings)` is the one place the choice is made: the scan job and the drill job (the jobs
that move bytes) are built with it by `build_definitions(settings)`, so the webserver, the daemon, the
code server, the run's own process and the Celery workers all derive the same executor from the same
settings. Nothing of it is run configuration: a broker password never reaches Dagster's storage.

- `multiprocess` (the default): steps in subprocesses of the run's process (forkserver, modules
  preloaded), `max_concurrent` at a time (two for scans, `BACKUP_PIPELINE_DRILL_CONCURRENCY` for drills).
- `celery`: every step is a task on a broker (Redis or RabbitMQ) run by `backup-pipeline worker`
  processes on any number of hosts (`defs/workers.py`): scan steps on `BACKUP_PIPELINE_CELERY_QUEUE`,
  drill steps on `BACKUP_PIPELINE_CELERY_DRILL_QUEUE` (`defs/celery_app.py`). dagster-celery's loop
  waits for each task's result and would wait forever for a task whose worker died, or while no
  worker listens; the executor here watches the workers and the broker as it waits, and fails the
  step with a reason instead (the run then fails and the daemon's `run_retries` re-executes it from
  the failed step). `dagster/max_runtime` (`run_tags`) bounds whatever still escapes. How many steps
  run at once is then each worker's `--concurrency`, summed over the workers.
"""

from __future__ import annotations

from dagster import ExecutorDefinition, multiprocess_executor

from backup_pipeline.config.settings import Settings

MAX_RUNTIME_TAG = "dagster/max_runtime"  # run monitoring fails a run still going after this (seconds)


def executor_for(settings: Settings, *, max_concurrent: int = 2, drills: bool = False) -> ExecutorDefinition:
    """The executor of every job whose steps move bytes, for these settings (`max_concurrent`: steps
    at once under `multiprocess`; Celery workers have their own `--concurrency`). Under `celery`, the
    drill job's steps go to the drill queue, the scan job's to the scan queue."""
    if settings.executor == "celery":
        # Celery and dagster-celery are imported only by the processes that use them.
        from backup_pipeline.defs.celery_executor import celery_executor

        return celery_executor(settings, settings.celery_drill_queue if drills else settings.celery_queue)
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
