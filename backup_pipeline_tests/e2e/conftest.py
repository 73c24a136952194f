"""The staged fleet the robustness tests start from: prepared once per session (per xdist worker),
restored per test, and what an uninterrupted scan of it leaves behind."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from backup_pipeline_tests.support.fleet import Stage, control_snapshot, prepared_stage


@pytest.fixture(scope="session")
def stage(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    with prepared_stage(pg_server, tmp_path_factory.mktemp("stage")) as prepared:
        yield prepared


@pytest.fixture(scope="session")
def control(stage: Stage) -> dict[str, Any]:
    """What one uninterrupted scan of the stage leaves behind."""
    return control_snapshot(stage)
