"""The README followed as a newcomer would, in a fresh clone: the quick start, every command of
"After the demo", the steps of "Watch your own sites" (with the test's own deposit, jobs file and
notification receiver in the `.env`), the example site of docs/examples, the Dagster commands run by
hand, and `db stop`. Commands are taken from the README's code blocks, not copied here."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from backup_pipeline.storage.embedded import stop_embedded_server
from backup_pipeline_tests.support.receivers import HttpReceiver

REPOSITORY = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent


def _section(markdown: str, title: str) -> str:
    start = markdown.index(f"\n## {title}\n")
    end = markdown.find("\n## ", start + 1)
    return markdown[start : end if end > 0 else None]


def _blocks(text: str, language: str = "bash") -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.DOTALL)


def _commands(block: str) -> list[str]:
    """The command lines of a block, without their trailing comments."""
    lines = [line.split(" #")[0].strip() for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


@pytest.fixture
def clone(drill_dir: Path) -> Iterator[Path]:
    """A fresh clone of this repository, with the test's virtualenv as its `.venv` (nothing
    reinstalled); its embedded PostgreSQL servers are stopped at the end whatever happens."""
    folder = Path(tempfile.mkdtemp(prefix="bp-clone-", dir="/tmp"))
    os.chmod(folder, 0o755)  # the embedded server's own user (when run as root) reaches its data
    checkout = folder / "backup_pipeline"
    subprocess.run(["git", "clone", "--quiet", str(REPOSITORY), str(checkout)], check=True, timeout=120)
    (checkout / ".venv").symlink_to(VENV)
    try:
        yield checkout
    finally:
        for pgdata in checkout.glob("**/.backup_pipeline/pgdata"):
            stop_embedded_server(pgdata)
        shutil.rmtree(folder, ignore_errors=True)


def _environment(drill_dir: Path) -> dict[str, str]:
    """A newcomer's environment: none of the product's variables (the .env says everything), but a
    drill folder the drill user can reach (the clone is under root's temporary folder)."""
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BACKUP_", "SCANNER_", "MAX_STATUS", "DAGSTER_"))
        and k not in ("NO_COLOR", "FORCE_COLOR")
    }
    return environment | {"BACKUP_PIPELINE_DRILL_DIR": str(drill_dir), "COLUMNS": "120"}


def _run(command: str, cwd: Path, environment: dict[str, str], timeout: float = 300) -> str:
    result = subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"`{command}` exited {result.returncode}:\n{output}"
    assert "Traceback" not in output, f"`{command}`:\n{output}"
    return result.stdout


def _running(pgdata: Path) -> bool:
    return (pgdata / "postmaster.pid").is_file()


@pytest.mark.slow
def test_the_readme_from_the_demo_to_watching_your_own_sites(clone: Path, drill_dir: Path) -> None:
    readme = (clone / "README.md").read_text()
    environment = _environment(drill_dir)

    # Quick start: `bash scripts/demo.sh` is the set-up script, then the demo (the venv exists).
    (quick_start,) = _blocks(_section(readme, "Quick start"))
    assert "bash scripts/demo.sh" in quick_start
    assert (
        (clone / "scripts/demo.sh").read_text().rstrip().endswith('exec .venv/bin/backup-pipeline demo "$@"')
    )
    demo = _run(".venv/bin/backup-pipeline demo --no-ui", clone, environment, timeout=900)
    assert "wrote" in demo and ".env" in demo

    # After the demo: every command, from the checkout, answered from the demo's set-up.
    after = _section(readme, "After the demo")
    outputs = {command: _run(command, clone, environment) for command in _commands(_blocks(after)[0])}
    assert "BACKUP_STORAGE_ROOT=demo/deposit" in outputs["cat .env"]
    status = outputs[".venv/bin/backup-pipeline status"]
    assert "BRASSCO_KRIBI_PORT" in status
    # From a folder below the checkout, the same data (no second, empty server).
    below = _run("../.venv/bin/backup-pipeline status --json", clone / "demo", environment)
    assert "BRASSCO_KRIBI_PORT" in below and not (clone / "demo" / ".backup_pipeline").exists()
    # The Dagster commands by hand, with what `dev --print-env` prints, and straight from the .env.
    _run(
        'eval "$(.venv/bin/backup-pipeline dev --print-env)" && '
        ".venv/bin/dagster definitions validate -w workspace.yaml",
        clone,
        environment,
    )
    _run(".venv/bin/dagster definitions validate -w workspace.yaml", clone, environment)
    # Stopping: `db stop` stops the embedded server; the next command starts it again.
    assert "backup-pipeline db stop" in after
    pgdata = clone / ".backup_pipeline" / "pgdata"
    assert _running(pgdata)
    assert "stopped the embedded PostgreSQL" in _run(".venv/bin/backup-pipeline db stop", clone, environment)
    assert not _running(pgdata)
    assert "BRASSCO_KRIBI_PORT" in _run(".venv/bin/backup-pipeline status", clone, environment)

    # Watch your own sites: the .env of step 4 with this test's deposit, jobs file and receiver.
    own = _section(readme, "Watch your own sites")
    jobs_yaml = next(b for b in _blocks(own, "yaml") if "jobs:" in b)
    settings_block, commands_block = _blocks(own)[:2]
    deposit, jobs_file = clone / "srv-deposit", clone / "own-jobs.yaml"
    deposit.mkdir()
    jobs_file.write_text(jobs_yaml)
    receiver = HttpReceiver()
    try:
        ours = {
            "BACKUP_STORAGE_ROOT": str(deposit),
            "BACKUP_PIPELINE_JOBS_FILE": str(jobs_file),
            "BACKUP_PIPELINE_NOTIFY_URLS": receiver.url(),
        }
        assert {line.split("=")[0] for line in _commands(settings_block)} == set(ours)
        kept = [line for line in (clone / ".env").read_text().splitlines() if line.split("=")[0] not in ours]
        (clone / ".env").write_text("\n".join([*kept, *(f"{k}={v}" for k, v in ours.items())]) + "\n")
        for command in _commands(commands_block):
            out = _run(command, clone, environment)
            if command.startswith(".venv/bin/backup-pipeline status"):
                shown = {line.split()[1] for line in out.splitlines()[2:] if line.strip()}
                assert shown == {"compta_db", "paie_db"}, out  # the demo's backups are inactive now
        assert len(receiver.take()) == 1  # `notify test` reached the target named in the .env
    finally:
        receiver.close()

    # The example site in both report forms, as docs/examples/README.md says to try it.
    (example,) = _blocks((clone / "docs/examples/README.md").read_text())
    judged = _run("set -e\n" + example, clone, environment)
    statuses = [line.split() for line in judged.splitlines() if "SIRPACAM_" in line]
    assert {(row[0], row[1]) for row in statuses} == {
        ("SIRPACAM_DOUALA_NEWBELL", "compta_db"),
        ("SIRPACAM_DSCHANG_MARCHE", "paie_db"),
    }
    assert all("OK" in row for row in statuses), judged
    assert not _running(clone / "example" / ".backup_pipeline" / "pgdata")  # its `db stop` ran
