"""Progress on long work (a large scan, a simulation, restore drills), for people at a terminal.

`progress(description, total)` yields a `Task` to advance; on anything but a terminal it shows
nothing at all, so scripts and logs see exactly the command's output. The bars are transient: they
disappear when the work is done, leaving the tables that follow.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from backup_pipeline.app.render import on_terminal


class Task(Protocol):
    def advance(self, steps: int = 1) -> None: ...
    def update(self, *, total: int | None = None, description: str | None = None) -> None: ...


class Bars(Protocol):
    def task(self, description: str, total: int | None = None) -> Task: ...


class _Silent:
    def advance(self, steps: int = 1) -> None:
        pass

    def update(self, *, total: int | None = None, description: str | None = None) -> None:
        pass

    def task(self, description: str, total: int | None = None) -> Task:
        return self


class _Bar:
    def __init__(self, bars: Progress, description: str, total: int | None) -> None:
        self._bars = bars
        self._id = bars.add_task(description, total=total)

    def advance(self, steps: int = 1) -> None:
        self._bars.advance(self._id, steps)

    def update(self, *, total: int | None = None, description: str | None = None) -> None:
        self._bars.update(self._id, total=total, description=description)


class _Bars:
    def __init__(self, bars: Progress) -> None:
        self._bars = bars

    def task(self, description: str, total: int | None = None) -> Task:
        return _Bar(self._bars, description, total)


@contextmanager
def progress_bars() -> Iterator[Bars]:
    """Several bars at once (one per task added), shown while the block runs."""
    if not on_terminal():
        yield _Silent()
        return
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(file=sys.stdout), transient=True) as bars:
        yield _Bars(bars)


@contextmanager
def progress(description: str, total: int | None = None) -> Iterator[Task]:
    """One bar, shown while the block runs."""
    with progress_bars() as bars:
        yield bars.task(description, total)
