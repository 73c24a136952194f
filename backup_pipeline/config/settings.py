"""Configuration from the environment and a `.env` file, validated once.

The `.env` is the current folder's, or the nearest parent folder's (as git finds its repository);
the environment wins over it. Relative paths mean the same files wherever a command runs: those the
`.env` sets (and the defaults, when there is a `.env`) are relative to the `.env`'s folder, those the
environment sets to the current folder.
"""

from __future__ import annotations

import os
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from backup_pipeline.core.sizes import parse_byte_size

ENV_FILE_NAME = ".env"


def _byte_size(value: Any) -> Any:
    return parse_byte_size(value) if isinstance(value, str) else value


# A number of bytes, or a size with a unit (16GiB), as the jobs file accepts it.
ByteSize = Annotated[int, BeforeValidator(_byte_size)]


class SettingsError(ValueError):
    """A setting has a value the product cannot use; the message is one line naming the variable,
    the value, where it was set and what is expected."""


class Settings(BaseSettings):
    # Each setting is read from its documented variable only. Fields can be given by name in code
    # (populate_by_name); pydantic-settings then also reads the environment by field name, so the
    # prefix keeps that lookup inside our namespace (HOME must never become the product's home).
    model_config = SettingsConfigDict(
        env_file=None, extra="ignore", populate_by_name=True, env_prefix="BACKUP_PIPELINE_"
    )

    storage_root: Path = Field(default=Path("./deposit"), validation_alias="BACKUP_STORAGE_ROOT")
    jobs_file: Path = Field(default=Path("./jobs.yaml"), validation_alias="BACKUP_PIPELINE_JOBS_FILE")
    database_url: str | None = Field(default=None, validation_alias="BACKUP_PIPELINE_DATABASE_URL")
    home: Path = Field(default=Path("./.backup_pipeline"), validation_alias="BACKUP_PIPELINE_HOME")
    window_minutes: int = Field(
        default=60,
        ge=1,
        le=720,
        validation_alias="SCANNER_REPORT_COLLECTION_WINDOW_MINUTES",
    )
    max_status_file_age_days: int = Field(default=7, ge=1, validation_alias="MAX_STATUS_FILE_AGE_DAYS")
    start_date: date = Field(default=date(2024, 1, 1), validation_alias="BACKUP_PIPELINE_START_DATE")
    # A report that is unparseable and younger than this may still be being written: retry later.
    settle_seconds: int = Field(default=60, ge=0, validation_alias="BACKUP_PIPELINE_SETTLE_SECONDS")
    max_report_bytes: ByteSize = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        validation_alias="BACKUP_PIPELINE_MAX_REPORT_BYTES",
    )
    # Staged files are hashed in parallel threads (hashlib and zlib/zstd release the GIL).
    hash_workers: int = Field(default=2, ge=1, le=64, validation_alias="BACKUP_PIPELINE_HASH_WORKERS")
    # Decompress staged archives to catch corrupt ones and fingerprint their content. Off, only the
    # file's SHA-256 and size are checked, and content policies compare raw file hashes.
    verify_archives: bool = Field(default=True, validation_alias="BACKUP_PIPELINE_VERIFY_ARCHIVES")
    # How far a staged archive is decompressed at most: a ratio to its size (at least that many MiB)
    # and a size. A decompression bomb stops there: FAILED "archive expands beyond ...".
    max_expansion_ratio: int = Field(
        default=1000, ge=2, le=1_000_000, validation_alias="BACKUP_PIPELINE_MAX_EXPANSION_RATIO"
    )
    max_decompressed_bytes: ByteSize = Field(
        default=1 << 40, ge=1 << 20, validation_alias="BACKUP_PIPELINE_MAX_DECOMPRESSED_BYTES"
    )
    max_batches: int = Field(default=8, ge=1, le=256, validation_alias="BACKUP_PIPELINE_MAX_BATCHES")

    # Above this many expected backups the UI shows one asset per agent instead of one per database:
    # Dagster stores ~200 events/s, so 20,000 per-database materializations would dominate a scan.
    per_database_assets_max: int = Field(
        default=2000,
        ge=0,
        validation_alias="BACKUP_PIPELINE_PER_DATABASE_ASSETS_MAX",
    )

    # ---- alerts (issue 4)
    # Apprise URLs, several separated by commas or spaces. A secret: never logged or shown whole.
    notify_urls: SecretStr = Field(default=SecretStr(""), validation_alias="BACKUP_PIPELINE_NOTIFY_URLS")
    # Base URL of the Dagster UI, for links to the assets in notifications.
    dagster_url: str | None = Field(default=None, validation_alias="BACKUP_PIPELINE_DAGSTER_URL")
    # An unsent notification is retried by the following scans, up to this many attempts.
    notify_max_attempts: int = Field(
        default=20,
        ge=1,
        le=1000,
        validation_alias="BACKUP_PIPELINE_NOTIFY_MAX_ATTEMPTS",
    )
    # After a failure a target is retried by later scans once this long has passed, doubling with
    # each failure up to an hour.
    notify_retry_seconds: int = Field(
        default=60, ge=0, le=3600, validation_alias="BACKUP_PIPELINE_NOTIFY_RETRY_SECONDS"
    )
    # Size anomalies: the staged size against the median of the job's last successful cycles.
    size_history: int = Field(
        default=14,
        ge=3,
        le=365,
        validation_alias="BACKUP_PIPELINE_SIZE_HISTORY",
    )
    size_min_history: int = Field(
        default=3,
        ge=3,
        le=365,
        validation_alias="BACKUP_PIPELINE_SIZE_MIN_HISTORY",
    )
    size_below_ratio: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        validation_alias="BACKUP_PIPELINE_SIZE_BELOW_RATIO",
    )
    size_above_ratio: float = Field(
        default=3.0,
        gt=1,
        validation_alias="BACKUP_PIPELINE_SIZE_ABOVE_RATIO",
    )

    # ---- restore drills (issue 11)
    # PostgreSQL binaries the scratch clusters use (initdb, postgres, psql, pg_restore); unset: the
    # embedded PostgreSQL's.
    drill_pg_bin: Path | None = Field(default=None, validation_alias="BACKUP_PIPELINE_DRILL_PG_BIN")
    # The folder of the MariaDB binaries MariaDB/MySQL dumps are drilled with (mariadbd,
    # mariadb-install-db, mariadb); unset: found on PATH and in /usr/sbin. Without them, such dumps are
    # NOT_DRILLABLE.
    drill_mariadb_bin: Path | None = Field(default=None, validation_alias="BACKUP_PIPELINE_DRILL_MARIADB_BIN")
    # bubblewrap, the sandbox every process of a drill runs in (unset: `bwrap` on PATH).
    drill_bwrap: Path | None = Field(default=None, validation_alias="BACKUP_PIPELINE_DRILL_BWRAP")
    # Where scratch clusters live while a drill runs (unset: BACKUP_PIPELINE_HOME/drills).
    drill_dir: Path | None = Field(default=None, validation_alias="BACKUP_PIPELINE_DRILL_DIR")
    # The unprivileged OS user scratch clusters run as when the product runs as root (created as a
    # system user when missing).
    drill_user: str = Field(
        default="backup-pipeline-drill",
        pattern=r"^[a-z_][a-z0-9_-]{0,31}$",
        validation_alias="BACKUP_PIPELINE_DRILL_USER",
    )
    # The policy's defaults (the jobs file's `restore_drill:` overrides them per backup).
    drill_every_days: int = Field(
        default=7, ge=1, le=366, validation_alias="BACKUP_PIPELINE_DRILL_EVERY_DAYS"
    )
    drill_max_minutes: float = Field(
        default=30, gt=0, le=24 * 60, validation_alias="BACKUP_PIPELINE_DRILL_MAX_MINUTES"
    )
    drill_max_bytes: ByteSize = Field(
        default=16 * 1024**3, ge=64 * 1024**2, validation_alias="BACKUP_PIPELINE_DRILL_MAX_BYTES"
    )
    drill_shrink_below: float = Field(
        default=0.5, gt=0, lt=1, validation_alias="BACKUP_PIPELINE_DRILL_SHRINK_BELOW"
    )
    # A restore statement running longer is cancelled (COPY of the data excepted): an endless loop.
    drill_statement_timeout_seconds: int = Field(
        default=600, ge=1, validation_alias="BACKUP_PIPELINE_DRILL_STATEMENT_TIMEOUT_SECONDS"
    )
    # Address space of each process of a scratch cluster (server, backends, psql, pg_restore).
    drill_memory_bytes: ByteSize = Field(
        default=2 * 1024**3, ge=512 * 1024**2, validation_alias="BACKUP_PIPELINE_DRILL_MEMORY_BYTES"
    )
    # The daily drill run: how long its drills may take in all (estimates), when it starts, how its
    # drills are grouped into steps (estimated seconds per step) and how many steps run at once.
    drill_budget_minutes: float = Field(
        default=120, gt=0, validation_alias="BACKUP_PIPELINE_DRILL_BUDGET_MINUTES"
    )
    drill_cron: str = Field(default="0 4 * * *", validation_alias="BACKUP_PIPELINE_DRILL_CRON")
    drill_batch_seconds: float = Field(
        default=600, gt=0, validation_alias="BACKUP_PIPELINE_DRILL_BATCH_SECONDS"
    )
    drill_concurrency: int = Field(
        default=1, ge=1, le=64, validation_alias="BACKUP_PIPELINE_DRILL_CONCURRENCY"
    )

    @property
    def drill_root(self) -> Path:
        return self.drill_dir or self.home / "drills"

    # ---- scaling out (issue 14): where the steps of scan runs execute, and the limits of a run.
    # `multiprocess`: in subprocesses of the run's own process; `celery`: on Celery workers
    # (`backup-pipeline worker`) reached through a broker, with the same settings everywhere.
    executor: Literal["multiprocess", "celery"] = Field(
        default="multiprocess", validation_alias="BACKUP_PIPELINE_EXECUTOR"
    )
    # Broker and result backend URLs may hold passwords: secrets, never written to Dagster's storage.
    celery_broker: SecretStr = Field(default=SecretStr(""), validation_alias="BACKUP_PIPELINE_CELERY_BROKER")
    # Unset: the broker's URL for Redis, Celery's `rpc://` (results over the broker) for RabbitMQ.
    celery_backend: SecretStr = Field(
        default=SecretStr(""), validation_alias="BACKUP_PIPELINE_CELERY_BACKEND"
    )
    # The queue scan steps are sent to (one broker can serve several deployments).
    celery_queue: str = Field(
        default="dagster", pattern=r"^[A-Za-z0-9_-]{1,64}$", validation_alias="BACKUP_PIPELINE_CELERY_QUEUE"
    )
    # The queue drill steps are sent to: hours of restores never wait in front of the scans' steps.
    celery_drill_queue: str = Field(
        default="drills",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        validation_alias="BACKUP_PIPELINE_CELERY_DRILL_QUEUE",
    )
    # A run still going after this long is failed by the daemon's run monitoring (`dagster/max_runtime`):
    # a lost worker or an unreachable broker must never hold the one-scan-at-a-time slot forever.
    run_max_seconds: int = Field(default=6 * 3600, ge=60, validation_alias="BACKUP_PIPELINE_RUN_MAX_SECONDS")
    # Staged files are measured in steps of about this many bytes (at most `max_measure_batches`), so
    # that one agent's many large dumps spread over every worker.
    measure_batch_bytes: ByteSize = Field(
        default=4 * 1024**3, ge=1, validation_alias="BACKUP_PIPELINE_MEASURE_BATCH_BYTES"
    )
    max_measure_batches: int = Field(
        default=32, ge=1, le=1024, validation_alias="BACKUP_PIPELINE_MAX_MEASURE_BATCHES"
    )

    @model_validator(mode="after")
    def _celery_needs_a_broker(self) -> Settings:
        if self.executor == "celery" and not self.celery_broker.get_secret_value():
            raise ValueError(
                "BACKUP_PIPELINE_EXECUTOR=celery needs BACKUP_PIPELINE_CELERY_BROKER (a broker URL)"
            )
        return self

    @property
    def celery_backend_url(self) -> str:
        """The result backend every process of a deployment must share with the workers."""
        if backend := self.celery_backend.get_secret_value():
            return backend
        broker = self.celery_broker.get_secret_value()
        return broker if broker.startswith(("redis://", "rediss://", "redis+socket://")) else "rpc://"

    @property
    def digests_dir(self) -> Path:
        """Where the daily fleet digests are written (CSV)."""
        return self.home / "digests"

    @property
    def max_report_age(self) -> timedelta:
        return timedelta(days=self.max_status_file_age_days)

    @property
    def embedded_pgdata(self) -> Path:
        return self.home / "pgdata"

    @property
    def cache_dir(self) -> Path:
        """Where a large jobs file's validated form is kept between processes."""
        return self.home / "cache"

    def environment(self) -> dict[str, str | None]:
        """Every setting as the variable it is read from (None: unset), paths made absolute: what a
        child process needs in its environment to see exactly these settings, whatever its working
        directory (Dagster's code server and daemon do not start where `.env` is)."""
        env: dict[str, str | None] = {}
        for name, field in type(self).model_fields.items():
            env[str(field.validation_alias)] = _as_variable(getattr(self, name))
        return env

    def export(self) -> None:
        """Make these settings the environment's, for every process started from here on."""
        for variable, value in self.environment().items():
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value


def _as_variable(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, SecretStr):
        return value.get_secret_value() or None
    if isinstance(value, Path):
        return str(value.resolve())
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def find_env_file(start: Path | None = None) -> Path | None:
    """The `.env` of the current folder, or of the nearest parent folder that has one."""
    folder = (start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        path = candidate / ENV_FILE_NAME
        if path.is_file():
            return path
    return None


# Settings that were renamed: setting the old name is an error naming the new one (a value that would
# otherwise be silently ignored).
RENAMED = {
    "BACKUP_PIPELINE_DRILL_BATCH_BYTES": (
        "BACKUP_PIPELINE_DRILL_BATCH_SECONDS (drill steps are sized by estimated seconds, not bytes)"
    ),
}


def load_settings() -> Settings:
    """The settings of this process: the environment over the `.env` (see the module's docstring);
    SettingsError, in one line, when a value is wrong or a setting's old name is used."""
    env_file = find_env_file()
    old = next((name for name in RENAMED if name in os.environ or _in_env_file(env_file, name)), None)
    if old is not None:
        raise SettingsError(f"{old} is no longer read: set {RENAMED[old]}")
    try:
        settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise SettingsError(_explain(exc, env_file)) from None
    return _anchored(settings, env_file.parent) if env_file else settings


def _in_env_file(env_file: Path | None, name: str) -> bool:
    if env_file is None:
        return False
    try:
        return any(
            line.split("=", 1)[0].strip().removeprefix("export ").strip() == name
            for line in env_file.read_text(errors="replace").splitlines()
            if "=" in line and not line.lstrip().startswith("#")
        )
    except OSError:
        return False


def _anchored(settings: Settings, folder: Path) -> Settings:
    """Relative paths the environment did not set, made relative to the `.env`'s folder."""
    updates: dict[str, Path] = {}
    for name, field in type(settings).model_fields.items():
        value = getattr(settings, name)
        if (
            isinstance(value, Path)
            and not value.is_absolute()
            and str(field.validation_alias) not in os.environ
        ):
            updates[name] = folder / value
    return settings.model_copy(update=updates) if updates else settings


def _may_hold_a_secret(variable: str) -> bool:
    """URLs and secrets are never echoed, even when wrong (a password may be in them)."""
    fields = {str(f.validation_alias): f for f in Settings.model_fields.values()}
    field = fields.get(variable)
    return "URL" in variable or "BROKER" in variable or (field is not None and field.annotation is SecretStr)


def _explain(exc: ValidationError, env_file: Path | None) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        if not error["loc"]:  # a rule across settings: its message names the variables
            problems.append(message)
            continue
        variable = str(error["loc"][0])
        where = "the environment" if variable in os.environ or env_file is None else str(env_file)
        shown = "" if _may_hold_a_secret(variable) else f"={error.get('input')!r}"
        problems.append(f"{variable}{shown} (set in {where}): {message[0].lower()}{message[1:]}")
    return "invalid setting: " + "; ".join(problems)
