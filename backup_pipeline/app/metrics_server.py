"""`backup-pipeline metrics serve`: the exporter's HTTP server (WSGI, threads, standard library).

`/metrics` reads the fleet from PostgreSQL and answers in Prometheus' text format (gzip when the
scraper accepts it, as Prometheus does); `/healthz` answers whether PostgreSQL can be read;
`/badge/<agent>.svg`, `/badge/<agent>/<database>.svg` (and `.json`, shields.io's endpoint format) show
current statuses. A database failure, or no connection free in time, is a 503 with one line; a path
that is not UTF-8 or holds a control character a 400, an unknown one a 404; HEAD sends the headers
only. Never a traceback.

Whoever can reach the port can be slow on purpose: a fixed pool of worker threads serves the
connections (more wait in the listen backlog, not in threads), a client has `read_timeout` seconds
for each read and as long to send its whole request head, and a log line (no traceback) says when
one was dropped.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import re
import socket
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer

from prometheus_client.exposition import gzip_accepted

from backup_pipeline.core.reports import agent_id_problem, database_name_problem
from backup_pipeline.core.text import visible
from backup_pipeline.metrics.badge_render import badge_json, badge_svg
from backup_pipeline.metrics.badges import badge_for
from backup_pipeline.metrics.collector import read_families
from backup_pipeline.metrics.exposition import CONTENT_TYPE, encode
from backup_pipeline.storage.database import (
    Database,
    DatabaseBusy,
    DatabaseFailure,
    DatabaseUnavailable,
    db_error_line,
)
from backup_pipeline.storage.metrics import check_connection

log = logging.getLogger(__name__)
StartResponse = Callable[[str, list[tuple[str, str]]], Any]
_BADGE = re.compile(r"/badge/(?P<agent>[^/]+)(?:/(?P<database>[^/]+))?\.(?P<format>svg|json)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
WORKERS = 4  # requests served at once; more connections wait in the backlog
BACKLOG = 128  # connections the kernel queues while every worker is busy
READ_TIMEOUT = 10.0  # seconds a client has for each read, and to send its whole request head
_TYPES = {"svg": "image/svg+xml; charset=utf-8", "json": "application/json"}
INDEX = b"""<!doctype html><html><head><title>backup_pipeline exporter</title></head><body>
<h1>backup_pipeline exporter</h1>
<p><a href="/metrics">/metrics</a> (Prometheus), <a href="/healthz">/healthz</a>,
<code>/badge/AGENT.svg</code>, <code>/badge/AGENT/DATABASE.svg</code> (or <code>.json</code>).</p>
</body></html>
"""


GZIP_LEVEL = 1  # the text is repetitive: level 1 already shrinks it ~30 times, at a fraction of the cost


def exposition(database: Database) -> bytes:
    """The metrics once, in Prometheus' text format (`/metrics`, `metrics dump`)."""
    return encode(read_families(database))


class ExporterApp:
    """The WSGI application: routes, and one-line answers for what goes wrong."""

    def __init__(self, database: Callable[[], Database]) -> None:
        self.database = database

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        if method not in ("GET", "HEAD"):
            return _plain(start_response, "405 Method Not Allowed", "use GET\n", [("Allow", "GET, HEAD")])
        body = self.answer(environ, start_response)
        return [] if method == "HEAD" else body

    def answer(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        # PEP 3333: PATH_INFO holds the URL-decoded bytes as latin-1; names are UTF-8.
        try:
            path = (environ.get("PATH_INFO") or "/").encode("latin-1").decode("utf-8")
        except UnicodeError:
            return _plain(start_response, "400 Bad Request", "the path is not UTF-8\n")
        if _CONTROL.search(path):
            return _plain(start_response, "400 Bad Request", "the path holds a control character\n")
        try:
            if path == "/metrics":
                return self.metrics(environ, start_response)
            if path == "/healthz":
                return self.healthz(start_response)
            if path == "/":
                return _send(start_response, "200 OK", INDEX, [("Content-Type", "text/html; charset=utf-8")])
            match = _BADGE.fullmatch(path)
            if match:
                return self.badge(start_response, match)
            return _plain(start_response, "404 Not Found", "not found\n")
        except DatabaseBusy:
            reason = "PostgreSQL busy: no connection free in time, retry later"
            log.warning("%s %s: %s", environ["REQUEST_METHOD"], visible(path), reason)
            return _plain(start_response, "503 Service Unavailable", reason + "\n", [("Retry-After", "5")])
        except (DatabaseFailure, DatabaseUnavailable) as exc:
            reason = f"PostgreSQL unreachable or failing: {db_error_line(exc)}"
            log.error("%s %s: %s", environ["REQUEST_METHOD"], visible(path), reason)
            return _plain(start_response, "503 Service Unavailable", reason + "\n")
        except Exception as exc:  # a bug: one line for the client and the log (details with -v)
            log.error(
                "%s %s failed: %s: %s", environ["REQUEST_METHOD"], visible(path), type(exc).__name__, exc
            )
            log.debug("details", exc_info=True)
            return _plain(
                start_response, "500 Internal Server Error", f"internal error: {type(exc).__name__}\n"
            )

    def metrics(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        body = exposition(self.database())
        headers = [("Content-Type", CONTENT_TYPE)]
        if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING")):
            body = gzip.compress(body, compresslevel=GZIP_LEVEL)
            headers.append(("Content-Encoding", "gzip"))
        return _send(start_response, "200 OK", body, headers)

    def healthz(self, start_response: StartResponse) -> Iterable[bytes]:
        with self.database().sessions() as session:
            check_connection(session)
        return _plain(start_response, "200 OK", "ok\n")

    def badge(self, start_response: StartResponse, match: re.Match[str]) -> Iterable[bytes]:
        agent, database = match["agent"], match["database"]
        # Names no agent folder or report can have are unknown, without asking PostgreSQL.
        named = agent_id_problem(agent) is None and (
            database is None or database_name_problem(database) is None
        )
        badge = badge_for(self.database(), agent, database) if named else None
        if badge is None:
            what = "agent" if database is None else "agent or database"
            return _plain(start_response, "404 Not Found", f"unknown {what}\n")
        body = badge_svg(badge) if match["format"] == "svg" else badge_json(badge)
        headers = [("Content-Type", _TYPES[match["format"]]), ("Cache-Control", "no-cache")]
        return _send(start_response, "200 OK", body.encode(), headers)


def _send(
    start_response: StartResponse, status: str, body: bytes, headers: list[tuple[str, str]]
) -> Iterable[bytes]:
    """The response with its length, so that HEAD (the same headers, no body) says it too."""
    start_response(status, [*headers, ("Content-Length", str(len(body)))])
    return [body]


def _plain(
    start_response: StartResponse, status: str, text: str, extra: list[tuple[str, str]] | None = None
) -> Iterable[bytes]:
    headers = [("Content-Type", "text/plain; charset=utf-8"), *(extra or [])]
    return _send(start_response, status, text.encode(), headers)


class _ServerHandler(ServerHandler):
    """wsgiref's, saying in one log line (not a traceback on stderr) why an answer was not sent."""

    def log_exception(self, exc_info: Any) -> None:
        log.warning("answer to %s not sent: %s", self.request_handler.client_address[0], exc_info[1])


class _Handler(WSGIRequestHandler):
    """One connection: its request head read within the server's read timeout (each read, and the
    whole head), then the application run. No line on stderr per request (Prometheus scrapes every
    few seconds); a client dropped for its slowness is one log line."""

    server: _PooledServer

    def setup(self) -> None:
        self.timeout = self.server.read_timeout  # every read and write of the socket
        super().setup()

    def handle(self) -> None:
        give_up = threading.Timer(self.server.read_timeout, self._drop)
        give_up.start()
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.requestline = self.request_version = self.command = ""
                self.send_error(414)
                return
            if not self.parse_request():  # the error (400...) is sent
                return
        finally:
            give_up.cancel()
        handler = _ServerHandler(
            self.rfile, self.wfile, self.get_stderr(), self.get_environ(), multithread=True
        )
        handler.request_handler = self
        handler.run(self.server.get_app())

    def _drop(self) -> None:
        """The request head did not arrive in time: end the connection (its read returns at once)."""
        log.info("connection from %s dropped: no request within %s s", self.client_address[0], self.timeout)
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _PooledServer(WSGIServer):
    """A WSGI server whose connections are served by a fixed pool of threads: while every worker is
    busy the accepting thread waits, and new connections wait in the kernel's listen backlog."""

    request_queue_size = BACKLOG
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], workers: int, read_timeout: float) -> None:
        self.read_timeout = read_timeout
        self.workers = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="exporter")
        self.free = threading.BoundedSemaphore(workers)
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.free.acquire()
        self.workers.submit(self._serve, request, client_address)

    def _serve(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception as exc:  # a client gone or too slow mid-answer: its connection only
            self.handle_error(request, client_address, exc)
        finally:
            self.shutdown_request(request)
            self.free.release()

    def handle_error(self, request: Any, client_address: Any, exc: BaseException | None = None) -> None:
        log.warning("connection from %s dropped: %s", client_address[0], exc or "error")

    def server_close(self) -> None:
        super().server_close()
        self.workers.shutdown(wait=False, cancel_futures=True)


def exporter_server(
    database: Callable[[], Database],
    host: str,
    port: int,
    *,
    workers: int = WORKERS,
    read_timeout: float = READ_TIMEOUT,
) -> WSGIServer:
    """The exporter bound to host:port (0: a free port), served by `workers` threads, not yet serving."""
    server = _PooledServer((host, port), workers, read_timeout)
    server.set_app(ExporterApp(database))
    return server


def serve(
    database: Callable[[], Database],
    host: str,
    port: int,
    ready: Callable[[str], None],
    *,
    workers: int = WORKERS,
    read_timeout: float = READ_TIMEOUT,
) -> None:
    """Serve until interrupted; `ready` is told the URL once the port is bound."""
    with exporter_server(database, host, port, workers=workers, read_timeout=read_timeout) as server:
        ready(f"http://{host}:{server.server_port}")
        server.serve_forever()
