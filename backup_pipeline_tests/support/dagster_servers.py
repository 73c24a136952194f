"""A real Dagster webserver and daemon for end-to-end tests: processes, readiness, GraphQL reads.

Each process runs in its own process group (stopped with everything it started), logs to a file
under its DAGSTER_HOME, and is copied to test-artifacts/ when stopped, for whoever reads a CI failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from backup_pipeline_tests.support.paths import PROJECT_ROOT

PROJECT = PROJECT_ROOT
ARTIFACTS = PROJECT / "test-artifacts"
BIN = Path(sys.executable).parent
JOB = "backup_scan"
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}
T = TypeVar("T")


@dataclass
class Servers:
    """dagster-webserver and dagster-daemon, each in its own process group, logging to files."""

    port: int
    home: Path
    env: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    artifacts: str = "e2e"  # the prefix of the logs copied to test-artifacts/

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self, name: str) -> Path:
        return self.home / f"{name}.log"

    def start(self, name: str, *args: str) -> None:
        with self.log(name).open("wb") as out:
            self.processes[name] = subprocess.Popen(
                [str(BIN / name), *args, "-w", str(PROJECT / "workspace.yaml")],
                cwd=self.home,  # not the checkout: Dagster would load a .env there over `env`
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its code servers and run workers share its process group
            )

    def stop(self) -> None:
        for process in self.processes.values():
            signal_group(process, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                signal_group(process, signal.SIGKILL)
                process.wait(timeout=10)
            signal_group(process, signal.SIGKILL)  # whatever of its group outlived it
        ARTIFACTS.mkdir(exist_ok=True)
        for name in self.processes:  # kept for whoever reads a CI failure
            shutil.copyfile(self.log(name), ARTIFACTS / f"{self.artifacts}-{name}.log")

    def tails(self, lines: int = 120) -> str:
        parts = []
        for name in self.processes:
            text = self.log(name).read_text(errors="replace").splitlines()
            noise = ("BetaWarning", "return SensorDefinition")
            kept = [line for line in text if not any(n in line for n in noise)]
            parts.append(f"----- last {lines} lines of {name} -----\n" + "\n".join(kept[-lines:]))
        return "\n".join(parts)

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                pytest.fail(f"{name} exited with code {process.returncode}\n{self.tails()}")

    def dagster(self, *args: str, timeout: float = 180) -> str:
        """The `dagster` CLI on this instance; what it said (it must succeed)."""
        done = subprocess.run(
            [str(BIN / "dagster"), *args],
            cwd=self.home,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            payload = json.loads(response.read())
        assert not payload.get("errors"), f"GraphQL errors: {payload['errors']}"
        return payload["data"]

    def wait(self, what: str, probe: Callable[[], tuple[bool, T]], timeout: float) -> T:
        """Poll `probe` (done, state) until done; fail with the state and the logs' tails after `timeout`."""
        deadline = time.monotonic() + timeout
        state: Any = None
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                done, state = probe()
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                done, state = False, f"not reachable: {exc}"
            if done:
                return state
            time.sleep(1.0)
        pytest.fail(
            f"timed out after {timeout:.0f} s waiting for {what}; last state: {state}\n{self.tails()}"
        )


def signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)  # the group this test created for the process (start_new_session)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


WORKSPACE_QUERY = """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
DAEMONS_QUERY = """{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }"""
NEEDED_DAEMONS = {"SENSOR", "SCHEDULER", "QUEUED_RUN_COORDINATOR", "BACKFILL"}


def wait_ready(servers: Servers) -> None:
    def server_info() -> tuple[bool, str]:
        with urllib.request.urlopen(f"{servers.url}/server_info", timeout=5) as response:
            return response.status == 200, response.read().decode()

    servers.wait("the webserver's /server_info", server_info, 120)

    def location_loaded() -> tuple[bool, Any]:
        entries = servers.graphql(WORKSPACE_QUERY)["workspaceOrError"]["locationEntries"]
        errors = [e for e in entries if e["locationOrLoadError"]["__typename"] == "PythonError"]
        assert not errors, f"the code location failed to load: {errors}"
        loaded = [e["name"] for e in entries if e["loadStatus"] == "LOADED"]
        return loaded == ["backup_pipeline"], entries

    servers.wait("the backup_pipeline code location", location_loaded, 120)

    def daemons_healthy() -> tuple[bool, Any]:
        statuses = servers.graphql(DAEMONS_QUERY)["instance"]["daemonHealth"]["allDaemonStatuses"]
        healthy = {s["daemonType"] for s in statuses if s["healthy"]}
        return healthy >= NEEDED_DAEMONS, statuses

    servers.wait("a healthy dagster-daemon", daemons_healthy, 120)


RUNS_QUERY = """query Runs($filter: RunsFilter) { runsOrError(filter: $filter) {
  __typename ... on Runs { results { runId status tags { key value } } }
  ... on PythonError { message } } }"""


@dataclass
class Run:
    run_id: str
    status: str
    tags: dict[str, str]

    @property
    def partition(self) -> str | None:
        return self.tags.get("dagster/partition")


def runs(servers: Servers) -> list[Run]:
    data = servers.graphql(RUNS_QUERY, filter={"pipelineName": JOB})["runsOrError"]
    assert data["__typename"] == "Runs", data
    return [Run(r["runId"], r["status"], {t["key"]: t["value"] for t in r["tags"]}) for r in data["results"]]


def stop_automation(servers: Servers, kind: str, name: str) -> None:
    """Stop a schedule or sensor, so that only the runs a test launches scan."""
    servers.dagster(kind, "stop", name, "-w", str(PROJECT / "workspace.yaml"))
