"""The CLI as people see it: run in a real pseudo-terminal of a given width."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

CLI = Path(sys.executable).parent / "backup-pipeline"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def on_terminal(
    *args: str,
    columns: int = 120,
    timeout: float = 240,
    env: dict[str, str] | None = None,
    expect_ok: bool = True,
) -> str:
    """What `backup-pipeline ARGS` writes to a pseudo-terminal `columns` wide (escape codes kept)."""
    master, slave = pty.openpty()
    environment = os.environ | {"COLUMNS": str(columns), "LINES": "50", "TERM": "xterm-256color"}
    environment.pop("NO_COLOR", None)
    environment.pop("FORCE_COLOR", None)
    environment |= env or {}
    process = subprocess.Popen(
        [str(CLI), *args], stdin=slave, stdout=slave, stderr=slave, env=environment, start_new_session=True
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            elif process.poll() is not None:
                break
        else:
            pytest.fail(f"backup-pipeline {' '.join(args)} did not finish within {timeout} s")
        code = process.wait(timeout=30)
        if expect_ok:
            assert code == 0, b"".join(chunks).decode(errors="replace")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 9)
        os.close(master)
    return b"".join(chunks).decode().replace("\r\n", "\n")


def visible(text: str) -> list[str]:
    """The lines a person reads (escape codes removed)."""
    return [ANSI.sub("", line) for line in text.splitlines()]
