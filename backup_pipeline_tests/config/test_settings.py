"""Configuration is read from the documented variables only, never from look-alike names such as
HOME (which every shell sets) or a field's bare name."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from backup_pipeline.config.settings import Settings, SettingsError, find_env_file, load_settings


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No product variable set, and no .env file in the working directory."""
    for name in list(os.environ):
        if name.startswith(("BACKUP_", "SCANNER_", "MAX_STATUS")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_look_alike_variables_are_ignored(clean_environment: pytest.MonkeyPatch) -> None:
    defaults = Settings()
    for field in Settings.model_fields:
        for name in (field, field.upper()):
            clean_environment.setenv(name, "/not/this" if "root" in field or field == "home" else "7")
    clean_environment.setenv("HOME", "/home/someone")

    assert load_settings() == defaults
    assert load_settings().home == Path(".backup_pipeline")


def test_documented_variables_are_read(clean_environment: pytest.MonkeyPatch) -> None:
    clean_environment.setenv("BACKUP_STORAGE_ROOT", "/srv/deposit")
    clean_environment.setenv("BACKUP_PIPELINE_HOME", "/var/lib/backup_pipeline")
    clean_environment.setenv("SCANNER_REPORT_COLLECTION_WINDOW_MINUTES", "90")
    clean_environment.setenv("MAX_STATUS_FILE_AGE_DAYS", "3")

    settings = load_settings()

    assert settings.storage_root == Path("/srv/deposit")
    assert settings.home == Path("/var/lib/backup_pipeline")
    assert (settings.window_minutes, settings.max_status_file_age_days) == (90, 3)
    assert Settings(home=Path("/given/in/code")).home == Path("/given/in/code")  # by field name in code


def test_the_celery_executor_needs_a_broker_and_shares_its_url_as_result_backend(
    clean_environment: pytest.MonkeyPatch,
) -> None:
    assert load_settings().executor == "multiprocess"
    clean_environment.setenv("BACKUP_PIPELINE_EXECUTOR", "celery")
    with pytest.raises(ValueError, match="BACKUP_PIPELINE_CELERY_BROKER"):
        load_settings()

    clean_environment.setenv("BACKUP_PIPELINE_CELERY_BROKER", "redis://:secret@broker.example:6379/0")
    settings = load_settings()
    assert settings.celery_backend_url == "redis://:secret@broker.example:6379/0"
    assert "secret" not in repr(settings)
    clean_environment.setenv("BACKUP_PIPELINE_CELERY_BROKER", "amqp://guest@rabbit.example//")
    assert load_settings().celery_backend_url == "rpc://"  # results over RabbitMQ itself
    clean_environment.setenv("BACKUP_PIPELINE_CELERY_BACKEND", "redis://results.example/1")
    assert load_settings().celery_backend_url == "redis://results.example/1"
    clean_environment.setenv("BACKUP_PIPELINE_EXECUTOR", "dask")
    with pytest.raises(ValueError, match="multiprocess"):
        load_settings()


def test_the_nearest_env_file_is_read_and_its_paths_are_its_folders(
    clean_environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        "BACKUP_STORAGE_ROOT=demo/deposit\nBACKUP_PIPELINE_JOBS_FILE=demo/jobs.yaml\n"
        "BACKUP_PIPELINE_HASH_WORKERS=3\n"
    )
    below = tmp_path / "demo" / "deeper"
    below.mkdir(parents=True)
    clean_environment.chdir(below)  # a command run from a folder below the .env's

    settings = load_settings()

    assert find_env_file() == tmp_path / ".env"
    assert settings.storage_root == tmp_path / "demo" / "deposit"
    assert settings.jobs_file == tmp_path / "demo" / "jobs.yaml"
    assert settings.home == tmp_path / ".backup_pipeline"  # a default, anchored to the .env's folder too
    assert settings.hash_workers == 3
    # The environment wins over the .env, and its relative paths are the current folder's.
    clean_environment.setenv("BACKUP_STORAGE_ROOT", "elsewhere")
    assert load_settings().storage_root == Path("elsewhere")


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "BACKUP_PIPELINE_HASH_WORKERS",
            "abc",
            "BACKUP_PIPELINE_HASH_WORKERS='abc' (set in the environment)",
        ),
        ("BACKUP_PIPELINE_HASH_WORKERS", "0", "greater than or equal to 1"),
        ("BACKUP_PIPELINE_DRILL_MAX_BYTES", "lots", "a number of bytes or a size such as 512MiB"),
        ("BACKUP_PIPELINE_EXECUTOR", "dask", "'multiprocess' or 'celery'"),
        (
            "BACKUP_PIPELINE_EXECUTOR",
            "celery",
            "BACKUP_PIPELINE_EXECUTOR=celery needs BACKUP_PIPELINE_CELERY_BROKER",
        ),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable_the_value_and_what_is_expected(
    clean_environment: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    clean_environment.setenv(variable, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert "\n" not in message and "pydantic" not in message and "http" not in message
    assert expected in message and variable in message


def test_a_bad_setting_in_the_env_file_names_the_file_and_urls_are_never_echoed(
    clean_environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("BACKUP_PIPELINE_NOTIFY_MAX_ATTEMPTS=many\n")
    with pytest.raises(SettingsError, match=rf"'many' \(set in {tmp_path / '.env'}\)"):
        load_settings()
    (tmp_path / ".env").write_text("BACKUP_PIPELINE_CELERY_BROKER=redis://:hunter2@broker/0\n")
    clean_environment.setenv("BACKUP_PIPELINE_EXECUTOR", "celery")
    clean_environment.setenv("BACKUP_PIPELINE_CELERY_QUEUE", "no spaces allowed")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert "BACKUP_PIPELINE_CELERY_QUEUE" in str(raised.value) and "hunter2" not in str(raised.value)


def test_byte_sizes_take_the_units_the_jobs_file_takes(clean_environment: pytest.MonkeyPatch) -> None:
    clean_environment.setenv("BACKUP_PIPELINE_DRILL_MAX_BYTES", "16GiB")
    clean_environment.setenv("BACKUP_PIPELINE_MEASURE_BATCH_BYTES", "1.5 GB")
    clean_environment.setenv("BACKUP_PIPELINE_MAX_REPORT_BYTES", "4096")
    settings = load_settings()
    assert settings.drill_max_bytes == 16 * 1024**3
    assert settings.measure_batch_bytes == 1_500_000_000
    assert settings.max_report_bytes == 4096


def test_env_example_lists_every_setting_with_its_default(clean_environment: pytest.MonkeyPatch) -> None:
    example = Path(__file__).resolve().parents[2] / ".env.example"
    listed = dict(re.findall(r"^# ([A-Z][A-Z0-9_]+)=(.*)$", example.read_text(), re.MULTILINE))
    defaults = Settings()
    for name, field in Settings.model_fields.items():
        variable = str(field.validation_alias)
        assert variable in listed, f"{variable} is not in .env.example"
        written = listed[variable]
        default = getattr(defaults, name)
        if default is None or (hasattr(default, "get_secret_value") and not default.get_secret_value()):
            assert written == "", f"{variable}: unset by default, .env.example says {written!r}"
        else:  # the value written means the default, read as the setting reads it
            assert Settings.model_validate({variable: written}).__getattribute__(name) == default, variable


def test_a_renamed_setting_is_an_error_naming_its_new_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BACKUP_PIPELINE_DRILL_BATCH_BYTES became BACKUP_PIPELINE_DRILL_BATCH_SECONDS: a deployment that
    still sets the old one hears so, in one line, rather than losing its value silently."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BACKUP_PIPELINE_DRILL_BATCH_BYTES", "2GiB")
    with pytest.raises(
        SettingsError,
        match="BACKUP_PIPELINE_DRILL_BATCH_BYTES is no longer read: set BACKUP_PIPELINE_DRILL_BATCH_SECONDS",
    ):
        load_settings()
    monkeypatch.delenv("BACKUP_PIPELINE_DRILL_BATCH_BYTES")
    (tmp_path / ".env").write_text("BACKUP_PIPELINE_DRILL_BATCH_BYTES=2GiB\n")
    with pytest.raises(SettingsError, match="no longer read"):
        load_settings()
