"""The suite's spreading over pytest-xdist workers (`support/scheduling.py`) does what it says: the
tests of a module sharing a module-scoped fixture run on one worker, which builds it once, and the
slow modules are handed out first. It rests on pytest-xdist's `loadgroup`, which a pytest upgrade
broke once (pytest 9.2: the groups were silently ignored, and every module fixture built twice)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from backup_pipeline_tests.support.paths import PROJECT_ROOT

CONFTEST = 'pytest_plugins = ["backup_pipeline_tests.support.scheduling"]\n'

RECORD = """
import json, os, pathlib, pytest

def record(kind, **values):
    line = {"kind": kind, "worker": os.environ.get("PYTEST_XDIST_WORKER"), **values}
    with open(os.environ["SCHEDULING_LOG"], "a") as log:
        log.write(json.dumps(line) + "\\n")
"""

SHARED = (
    RECORD
    + """
@pytest.fixture(scope="module")
def site():
    record("built")
    return object()

@pytest.mark.parametrize("n", range(6))
def test_shared(site, n):
    record("shared", n=n)
"""
)

ALONE = (
    RECORD
    + """
import time

@pytest.mark.parametrize("n", range(6))
def test_alone(n):
    time.sleep(0.2)
    record("alone", n=n)
"""
)

SLOW = (
    RECORD
    + """
pytestmark = pytest.mark.slow

def test_slow():
    record("slow")
"""
)


def test_a_shared_fixture_is_built_once_on_one_worker_and_slow_modules_go_first(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: slow\n")
    (tmp_path / "test_shared.py").write_text(SHARED)
    (tmp_path / "test_alone.py").write_text(ALONE)
    (tmp_path / "test_slow.py").write_text(SLOW)
    log = tmp_path / "log.jsonl"
    env = os.environ | {"PYTHONPATH": str(PROJECT_ROOT), "SCHEDULING_LOG": str(log)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "randomly"]
    command += ["-n", "2", "--dist", "loadgroup", "--no-loadscope-reorder", str(tmp_path)]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [json.loads(line) for line in log.read_text().splitlines()]

    assert [line["kind"] for line in lines].count("built") == 1, lines  # once: all its tests on one worker
    assert len({line["worker"] for line in lines if line["kind"] in ("built", "shared")}) == 1, lines
    assert {line["worker"] for line in lines} == {"gw0", "gw1"}, lines  # the others spread over both
    # handed out first: the slow module and the grouped one start at once, the rest after them
    firsts = {w: next(line["kind"] for line in lines if line["worker"] == w) for w in ("gw0", "gw1")}
    assert sorted(firsts.values()) == ["built", "slow"], lines
