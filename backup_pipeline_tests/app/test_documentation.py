"""The documentation and the product agree: every link between the pages leads somewhere, every
command and option of the CLI is in the README's command table (and nothing there is absent from
the CLI), and every setting is described in docs/configuration.md."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from backup_pipeline.app.cli import main
from backup_pipeline.config.settings import Settings

REPOSITORY = Path(__file__).resolve().parents[2]
PAGES = [REPOSITORY / "README.md", *sorted((REPOSITORY / "docs").rglob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    return {_anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPOSITORY)))
def test_every_link_between_pages_leads_somewhere(page: Path) -> None:
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target} leads nowhere"
        if anchor:
            assert anchor in _anchors(linked), f"{page.name}: {target}: no such heading"


def _commands(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        if command.hidden:
            continue
        if isinstance(command, click.Group):
            found |= _commands(command, f"{prefix}{name} ")
        else:
            found[f"{prefix}{name}"] = command
    return found


def test_the_readme_command_table_is_the_cli() -> None:
    """Every command is in the README's table; every option there or in docs/commands.md."""
    readme = (REPOSITORY / "README.md").read_text()
    reference = readme + (REPOSITORY / "docs" / "commands.md").read_text()
    table = readme[readme.index("\n## Commands\n") : readme.index("\n## Configuration\n")]
    rows = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    documented = " ".join(rows)
    for path, command in _commands(main).items():
        assert f"`{path}" in documented or f"/ `{path}" in documented, f"`{path}` is not in the README"
        for option in command.params:
            if (
                isinstance(option, click.Option)
                and not option.hidden
                and option.name not in ("as_json", "wide")
            ):
                long = max(option.opts, key=len)
                assert long in reference, f"`{path} {long}` is in neither the README nor docs/commands.md"
    for row in rows:  # and nothing documented is absent from the CLI
        for path in re.findall(r"`([a-z][a-z ]*?)(?: \[| \(|`| --| DIR| [A-Z])", row):
            assert path.strip() in _commands(main), f"the README shows `{path}`, which the CLI lacks"


def test_every_setting_is_described() -> None:
    configuration = (REPOSITORY / "docs" / "configuration.md").read_text()
    for field in Settings.model_fields.values():
        assert f"`{field.validation_alias}`" in configuration, f"{field.validation_alias} is not described"
