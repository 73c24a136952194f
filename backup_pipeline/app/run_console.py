"""What an in-process run (`scan`, `drill`) prints on the terminal while it runs.

Dagster's own console logger prints a failed step with its stack trace and every step abandoned after
it, dozens of lines, before the command says in one line why the run failed. The command line's
console keeps the run's warnings (a skipped folder, a notification that did not go out) and leaves
errors to that one line; `-v` shows everything Dagster logs, as its own console would.
"""

from __future__ import annotations

import logging
import sys

from dagster import Field, InitLoggerContext, JobDefinition, logger

CONSOLE = "console"
_FORMAT = "%(asctime)s - dagster - %(levelname)s - %(message)s"


class _BelowErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


@logger(
    config_schema={
        "log_level": Field(str, default_value="WARNING"),
        "errors": Field(bool, default_value=False),
    },
    description="The command line's console: the run's warnings; its errors only when asked (-v).",
)
def command_line_console(context: InitLoggerContext) -> logging.Logger:
    config = context.logger_config
    console = logging.Logger("backup_pipeline.run", logging.getLevelName(config["log_level"].upper()))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%Y-%m-%d %H:%M:%S %z"))
    if not config["errors"]:
        handler.addFilter(_BelowErrors())
    console.addHandler(handler)
    return console


def with_console(job: JobDefinition) -> JobDefinition:
    """The same job, printing through the command line's console."""
    return job.with_logger_defs({**job.loggers, CONSOLE: command_line_console})


def console_config(log_level: str) -> dict[str, object]:
    """The console's part of a run's `loggers` configuration: errors shown when the level is verbose."""
    return {CONSOLE: {"config": {"log_level": log_level, "errors": log_level in {"DEBUG", "INFO"}}}}
