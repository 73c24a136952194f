"""Real notification services for tests: an HTTP receiver for Apprise's json:// and an SMTP server.

Both listen on 127.0.0.1 on a free port and keep what they receive. The HTTP receiver can be taken
down (its port closed: connection refused) and brought back up on the same port, to prove that a
failed notification is recorded and retried by the next scan.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Posted:
    path: str
    payload: dict[str, Any]
    authorization: str | None

    @property
    def title(self) -> str:
        return self.payload.get("title", "")

    @property
    def body(self) -> str:
        return self.payload.get("message", "")

    @property
    def type(self) -> str:
        return self.payload.get("type", "")


class HttpReceiver:
    """Apprise `json://127.0.0.1:PORT/path` target: every POST is kept, in order."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[Posted] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.up()

    def url(self, path: str = "hook", credentials: str = "") -> str:
        return f"json://{credentials + '@' if credentials else ''}127.0.0.1:{self.port}/{path}"

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                payload = json.loads(self.rfile.read(length) or b"{}")
                with receiver._lock:
                    receiver.received.append(
                        Posted(self.path.lstrip("/"), payload, self.headers.get("Authorization"))
                    )
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        for _ in range(50):  # the port may linger for a moment after `down()`
            try:
                self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"cannot listen on 127.0.0.1:{self.port} again")
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def take(self, path: str | None = None) -> list[Posted]:
        """What arrived since the last take (at `path` only, when given), then forget it."""
        with self._lock:
            taken = [p for p in self.received if path is None or p.path == path]
            self.received = [p for p in self.received if p not in taken]
        return taken

    def close(self) -> None:
        self.down()


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    subject: str
    body: str


@dataclass
class SmtpReceiver:
    """A local SMTP server (aiosmtpd): Apprise `mailto://127.0.0.1:PORT?…&mode=insecure`."""

    port: int = field(default_factory=free_port)
    received: list[Mail] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                message = email.message_from_bytes(envelope.content, policy=email.policy.default)
                part = message.get_body(preferencelist=("plain", "html"))
                receiver.received.append(
                    Mail(
                        envelope.mail_from,
                        list(envelope.rcpt_tos),
                        str(message["Subject"]),
                        part.get_content() if part else "",
                    )
                )
                return "250 OK"

        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def url(self, to: str = "ops@example.com") -> str:
        return f"mailto://127.0.0.1:{self.port}?from=alerts@example.com&to={to}&mode=insecure"

    def take(self) -> list[Mail]:
        taken, self.received[:] = list(self.received), []
        return taken

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._controller.stop()
