"""The parts of dagster-celery the product builds on that it does not export (the seam with it).

dagster-celery exports its executor only; the product's executor (`celery_executor`) watches the
workers and the broker while it waits, so it drives dagster-celery's orchestration loop itself with
its own way of sending a step and waiting for it. Assumptions, checked by
`backup_pipeline_tests/defs/test_private_seams.py`:

- `core_celery_execution_loop(job_context, execution_plan, step_execution_fn)` yields the run's events;
  it builds an app with `make_app(executor.app_args())` and sends each step with
  `step_execution_fn(app, job_context, step, queue, priority, known_state)`, where `queue` is the
  step's `dagster-celery/queue` tag or the app's `task_default_queue`; it polls the returned object's
  `ready()`, then takes the step's serialized events from `get()` (or calls `revoke()` when the run is
  stopped).
- `DELEGATE_MARKER`: the marker the loop opens when it sends a step; the worker's first event closes it
  (the time a step waited in the queue, shown by the UI).
"""

from __future__ import annotations

from dagster_celery.core_execution_loop import DELEGATE_MARKER, core_celery_execution_loop

__all__ = ["DELEGATE_MARKER", "core_celery_execution_loop"]
