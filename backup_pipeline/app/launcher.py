"""Dagster's own home (its instance config on PostgreSQL) and `dagster dev` started on it, with
exactly the settings this process has."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

from backup_pipeline.app.errors import ConfigurationError
from backup_pipeline.config.settings import Settings
from backup_pipeline.storage.database import dagster_url, normalise_url

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_INSTANCE_CONFIG = PROJECT_ROOT / "dagster.yaml"
DAGSTER_URL_ENV = "BACKUP_PIPELINE_DAGSTER_PG_URL"
DAGSTER_HOME_FOLDER = "dagster_home"  # under BACKUP_PIPELINE_HOME, unless DAGSTER_HOME says otherwise


def prepare_dagster_home(settings: Settings) -> Path:
    """Point DAGSTER_HOME at the product's home with the shipped dagster.yaml and a PostgreSQL URL.

    An explicit DAGSTER_HOME (and BACKUP_PIPELINE_DAGSTER_PG_URL) is respected; otherwise Dagster's
    storage goes to a `dagster` database on the embedded server, or on BACKUP_PIPELINE_DATABASE_URL.
    """
    home = Path(os.environ.get("DAGSTER_HOME") or settings.home / DAGSTER_HOME_FOLDER).resolve()
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copyfile(SHIPPED_INSTANCE_CONFIG, home / "dagster.yaml")
    ensure_dagster_storage_url(settings)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def ensure_dagster_storage_url(settings: Settings) -> None:
    """Give the shipped dagster.yaml its PostgreSQL URL when the environment does not: the product's
    own server (BACKUP_PIPELINE_DATABASE_URL) or the embedded server's `dagster` database."""
    if not os.environ.get(DAGSTER_URL_ENV):
        url = normalise_url(settings.database_url) if settings.database_url else dagster_url(settings)
        os.environ[DAGSTER_URL_ENV] = url
    else:  # `postgresql://…` as people write it: dagster-postgres ships psycopg2, SQLAlchemy 2 wants it named
        os.environ[DAGSTER_URL_ENV] = normalise_url(os.environ[DAGSTER_URL_ENV])
    if not os.environ[DAGSTER_URL_ENV].startswith("postgresql+psycopg2://"):
        raise ConfigurationError(
            f"{DAGSTER_URL_ENV} is not a PostgreSQL URL (expected postgresql://user:password@host:port/database)"
        )


def dagster_environment(settings: Settings, *, host: str, port: int) -> dict[str, str]:
    """What every Dagster process of this set-up needs in its environment: every setting as this
    process resolved it (`.env` included, paths absolute), DAGSTER_HOME with the shipped
    dagster.yaml, Dagster's storage URL, and the UI's address for links in alerts. Made this
    process's environment too."""
    settings.export()
    home = prepare_dagster_home(settings)
    os.environ.setdefault("BACKUP_PIPELINE_DAGSTER_URL", f"http://{host}:{port}")
    extra = ("DAGSTER_HOME", DAGSTER_URL_ENV, "BACKUP_PIPELINE_DAGSTER_URL")
    variables = {k: v for k, v in settings.environment().items() if v is not None}
    return variables | {k: os.environ[k] for k in extra} | {"DAGSTER_HOME": str(home)}


def run_dagster_dev(settings: Settings, *, host: str, port: int) -> int:
    """Replace this process with `dagster dev` (webserver and daemon) on the product's storage;
    returns (1) only when it cannot be started."""
    # Dagster's code server, daemon and runs start elsewhere than here and read nothing else.
    dagster_environment(settings, host=host, port=port)
    # The product may run from a virtualenv that is not activated: use its interpreter, and put its
    # scripts first on PATH for the webserver and daemon that `dagster dev` starts.
    scripts = str(Path(sys.executable).parent)
    os.environ["PATH"] = scripts + os.pathsep + os.environ.get("PATH", "")
    workspace = str(PROJECT_ROOT / "workspace.yaml")
    command = [sys.executable, "-m", "dagster", "dev", "-h", host, "-p", str(port), "-w", workspace]
    print(f"Dagster UI: http://{host}:{port}  (DAGSTER_HOME={os.environ['DAGSTER_HOME']}; Ctrl-C stops it)")
    sys.stdout.flush()
    # Become `dagster dev` rather than wait for it: Ctrl-C and a service manager's SIGTERM then reach
    # it directly and it stops its webserver, daemon and code servers. From its own home, because
    # Dagster warns about the project's dagster.yaml when run beside it.
    os.chdir(os.environ["DAGSTER_HOME"])
    # A shell starting this in the background leaves SIGINT ignored, and an ignored signal stays
    # ignored across exec: Dagster, which maps SIGTERM onto SIGINT's handler, would then ignore
    # SIGTERM too and outlive a service manager's stop.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        os.execv(sys.executable, command)
    except OSError as exc:
        print(f"cannot start dagster dev with {sys.executable}: {exc}", file=sys.stderr)
    return 1
