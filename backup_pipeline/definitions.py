"""The code location's entry point (pyproject.toml's [tool.dagster], workspace.yaml): the product's
definitions for the settings of this process's environment, built when Dagster asks for them."""

from dagster import Definitions, definitions

from backup_pipeline.config.settings import load_settings
from backup_pipeline.defs import build_definitions


@definitions
def defs() -> Definitions:
    return build_definitions(load_settings())
