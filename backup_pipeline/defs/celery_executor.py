"""The Celery executor of the product's jobs: dagster-celery's orchestration loop, sending each step
to the job's queue (scans' or drills', `celery_app`) and watching the workers and the broker.

dagster-celery's loop waits for each step's result and would wait forever for a task whose worker
died, or while no worker listens or the broker is gone. This executor gives its loop results that
also end when the step's worker stops answering, when no worker consumes the queue, or when the
broker stays unreachable: the step is then reported as the multiprocess executor reports a crashed
subprocess (an engine event, then a failure or a retry under the op's retry policy), and the run
goes on to its end. Chosen by `executors.executor_for(settings)`. What it needs of Dagster and
dagster-celery that they do not export comes from `private_dagster` and `private_dagster_celery`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from celery import Celery
from dagster import (
    DagsterEvent,
    Executor,
    ExecutorDefinition,
    InitExecutorContext,
    deserialize_value,
    executor,
    multiple_process_executor_requirements,
    serialize_value,
)

from backup_pipeline.config.settings import Settings
from backup_pipeline.defs.celery_app import EXECUTE_STEP_TASK, celery_app, celery_app_args
from backup_pipeline.defs.private_dagster import (
    EngineEventData,
    ExecuteStepArgs,
    RetryMode,
    SerializableErrorInfo,
    get_retries_config,
)
from backup_pipeline.defs.private_dagster_celery import core_celery_execution_loop
from backup_pipeline.storage.database import redact_text

# How often the run's process looks at the workers while it waits, and how long a worker may stay
# silent (or the broker unreachable) before the step it runs is given up.
WATCH_SECONDS = 5.0
SILENCE_SECONDS = 30.0
# Workers may still be starting when a run begins: how long a step may wait with no worker at all.
NO_WORKER_SECONDS = 90.0


def celery_executor(settings: Settings, queue: str) -> ExecutorDefinition:
    """The executor `celery`, for these settings, sending steps to `queue` (nothing of them goes to
    run configuration)."""

    @executor(
        name="celery",
        config_schema={"retries": get_retries_config()},
        requirements=multiple_process_executor_requirements(),
    )
    def celery(init_context: InitExecutorContext) -> Executor:
        retries = RetryMode.from_config(init_context.executor_config["retries"])
        return WatchedCeleryExecutor(settings, retries, queue)

    return celery


class StepLost(RuntimeError):
    """A step whose result will never come: its worker died, or the broker is gone."""


class WatchedCeleryExecutor(Executor):
    """Steps sent as Celery tasks to the workers through dagster-celery's orchestration loop, whose
    waits end when the step's worker or the broker is lost."""

    def __init__(self, settings: Settings, retries: RetryMode, queue: str) -> None:
        self.settings, self._retries, self.queue = settings, retries, queue
        self.broker_shown = redact_text(settings.celery_broker.get_secret_value())

    @property
    def retries(self) -> RetryMode:
        return self._retries

    def app_args(self) -> dict[str, Any]:
        """What dagster-celery's loop builds its application from: its default queue is this job's."""
        args = celery_app_args(self.settings)
        return args | {"config_source": args["config_source"] | {"task_default_queue": self.queue}}

    def execute(self, plan_context: Any, execution_plan: Any) -> Any:
        watch = _Watch(celery_app(self.settings), self.queue, self.broker_shown)
        try:
            yield from core_celery_execution_loop(
                plan_context, execution_plan, step_execution_fn=watch.submit
            )
        finally:
            watch.stop()


def step_args(context: Any, step: Any, known_state: Any) -> str:
    """What a worker needs to execute one step of the run (`workers.execute_step`), serialized."""
    return serialize_value(
        ExecuteStepArgs(
            job_origin=context.reconstructable_job.get_python_origin(),
            run_id=context.dagster_run.run_id,
            step_keys_to_execute=[step.key],
            instance_ref=context.instance.get_ref(),
            retry_mode=context.executor.retries.for_inner_plan(),
            known_state=known_state,
        )
    )


def parse_step_args(text: str) -> Any:
    return deserialize_value(text, as_type=ExecuteStepArgs)


class _Watch:
    """The workers consuming one run's queue, looked at every `WATCH_SECONDS` by a thread (asking
    the workers takes as long as their replies may take) while the run waits for results."""

    def __init__(self, app: Celery, queue: str, broker: str) -> None:
        self.app, self.queue, self.broker = app, queue, broker
        self.workers: set[str] = set()  # consuming the queue at the last look
        self.last_seen: dict[str, float] = {}
        self.broker_lost_since: float | None = None
        self.no_worker_since: float | None = None
        self.error: str | None = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def submit(self, _loop_app: Any, context: Any, step: Any, queue: str, priority: int, known: Any) -> Any:
        """Send one step to `queue` (the job's, unless the op's `dagster-celery/queue` tag names
        another) on this deployment's application, not the loop's (which declares dagster-celery's
        queue only)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="celery-watch", daemon=True)
            self._thread.start()
        try:
            result = self.app.send_task(
                EXECUTE_STEP_TASK,
                kwargs={
                    "step_args": step_args(context, step, known),
                    "executable_dict": context.reconstructable_job.to_dict(),
                },
                queue=queue,
                routing_key=queue,
                priority=priority,
            )
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
