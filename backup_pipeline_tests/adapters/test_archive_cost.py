"""Issue 20: archiving a report does the same file-system work whatever the archive already holds.

It used to list the whole `log/_archive/` for every report (97 ms each with 100,000 archived files:
an agent's 25,000 junk reports made a 157 s scan). Counted here call by call, not timed (the timing
is `benchmarks/archive.py`): the calls made to archive one report, and the entries they read, are
the same with 0 and with 2,000 archived reports, and no folder is listed.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from backup_pipeline.adapters import deposit
from backup_pipeline.adapters.deposit import AgentFolder, archive_report, holds_report

AGENT = "SIRPACAM_DOUALA_NEWBELL"
NAME = f"20251121_130500_{AGENT}.json"


class Counting:
    """Stands in for the deposit module's `os`, counting the calls by function."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        real = getattr(os, name)
        if not callable(real):
            return real

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return real(*args, **kwargs)

        return counted


def archive_one(tmp_path: Path, archived: int, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    folder = tmp_path / str(archived) / AGENT
    archive = folder / "log" / "_archive"
    archive.mkdir(parents=True)
    for n in range(archived):
        (archive / f"2024{n:010d}_{AGENT}.json").write_bytes(b"{}")
    (archive / NAME).write_bytes(b"an older report of the same name")  # one clash, in both cases
    content = b'{"agent_id": "%s"}' % AGENT.encode()
    (folder / "log" / NAME).write_bytes(content)
    digest = hashlib.sha256(content).hexdigest()
    agent = AgentFolder(AGENT, folder)
    counting = Counting()
    monkeypatch.setattr(deposit, "os", counting)
    try:
        assert holds_report(agent, NAME, NAME, digest, archived=False)
        assert archive_report(agent, NAME, digest) == agent.archive_dir / NAME.replace(".json", ".dup1.json")
    finally:
        monkeypatch.setattr(deposit, "os", os)
    return counting.calls


def test_archiving_a_report_costs_the_same_calls_with_an_empty_or_a_full_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = archive_one(tmp_path, 0, monkeypatch)
    full = archive_one(tmp_path, 2000, monkeypatch)
    assert full == empty
    assert not {"listdir", "scandir"} & set(full), "a folder was listed"
