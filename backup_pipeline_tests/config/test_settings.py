"""Configuration is read from the documented variables only, never from look-alike names such as
HOME (which every shell sets) or a field's bare name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backup_pipeline.config.settings import Settings, load_settings


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
