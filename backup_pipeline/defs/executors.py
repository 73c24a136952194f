"""Where the steps of the product's runs execute, chosen by the settings, identically in every process.

`executor_for(settings)` is the one place the choice is made: the scan job (and every job that moves
bytes) is built with it by `build_definitions(settings)`, so the webserver, the daemon, the code
server, the run's own process and the Celery workers all derive the same executor from the same
settings. Nothing of it is run configuration: a broker password never reaches Dagster's storage.

- `multiprocess` (the default): steps in subprocesses of the run's process (forkserver, modules
  preloaded), two at a time.
- `celery`: every step is a task on a broker (Redis or RabbitMQ) run by `backup-pipeline worker`
  processes on any number of hosts (`defs/workers.py`). dagster-celery's loop waits for each task's
  result and would wait forever for a task whose worker died, or while no worker listens; the
  executor here watches the workers and the broker as it waits, and fails the step with a reason
  instead (the run then fails and the daemon's `run_retries` re-executes it from the failed step).
  `dagster/max_runtime` (`run_tags`) bounds whatever still escapes.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from celery import Celery
from dagster import (
    Executor,
    ExecutorDefinition,
    InitExecutorContext,
    executor,
    multiple_process_executor_requirements,
    multiprocess_executor,
)
from dagster._core.events import DagsterEvent, EngineEventData
from dagster._core.execution.retries import RetryMode, get_retries_config
from dagster._serdes import serialize_value
from dagster._utils.error import SerializableErrorInfo
from dagster_celery.core_execution_loop import core_celery_execution_loop
from dagster_celery.executor import CeleryExecutor, _submit_task

from backup_pipeline.config.settings import Settings
from backup_pipeline.storage.database import redact_text

MAX_RUNTIME_TAG = "dagster/max_runtime"  # run monitoring fails a run still going after this (seconds)
# How often the orchestrator looks at the workers while it waits, and how long a worker may stay
# silent (or the broker unreachable) before the step it runs is given up.
WATCH_SECONDS = 5.0
SILENCE_SECONDS = 30.0
# Workers may still be starting when a run begins: how long a step may wait with no worker at all.
NO_WORKER_SECONDS = 90.0


def executor_for(settings: Settings) -> ExecutorDefinition:
    """The executor of every job whose steps move bytes, for these settings."""
    if settings.executor == "celery":
        return _celery_executor(settings)
    return multiprocess_executor.configured(
        {
            "max_concurrent": 2,
            "start_method": {"forkserver": {"preload_modules": ["backup_pipeline.definitions"]}},
        }
    )


def run_tags(settings: Settings) -> dict[str, str]:
    """Tags of every run of those jobs: the runtime limit the daemon's run monitoring enforces."""
    return {MAX_RUNTIME_TAG: str(settings.run_max_seconds)}


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


def _celery_executor(settings: Settings) -> ExecutorDefinition:
    @executor(
        name="celery",
        config_schema={"retries": get_retries_config()},
        requirements=multiple_process_executor_requirements(),
    )
    def celery(init_context: InitExecutorContext) -> Executor:
        retries = RetryMode.from_config(init_context.executor_config["retries"])
        return WatchedCeleryExecutor(settings, retries)

    return celery


class StepLost(RuntimeError):
    """A step whose result will never come: its worker died, or the broker is gone."""


class WatchedCeleryExecutor(CeleryExecutor):
    """dagster-celery's executor, whose waits end when the step's worker or the broker is lost."""

    def __init__(self, settings: Settings, retries: RetryMode) -> None:
        args = celery_app_args(settings)
        super().__init__(
            retries=retries,
            broker=args["broker"],
            backend=args["backend"],
            include=args["include"],
            config_source=args["config_source"],
        )
        self.queue = settings.celery_queue
        self.broker_shown = redact_text(args["broker"])

    def execute(self, plan_context: Any, execution_plan: Any) -> Any:
        watch = _Watch(self.queue, self.broker_shown)
        try:
            yield from core_celery_execution_loop(
                plan_context, execution_plan, step_execution_fn=watch.submit
            )
        finally:
            watch.stop()


class _Watch:
    """The workers consuming one run's queue, looked at every `WATCH_SECONDS` by a thread (asking
    the workers takes as long as their replies may take) while the run waits for results."""

    def __init__(self, queue: str, broker: str) -> None:
        self.queue, self.broker = queue, broker
        self.app: Celery | None = None
        self.workers: set[str] = set()  # consuming the queue at the last look
        self.last_seen: dict[str, float] = {}
        self.broker_lost_since: float | None = None
        self.no_worker_since: float | None = None
        self.error: str | None = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def submit(self, app: Celery, context: Any, step: Any, queue: str, priority: int, known: Any) -> Any:
        if self._thread is None:
            self.app = app
            self._thread = threading.Thread(target=self._run, name="celery-watch", daemon=True)
            self._thread.start()
        try:
            result = _submit_task(app, context, step, queue, priority, known)
        except Exception as exc:  # kombu's OperationalError, a refused connection, a timeout
            raise StepLost(
                f"cannot send step {step.key} to the Celery broker {self.broker}: {redact_text(str(exc))}"
            ) from None
        return _WatchedResult(result, self, context, step, known)

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._look()
            self._stopped.wait(WATCH_SECONDS)

    def _look(self) -> None:
        assert self.app is not None
        now = time.monotonic()
        try:
            replies = self.app.control.inspect(timeout=2.0).active_queues() or {}
        except Exception as exc:  # the broker is down: no worker can be reached either
            self.broker_lost_since = self.broker_lost_since or now
            if now - self.broker_lost_since >= SILENCE_SECONDS:
                self.error = (
                    f"the Celery broker {self.broker} has been unreachable for "
                    f"{now - self.broker_lost_since:.0f} s: {redact_text(str(exc))}"
                )
            return
        self.broker_lost_since = None
        workers = {name for name, queues in replies.items() if any(q["name"] == self.queue for q in queues)}
        now = time.monotonic()
        for name in workers:
            self.last_seen[name] = now
        self.workers = workers
        self.no_worker_since = None if workers else (self.no_worker_since or now)

    def lost(self, result: Any) -> str | None:
        """Why this step's result will never come, if it will not."""
        if self.error:
            return self.error
        now = time.monotonic()
        state, info = result.state, result.info
        if state == "STARTED" and isinstance(info, dict) and (worker := info.get("hostname")):
            silent = now - self.last_seen.setdefault(worker, now)
            if worker not in self.workers and silent >= SILENCE_SECONDS:
                return f"Celery worker {worker} stopped answering ({silent:.0f} s) while running the step"
        if state == "PENDING" and self.no_worker_since is not None:
            waited = now - self.no_worker_since
            if waited >= NO_WORKER_SECONDS:
                return (
                    f"no Celery worker has consumed queue {self.queue!r} on {self.broker} for "
                    f"{waited:.0f} s: start `backup-pipeline worker` with the same settings"
                )
        return None


@dataclass
class _WatchedResult:
    """A step's Celery result as dagster-celery's loop uses it (`ready`, `get`, `revoke`). A lost step
    is reported as the multiprocess executor reports a crashed subprocess: an engine event, then a
    step failure (or a retry, under the op's retry policy), so the run goes on to its end."""

    result: Any
    watch: _Watch
    context: Any  # the run's orchestration context
    step: Any
    known_state: Any
    reason: str | None = None
    checked_at: float = 0.0

    def ready(self) -> bool:
        try:
            if self.result.ready():
                return True
            if time.monotonic() - self.checked_at >= WATCH_SECONDS:
                self.checked_at = time.monotonic()
                self.reason = self.watch.lost(self.result)
        except Exception as exc:  # the result backend (often the broker itself) is unreachable
            self.watch.broker_lost_since = self.watch.broker_lost_since or time.monotonic()
            if time.monotonic() - self.watch.broker_lost_since < SILENCE_SECONDS:
                return False
            self.reason = f"the Celery result backend is unreachable: {redact_text(str(exc))}"
        return self.reason is not None

    def get(self) -> Any:
        if self.reason is None:
            return self.result.get()
        step_context = self.context.for_step(self.step)
        error = SerializableErrorInfo(
            message=f"step {self.step.key}: {self.reason}\n", stack=[], cls_name=StepLost.__name__
        )
        lost = DagsterEvent.engine_event(
            step_context,
            f"Celery executor: step {self.step.key} lost: {self.reason}",
            EngineEventData.engine_error(error),
        )
        outcome = self.context.executor.log_failure_or_retry_event_after_error(
            step_context, error, self.known_state
        )
        return [serialize_value(lost), serialize_value(outcome)]

    def revoke(self) -> None:
        try:
            self.result.revoke()
        except Exception:  # revoking needs the broker; a lost broker has nothing to revoke anyway
            return
