"""A real Prometheus (Debian's package) for tests: started on a free 127.0.0.1 port with a temporary
storage path and a one-second scrape and evaluation interval, queried through its HTTP API, stopped
with its process group."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from backup_pipeline_tests.support.paths import PROJECT_ROOT
from backup_pipeline_tests.support.receivers import free_port

PROMETHEUS = Path("/usr/bin/prometheus")
PROMTOOL = Path("/usr/bin/promtool")
RULES = PROJECT_ROOT / "deploy" / "prometheus" / "backup_pipeline.rules.yml"
T = TypeVar("T")


def require(binary: Path) -> str:
    """Debian's `prometheus` package provides both binaries; CI installs it (.ci/run)."""
    if not binary.exists():
        pytest.fail(f"{binary} is absent: apt-get install prometheus (.ci/run installs it in CI)")
    return str(binary)


class Prometheus:
    def __init__(self, port: int, log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = log

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=30) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector: [{"metric": {labels}, "value": [time, "text"]}, ...]."""
        return self.api("query", query=expr)["result"]

    def wait(self, what: str, probe: Callable[[], T | None], timeout: float = 60) -> T:
        return wait_until(f"Prometheus: {what}", probe, self.log, timeout)


def wait_until(what: str, probe: Callable[[], T | None], log: Path, timeout: float = 60) -> T:
    """`probe()`'s first truthy answer (connection errors count as not yet), or the test fails with
    the end of `log`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with suppress(OSError):
            found = probe()
            if found:
                return found
        time.sleep(0.5)
    pytest.fail(f"{what} not seen within {timeout:.0f} s\n{log.read_text()[-4000:]}")


@contextmanager
def prometheus(work: Path, targets: list[str], rule_files: Sequence[Path] = ()) -> Iterator[Prometheus]:
    """Prometheus scraping `targets` (host:port, job `backup_pipeline`) every second."""
    binary = require(PROMETHEUS)
    work.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(r) for r in rule_files],
        "scrape_configs": [{"job_name": "backup_pipeline", "static_configs": [{"targets": targets}]}],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = work / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            cwd=work,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Prometheus(port, log)
    try:
        server.wait("/-/ready", lambda: _ready(server, process))
        yield server
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        shutil.rmtree(work / "data", ignore_errors=True)


def _ready(server: Prometheus, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        pytest.fail(f"prometheus exited with {process.returncode}:\n{server.log.read_text()[-4000:]}")
    with urllib.request.urlopen(f"{server.url}/-/ready", timeout=5) as response:
        return response.status == 200
