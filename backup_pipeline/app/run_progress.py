"""A Dagster run's steps as a progress bar, for runs executed in this process (`scan`, and any job the
command line runs in process).

The job gets one more logger: Dagster hands every structured event of the run to its loggers, so the
bar advances as each step ends, and grows as a step yields dynamic outputs (one mapped step each, the
scan's evaluation batches) — no polling of the event log.
"""

from __future__ import annotations

import logging
from typing import Any

from dagster import DagsterEvent, DagsterEventType, InitLoggerContext, JobDefinition, logger

from backup_pipeline.app.progress import Bars, Task

LOGGER = "step_progress"
_ENDED = {DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE, DagsterEventType.STEP_SKIPPED}


class RunProgress:
    """Shows the steps of the runs it is given, one bar per run."""

    def __init__(self, bars: Bars) -> None:
        self._bars = bars
        self._handler = _StepHandler()

    def job(self, job: JobDefinition) -> JobDefinition:
        """The same job, reporting its steps here."""
        handler = self._handler

        @logger(description="Advances the command line's progress bar as steps end.")
        def step_progress(_: InitLoggerContext) -> logging.Logger:
            reporter = logging.Logger("backup_pipeline.step_progress", logging.DEBUG)
            reporter.addHandler(handler)
            return reporter

        return job.with_logger_defs({**job.loggers, LOGGER: step_progress})

    def run_config(self) -> dict[str, Any]:
        """What a run's configuration needs for the logger to be used."""
        return {LOGGER: {}}

    def start(self, description: str, steps: int) -> None:
        """A new run starts: a bar of `steps` steps (more as dynamic outputs appear)."""
        self._handler.task = self._bars.task(description, steps)
        self._handler.description = description
        self._handler.total = steps
        self._handler.mapped = 0


class _StepHandler(logging.Handler):
    task: Task | None = None
    description = ""
    total = 0
    mapped = 0

    def emit(self, record: logging.LogRecord) -> None:
        event = (getattr(record, "dagster_meta", None) or {}).get("dagster_event")
        if not isinstance(event, DagsterEvent) or self.task is None:
            return
        kind = event.event_type
        if kind == DagsterEventType.STEP_START:
            self.task.update(description=f"{self.description}: {event.step_key}")
        elif kind in _ENDED:
            self.task.advance()
        elif kind == DagsterEventType.STEP_OUTPUT and _mapping_key(event):
            # Each dynamic output is one mapped step; the mapped node itself was counted once.
            self.mapped += 1
            if self.mapped > 1:
                self.total += 1
                self.task.update(total=self.total)


def _mapping_key(event: DagsterEvent) -> str | None:
    handle = getattr(event.event_specific_data, "step_output_handle", None)
    return getattr(handle, "mapping_key", None)
