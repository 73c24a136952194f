"""Issue 20: whoever reaches the exporter's port cannot exhaust it, and every answer is one line.

1,000 slow clients used to hold 1,001 threads for a minute (no read timeout, a thread per
connection), the listen backlog was 5, HEAD returned the body, `/badge/X%00.svg` was a 500 with a
traceback, and an exhausted connection pool a 500 after 30 s. Here: the server in this process (its
threads are counted), and raw sockets where an HTTP library would hide what was sent.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest

from backup_pipeline.app.metrics_server import BACKLOG, exporter_server
from backup_pipeline.config.settings import load_settings
from backup_pipeline.storage.database import Database, serving_database
from backup_pipeline_tests.conftest import Workspace
from backup_pipeline_tests.support.metrics_fleet import DOUALA, build_fleet

WORKERS = 3
READ_TIMEOUT = 1.0


@contextmanager
def serving(workers: int = WORKERS, read_timeout: float = READ_TIMEOUT) -> Iterator[tuple[int, Database]]:
    database = serving_database(load_settings(), connections=workers, wait_seconds=read_timeout)
    server = exporter_server(lambda: database, "127.0.0.1", 0, workers=workers, read_timeout=read_timeout)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port, database
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)
        database.engine.dispose()


def raw(port: int, request: bytes, timeout: float = 30) -> tuple[str, dict[str, str], bytes]:
    """Status line, headers and every byte after them, as sent on the wire."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(request)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status, headers, body


def exporter_threads() -> int:
    return sum(t.name.startswith("exporter") for t in threading.enumerate())


@pytest.fixture
def fleet(workspace: Workspace) -> Workspace:
    build_fleet(workspace)
    return workspace


def test_slow_clients_hold_no_more_threads_than_the_workers_and_are_dropped(fleet: Workspace) -> None:
    with serving() as (port, _), ExitStack() as stack:
        silent = [stack.enter_context(socket.create_connection(("127.0.0.1", port))) for _ in range(30)]
        trickling = stack.enter_context(socket.create_connection(("127.0.0.1", port)))
        trickling.settimeout(0.05)
        deadline = time.monotonic() + 60
        dropped = False
        for byte in b"GET /metrics HTTP/1.0\r\nX-Slow: " + b"x" * 2000:  # one byte at a time
            assert exporter_threads() <= WORKERS, "a thread per connection"
            try:
                trickling.send(bytes([byte]))
                if trickling.recv(1) == b"":
                    dropped = True
                    break
            except TimeoutError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                dropped = True
                break
            assert time.monotonic() < deadline
        assert dropped, "a client sending its request head one byte at a time was never dropped"
        # every silent client is dropped after the read timeout, and a real request is answered
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=60) as response:
            assert response.read() == b"ok\n"
        for conn in silent:
            conn.settimeout(60)
            assert conn.recv(1) == b"", "a silent client was kept"
        assert exporter_threads() <= WORKERS


def test_the_listen_backlog_queues_connections_while_every_worker_is_busy(fleet: Workspace) -> None:
    with serving() as (port, _):
        listening = subprocess.run(
            ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
        ).stdout.split()
        assert int(listening[2]) == BACKLOG >= 128, listening  # Send-Q of a listening socket: its backlog


def test_head_sends_the_headers_of_get_and_no_body(fleet: Workspace) -> None:
    with serving() as (port, _):
        for path in ("/healthz", f"/badge/{DOUALA}.svg", "/metrics", "/", "/nothing"):
            get_status, get_headers, get_body = raw(port, f"GET {path} HTTP/1.0\r\n\r\n".encode())
            status, headers, body = raw(port, f"HEAD {path} HTTP/1.0\r\n\r\n".encode())
            assert status == get_status and body == b"", (path, status, body[:80])
            assert headers["content-length"] == get_headers["content-length"] == str(len(get_body)), path
            assert headers["content-type"] == get_headers["content-type"]


@pytest.mark.parametrize(
    ("path", "code", "said"),
    [
        ("/badge/X%00.svg", 400, "the path holds a control character"),
        (f"/badge/{DOUALA}/db%0a.svg", 400, "the path holds a control character"),
        ("/badge/%ff%fe.svg", 400, "the path is not UTF-8"),
        ("/badge/X.svg", 404, "unknown agent"),
        (f"/badge/{'A' * 150}_B_C.svg", 404, "unknown agent"),
        (f"/badge/{DOUALA}/{'d' * 200}.json", 404, "unknown agent or database"),
        ("/metrics/", 404, "not found"),
    ],
)
def test_bad_paths_are_400_or_404_with_one_line(
    fleet: Workspace,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    path: str,
    code: int,
    said: str,
) -> None:
    with serving() as (port, _):
        status, _, body = raw(port, f"GET {path} HTTP/1.0\r\n\r\n".encode())
    assert status.split()[1] == str(code), (path, status, body)
    assert body.decode() == said + "\n"
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err + caplog.text


def test_a_request_finding_no_free_connection_is_a_503_with_one_line(fleet: Workspace) -> None:
    with serving() as (port, database):
        held: list[Any] = [database.engine.connect() for _ in range(WORKERS)]  # the pool, all taken
        try:
            started = time.monotonic()
            with pytest.raises(urllib.error.HTTPError) as busy:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60)
            assert time.monotonic() - started < 30, "waited like a scraper's timeout"
        finally:
            for conn in held:
                conn.close()
        assert busy.value.code == 503
        assert busy.value.headers["Retry-After"] == "5"
        assert busy.value.read() == b"PostgreSQL busy: no connection free in time, retry later\n"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=60) as response:
            assert response.read() == b"ok\n", "answered again once a connection is free"
