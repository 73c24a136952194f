"""The Celery application of a deployment, the same in the run's process (which sends steps) and in the
workers (which run them): broker, result backend, queues and the one task, from the settings.

Two queues: scan steps go to `BACKUP_PIPELINE_CELERY_QUEUE`, drill steps to
`BACKUP_PIPELINE_CELERY_DRILL_QUEUE`, so that hours of restores never sit in front of the 15-minute
scans. Each queue is declared with its own name as routing key, so a step sent to a queue reaches
the workers consuming it whatever the transport (Redis or RabbitMQ).
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Queue

from backup_pipeline.config.settings import Settings

EXECUTE_STEP_TASK = "execute_plan"  # the task's name, as dagster-celery's workers also call it
MAX_PRIORITY = 10  # dagster-celery's step priorities (`dagster-celery/priority` tags) go up to this


def celery_queues(settings: Settings) -> list[str]:
    """The queues of this deployment: scans', then drills' (one when both are given the same name)."""
    return list(dict.fromkeys([settings.celery_queue, settings.celery_drill_queue]))


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
    agree on the broker, the result backend and the queues)."""
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
            "task_track_started": True,  # a started task names its worker: see `celery_executor`
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


def celery_app(settings: Settings) -> Celery:
    """The application itself (no connection is opened until a task is sent or consumed)."""
    args = celery_app_args(settings)
    app = Celery("backup_pipeline", broker=args["broker"], backend=args["backend"], include=args["include"])
    app.conf.update(args["config_source"])
    app.conf.task_queues = [
        Queue(name, routing_key=name, queue_arguments={"x-max-priority": MAX_PRIORITY})
        for name in celery_queues(settings)
    ]
    app.conf.task_queue_max_priority = MAX_PRIORITY
    return app
