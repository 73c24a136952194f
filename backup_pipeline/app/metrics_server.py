"""`backup-pipeline metrics serve`: the exporter's HTTP server (WSGI, threads, standard library).

`/metrics` reads the fleet from PostgreSQL and answers in Prometheus' text format (gzip when the
scraper accepts it, as Prometheus does); `/healthz` answers whether PostgreSQL can be read;
`/badge/<agent>.svg`, `/badge/<agent>/<database>.svg` (and `.json`, shields.io's endpoint format) show
current statuses. A database failure is a 503 with one line, never a traceback.
"""

from __future__ import annotations

import gzip
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client.exposition import ThreadingWSGIServer, gzip_accepted

from backup_pipeline.metrics.badge_render import badge_json, badge_svg
from backup_pipeline.metrics.badges import badge_for
from backup_pipeline.metrics.collector import read_families
from backup_pipeline.metrics.exposition import CONTENT_TYPE, encode
from backup_pipeline.storage.database import (
    Database,
    DatabaseFailure,
    DatabaseUnavailable,
    db_error_line,
)
from backup_pipeline.storage.metrics import check_connection

log = logging.getLogger(__name__)
StartResponse = Callable[[str, list[tuple[str, str]]], Any]
_BADGE = re.compile(r"/badge/(?P<agent>[^/]+)(?:/(?P<database>[^/]+))?\.(?P<format>svg|json)")
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
        # PEP 3333: PATH_INFO holds the URL-decoded bytes as latin-1; names are UTF-8.
        path = (environ.get("PATH_INFO") or "/").encode("latin-1").decode("utf-8", "replace")
        if environ["REQUEST_METHOD"] not in ("GET", "HEAD"):
            return _plain(start_response, "405 Method Not Allowed", "use GET\n", [("Allow", "GET, HEAD")])
        try:
            if path == "/metrics":
                return self.metrics(environ, start_response)
            if path == "/healthz":
                return self.healthz(start_response)
            if path == "/":
                start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
                return [INDEX]
            match = _BADGE.fullmatch(path)
            if match:
                return self.badge(start_response, match)
            return _plain(start_response, "404 Not Found", "not found\n")
        except (DatabaseFailure, DatabaseUnavailable) as exc:
            reason = f"PostgreSQL unreachable or failing: {db_error_line(exc)}"
            log.error("%s %s: %s", environ["REQUEST_METHOD"], path, reason)
            return _plain(start_response, "503 Service Unavailable", reason + "\n")

    def metrics(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        body = exposition(self.database())
        headers = [("Content-Type", CONTENT_TYPE)]
        if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING")):
            body = gzip.compress(body, compresslevel=GZIP_LEVEL)
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", headers)
        return [body]

    def healthz(self, start_response: StartResponse) -> Iterable[bytes]:
        with self.database().sessions() as session:
            check_connection(session)
        return _plain(start_response, "200 OK", "ok\n")

    def badge(self, start_response: StartResponse, match: re.Match[str]) -> Iterable[bytes]:
        agent, database = match["agent"], match["database"]
        badge = badge_for(self.database(), agent, database)
        if badge is None:
            what = "agent" if database is None else "agent or database"
            return _plain(start_response, "404 Not Found", f"unknown {what}\n")
        body = badge_svg(badge) if match["format"] == "svg" else badge_json(badge)
        headers = [("Content-Type", _TYPES[match["format"]]), ("Cache-Control", "no-cache")]
        start_response("200 OK", headers)
        return [body.encode()]


def _plain(
    start_response: StartResponse, status: str, text: str, extra: list[tuple[str, str]] | None = None
) -> Iterable[bytes]:
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), *(extra or [])])
    return [text.encode()]


class _QuietHandler(WSGIRequestHandler):
    """No line on stderr per request (Prometheus scrapes every few seconds)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def exporter_server(database: Callable[[], Database], host: str, port: int) -> WSGIServer:
    """The exporter bound to host:port (0: a free port), one thread per request, not yet serving."""
    return make_server(host, port, ExporterApp(database), ThreadingWSGIServer, _QuietHandler)


def serve(database: Callable[[], Database], host: str, port: int, ready: Callable[[str], None]) -> None:
    """Serve until interrupted; `ready` is told the URL once the port is bound."""
    with exporter_server(database, host, port) as server:
        ready(f"http://{host}:{server.server_port}")
        server.serve_forever()
