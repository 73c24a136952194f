"""The staged fleet the robustness tests start from: prepared once per module, restored per test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from backup_pipeline_tests.support.fleet import Stage, control_snapshot, prepared_stage


@pytest.fixture(scope="module")
def stage(
    pg_server: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Stage]:
    with prepared_stage(
        pg_server, tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    ) as prepared:
        yield prepared


@pytest.fixture(scope="module")
def control(stage: Stage) -> dict[str, Any]:
    """What one uninterrupted scan of the stage leaves behind."""
    return control_snapshot(stage)
