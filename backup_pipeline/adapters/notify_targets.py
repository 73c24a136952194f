"""Notification targets: Apprise URLs, identified and shown without their secrets, and sent to.

A target is configured as an Apprise URL (email, Slack, Teams, Telegram, webhooks…): globally in
BACKUP_PIPELINE_NOTIFY_URLS, per job in the jobs file's `notify:` lists. `${NAME}` references in a
URL are replaced from the environment only when a message is sent, so secrets can stay out of the
jobs file and out of PostgreSQL (which stores the jobs file's values).

Secrets never leave this module: storage knows a target by the SHA-256 of its configured text, and
logs, run metadata and the CLI show its redacted label (the scheme, plus the host when the service's
host is a server name rather than a token). Apprise's own log lines are captured, scrubbed of every
part of the URL that may be secret, and only then reported as the error of an attempt.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import urllib.parse
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from backup_pipeline.core.alerts import Notice

ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
MAX_ERROR = 500
MAX_LABEL_HOST = 200  # labels are stored (notification_*.target, 255 characters)


class TargetError(ValueError):
    """A target that cannot be used as configured; the message holds no secret."""


@dataclass(frozen=True)
class Target:
    """One configured Apprise URL. `configured` is the text as written (maybe with ${NAME}s)."""

    configured: str = field(repr=False)

    @cached_property
    def key(self) -> str:
        """The target's identity in storage: a digest of its configured text, never the text."""
        return hashlib.sha256(self.configured.strip().encode()).hexdigest()

    @property
    def id(self) -> str:
        return self.key[:8]

    @cached_property
    def label(self) -> str:
        """The scheme, and the host (with its port) when the service's host is a server's name and
        Apprise finds it where no password can be: never a user, a password, a path or a query."""
        text = self.configured.strip()
        match = _SCHEME.match(text)
        if not match:
            references = ENV_REFERENCE.findall(text)
            return " ".join(f"${{{name}}}" for name in references) if references else "<not a URL>"
        scheme = match.group(1).lower()
        host = public_host(text) if host_is_public(scheme) else None
        return f"{scheme}://{host[:MAX_LABEL_HOST]}" if host else f"{scheme}://…"

    def __str__(self) -> str:  # an accidental f"{target}" shows the label, never the URL
        return self.label

    def resolve(self, environ: dict[str, str] | None = None) -> str:
        """The URL to send to, with ${NAME} references replaced from the environment."""
        env = os.environ if environ is None else environ
        missing = [name for name in ENV_REFERENCE.findall(self.configured) if name not in env]
        if missing:
            raise TargetError(f"environment variable {missing[0]} is not set")
        return ENV_REFERENCE.sub(lambda m: env[m.group(1)], self.configured.strip())


def split_urls(text: str) -> list[str]:
    """Several Apprise URLs in one string, separated by commas or white space (as Apprise reads
    them: a comma inside a URL's query string, as in `?to=a@x.com,b@x.com`, stays in that URL)."""
    if not text.strip():
        return []  # without importing Apprise: most scans of a fleet without global targets
    try:
        from apprise.utils.parse import parse_urls
    except ImportError:  # Apprise < 1.9.1 kept its helpers in one module
        from apprise.utils import parse_urls  # type: ignore[no-redef,attr-defined]

    return [url for url in parse_urls(text) if url.strip()]


def targets(urls: Iterable[str]) -> list[Target]:
    """Targets from configured URLs, each once, in order."""
    seen: dict[str, Target] = {}
    for url in urls:
        target = Target(url)
        seen.setdefault(target.key, target)
    return list(seen.values())


def _manager():
    import apprise

    return apprise.NotificationManager()


def host_is_public(scheme: str) -> bool:
    """Whether the URL's host is a server name (self-hostable services: json, mailto, ntfy…) rather
    than a token (slack://TokenA/…, tgram://bot_token/…)."""
    manager = _manager()
    scheme = scheme.lower()
    if scheme not in manager:
        return False
    return bool(getattr(manager[scheme], "protocol", None))


def public_host(url: str) -> str | None:
    """`host[:port]` as Apprise parses `url` (its service's own parser), or None when Apprise finds
    none, or when the URL's text says a password may reach into what Apprise took for the host: an
    `@` in the path or a second one before it (Apprise cuts a password at an `@`), a `#` right after
    the host (a password cut there), a written password followed by another `@` anywhere (a password
    cut at a `?`; a `${NAME}` reference holds no `@`), and no port when the query's first key holds
    an `@` after a user's name taken for a host. A password Apprise reads whole is never in its host;
    the one case the text cannot tell is a password starting with digits then a raw `?`
    (`user:12?k=v@host`: Apprise sends to `user`, port 12), which must be percent-encoded anyway."""
    rest = url[url.index("://") + 3 :]
    cut = re.search(r"[/?#]", rest)
    authority, after = (rest[: cut.start()], rest[cut.start() :]) if cut else (rest, "")
    cut_at_query = _at_in_first_key(after)  # `user:pass?word@host`: Apprise's query starts in it
    if authority.count("@") > 1 or after.startswith("#") or "@" in after.split("?", 1)[0]:
        return None
    credentials = authority.rpartition("@")[0]
    written_password = credentials.partition(":")[2]
    if credentials and "@" in after and not ENV_REFERENCE.fullmatch(written_password):
        return None  # `user:pa@ss?x@host`: which `@` ends the password, the text cannot say
    if ENV_REFERENCE.fullmatch(authority.rsplit("@", 1)[-1]):
        return authority.rsplit("@", 1)[-1]  # the name of a variable, read when sending
    parsed = _parsed(url)
    if not parsed or not parsed.get("host"):
        return None
    host, port = str(parsed["host"]), parsed.get("port")
    with_port = f"{host}:{port}" if port is not None else host
    if authority.rsplit("@", 1)[-1].lower() != with_port.lower():
        return None  # Apprise read the authority otherwise than as user:password@host:port
    if port is not None and cut_at_query:
        return host  # the host is then the user's name, the port the password's beginning
    return with_port


def _at_in_first_key(after: str) -> bool:
    query = after.split("?", 1)[1] if "?" in after else ""
    return any("@" in field.split("=", 1)[0] for field in query.split("&")[:1])


def _parsed(url: str) -> dict[str, Any] | None:
    """What the Apprise service of `url`'s scheme makes of it (None if it cannot parse it)."""
    manager = _manager()
    scheme = url[: url.index("://")].lower()
    if scheme not in manager:
        return None
    with quiet_apprise():
        try:
            return manager[scheme].parse_url(url)
        except Exception:  # a service's parser failing on a strange URL: nothing to show
            return None


def problem(configured: str) -> str | None:
    """Why a configured target cannot work, or None. Never quotes the URL itself."""
    text = configured.strip()
    if not text:
        return "is empty"
    if "${" in ENV_REFERENCE.sub("", text):
        return "has a malformed ${NAME} reference"
    match = _SCHEME.match(text)
    if not match:
        return None if ENV_REFERENCE.search(text) else "is not an Apprise URL (expected scheme://…)"
    scheme = match.group(1).lower()
    if scheme not in _manager():
        return f"uses the scheme {scheme!r}, which Apprise does not know"
    if ENV_REFERENCE.search(text):
        return None  # the rest is only known when sending
    with quiet_apprise():
        plugin = _instantiate(text)
    if plugin is None:
        return f"is not a valid {scheme!r} URL for Apprise"
    return None


def _instantiate(url: str):
    import apprise

    return apprise.Apprise.instantiate(url, asset=_asset(), suppress_exceptions=True)


def _asset():
    import apprise

    return apprise.AppriseAsset(app_id="backup_pipeline", app_desc="backup_pipeline backup monitoring")


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            self.lines.append(record.getMessage())


@contextmanager
def quiet_apprise() -> Iterator[list[str]]:
    """Apprise's log lines (which may quote URL parts) captured instead of reaching any log."""
    logger = logging.getLogger("apprise")
    capture = _Capture()
    saved = (logger.propagate, logger.level, list(logger.handlers))
    logger.handlers = [capture]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        yield capture.lines
    finally:
        logger.handlers = saved[2]
        logger.propagate = saved[0]
        logger.setLevel(saved[1])


def scrub(text: str, url: str, *, extra: Iterable[str] = ()) -> str:
    """`text` without anything from `url` that may be secret (credentials, host tokens, path
    segments, query values) nor the `extra` values (what ${NAME} references stood for)."""
    secrets = {url, *extra}
    match = _SCHEME.match(url)
    rest = url[match.end() :] if match else url
    # Whatever precedes the URL's last `@` may be credentials, whatever characters they hold.
    credentials = rest.rpartition("@")[0]
    secrets.update({credentials, credentials.partition(":")[2], *re.split(r"[:/@?#&=]", credentials)})
    parsed = _parsed(url) if match else None
    if parsed:
        secrets.update(str(parsed[k]) for k in ("user", "password") if parsed.get(k))
    netloc, _, tail = rest.partition("/")
    if "?" in netloc:
        netloc, _, query_only = netloc.partition("?")
        tail = "?" + query_only
    userinfo, _, host = netloc.rpartition("@")
    secrets.update(userinfo.split(":"))
    secrets.add(userinfo)
    if match and not host_is_public(match.group(1)):
        secrets.update(host.split(":"))
    path, _, query = tail.partition("?")
    secrets.update(path.split("/"))
    for _, value in urllib.parse.parse_qsl(query, keep_blank_values=False):
        secrets.add(value)
    variants = set()
    for secret in secrets:
        variants.update({secret, urllib.parse.unquote(secret), urllib.parse.quote(secret, safe="")})
    for secret in sorted((s for s in variants if len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def send(target: Target, notice: Notice) -> str | None:
    """Send one message to one target; None when delivered, else a scrubbed reason. Never raises."""
    import apprise

    try:
        url = target.resolve()
    except TargetError as exc:
        return str(exc)
    values = [v for name in ENV_REFERENCE.findall(target.configured) if (v := _env(name))]
    with quiet_apprise() as lines:
        try:
            plugin = _instantiate(url)
            if plugin is None:
                return f"not a valid Apprise URL ({target.label})"
            sender = apprise.Apprise(asset=_asset())
            sender.add(plugin)
            delivered = bool(
                sender.notify(
                    body=notice.body,
                    title=notice.title,
                    notify_type=apprise.NotifyType(notice.level.value),
                    body_format=apprise.NotifyFormat.TEXT,
                )
            )
        except Exception as exc:  # a plugin bug must not stop the other targets
            delivered = False
            lines.append(f"{type(exc).__name__}: {exc}")
    if delivered:
        return None
    detail = "; ".join(dict.fromkeys(lines)) or "the service did not accept the notification"
    detail = scrub(detail, url, extra=values)
    return detail if len(detail) <= MAX_ERROR else detail[: MAX_ERROR - 1] + "…"


def _env(name: str) -> str | None:
    return os.environ.get(name)
