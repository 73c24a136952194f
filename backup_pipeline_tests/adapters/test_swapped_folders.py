"""Issue 20: a folder swapped for a symbolic link between the check and the use reads nothing outside.

An agent controls its folder: while the scan works in it, it can replace `log/` or `database/` with
a link to somewhere else (an atomic rename in a loop did it to real scans). Here the swap happens
deterministically before each file-system call the deposit module makes, one run per call: before
the first, the second, ... until the run ends without reaching it. Whatever the moment, the module
returns the agent's own file or refuses with a reason; it never returns the file outside.

Also: a FIFO and a device node in log/ or database/ are never opened (a FIFO's writer stays blocked,
a device node is only looked at through an O_PATH descriptor, which does not reach its driver).
"""

from __future__ import annotations

import os
import stat
import threading
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from backup_pipeline.adapters import deposit
from backup_pipeline.adapters.deposit import UnsafeFile, UnsafeFolder

AGENT = "SIRPACAM_DOUALA_NEWBELL"
REPORT = f"20251121_130500_{AGENT}.json"
STAGED = "compta_db.sql.gz"
INSIDE, OUTSIDE = b"the agent's own bytes", b"bytes from OUTSIDE the agent's folder"
# The calls that resolve a name (the moments a swap can change what they find).
RESOLVING = ("open", "stat", "lstat", "scandir", "listdir", "mkdir", "link", "rename", "unlink")


class SwapBefore:
    """Stands in for the deposit module's `os`: before the `nth` call that resolves a name, `swap()`."""

    def __init__(self, nth: int, swap: Callable[[], None]) -> None:
        self.nth, self.swap, self.calls, self.swapped = nth, swap, 0, False

    def __getattr__(self, name: str) -> Any:
        real = getattr(os, name)
        if name not in RESOLVING:
            return real

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls == self.nth:
                self.swap()
                self.swapped = True
            return real(*args, **kwargs)

        return counted


def swapper(folder: Path, outside: Path) -> Callable[[], None]:
    def swap() -> None:
        folder.rename(folder.with_name(folder.name + ".real"))
        folder.symlink_to(outside, target_is_directory=True)

    return swap


def every_moment(
    monkeypatch: pytest.MonkeyPatch, build: Callable[[int], tuple[Path, Path]], use: Callable[[Path], bytes]
) -> list[str]:
    """Run `use` once per moment a swap can happen; what each run returned (or why it refused)."""
    outcomes = []
    for nth in range(1, 200):
        folder, root = build(nth)
        fake = SwapBefore(nth, swapper(folder, root.parent / f"outside{nth}"))
        monkeypatch.setattr(deposit, "os", fake)
        try:
            got = use(root)
            assert got != OUTSIDE, f"swapped before call {nth}: the file outside was read"
            assert got == INSIDE, (nth, got)
            outcomes.append("inside")
        except (UnsafeFile, UnsafeFolder) as exc:
            outcomes.append(f"refused: {exc}")
        finally:
            monkeypatch.setattr(deposit, "os", os)
        if not fake.swapped:
            return outcomes
    raise AssertionError("the function never ended without reaching the swap")


def deposit_with(tmp_path: Path, nth: int, folder: str, name: str) -> tuple[Path, Path]:
    base = tmp_path / str(nth)
    agent = base / "deposit" / AGENT
    (agent / "log").mkdir(parents=True)
    (agent / folder).mkdir(exist_ok=True)
    (agent / folder / name).write_bytes(INSIDE)
    outside = base / f"outside{nth}"
    outside.mkdir()
    (outside / name).write_bytes(OUTSIDE)
    return agent / folder, base / "deposit"


def read_every_report(root: Path) -> bytes:
    agents, skipped = deposit.discover_agents(root)
    if not agents:
        raise UnsafeFolder(0, skipped[0].reason)
    (agent,) = agents
    reports = list(deposit.list_reports(agent))
    assert [r.name for r in reports] in ([REPORT], []), reports
    if not reports:
        raise UnsafeFolder(0, "nothing listed")
    return deposit.read_report(reports[0], 1 << 20)


def test_log_swapped_for_a_link_at_any_moment_never_yields_a_report_from_outside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcomes = every_moment(
        monkeypatch, lambda nth: deposit_with(tmp_path, nth, "log", REPORT), read_every_report
    )
    assert outcomes[-1] == "inside"
    assert any(o.startswith("refused") for o in outcomes), outcomes
    assert all("symbolic link" in o or o == "inside" for o in outcomes if o != "refused: nothing listed")


def read_staged(root: Path) -> bytes:
    with deposit.open_staged_file(root / AGENT, STAGED) as fd:
        return os.read(fd, 1 << 20)


@pytest.mark.parametrize("folder", ["database", "databases"])
def test_database_swapped_for_a_link_at_any_moment_never_yields_a_dump_from_outside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: str
) -> None:
    outcomes = every_moment(monkeypatch, lambda nth: deposit_with(tmp_path, nth, folder, STAGED), read_staged)
    assert outcomes[-1] == "inside"
    assert any("symbolic link" in o for o in outcomes), outcomes


def test_the_agent_folder_swapped_for_a_link_at_any_moment_never_yields_a_dump_from_outside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def build(nth: int) -> tuple[Path, Path]:
        folder, root = deposit_with(tmp_path, nth, "database", STAGED)
        outside = root.parent / f"outside{nth}"
        (outside / "database").mkdir()
        (outside / "database" / STAGED).write_bytes(OUTSIDE)
        return folder.parent, root

    outcomes = every_moment(monkeypatch, build, read_staged)
    assert outcomes[-1] == "inside"
    assert any("symbolic link" in o for o in outcomes), outcomes


def test_a_staged_file_swapped_for_a_link_at_any_moment_is_never_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def build(nth: int) -> tuple[Path, Path]:
        folder, root = deposit_with(tmp_path, nth, "database", STAGED)
        return folder / STAGED, root

    def swap_file(nth: int, path: Path, root: Path) -> Callable[[], None]:
        def swap() -> None:
            path.unlink()
            path.symlink_to(root.parent / f"outside{nth}" / STAGED)

        return swap

    for nth in range(1, 200):
        path, root = build(nth)
        fake = SwapBefore(nth, swap_file(nth, path, root))
        monkeypatch.setattr(deposit, "os", fake)
        try:
            assert read_staged(root) == INSIDE
        except UnsafeFile as exc:
            assert "symbolic link" in str(exc)
        finally:
            monkeypatch.setattr(deposit, "os", os)
        if not fake.swapped:
            break


# ---------------------------------------------------------------- nodes that must never be opened


def fifo_writer(path: Path) -> tuple[threading.Thread, list[str]]:
    """A writer blocked opening the FIFO: it gets through only if someone opens it to read."""
    opened: list[str] = []

    def write() -> None:
        fd = os.open(path, os.O_WRONLY)
        opened.append("opened")
        os.close(fd)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread, opened


def unblock(path: Path, thread: threading.Thread) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # let the writer go, whatever happened
    thread.join(5)
    os.close(fd)


def test_a_fifo_report_or_dump_is_never_opened(tmp_path: Path) -> None:
    agent_dir = tmp_path / "deposit" / AGENT
    (agent_dir / "log").mkdir(parents=True)
    (agent_dir / "database").mkdir()
    for path, read in (
        (agent_dir / "log" / REPORT, lambda: read_every_report(tmp_path / "deposit")),
        (agent_dir / "database" / STAGED, lambda: read_staged(tmp_path / "deposit")),
    ):
        os.mkfifo(path)
        thread, opened = fifo_writer(path)
        with pytest.raises(UnsafeFile, match="is a named pipe, not a regular file"):
            read()
        thread.join(0.3)
        assert opened == [], f"{path.name}: the FIFO was opened for reading"
        unblock(path, thread)
        path.unlink()


def test_a_device_node_is_refused_without_being_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(Creating a device node needs root, as the tests run: see test_filesystem_traps.)"""
    agent_dir = tmp_path / "deposit" / AGENT
    (agent_dir / "log").mkdir(parents=True)
    (agent_dir / "database").mkdir()
    os.mknod(agent_dir / "log" / REPORT, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null's
    os.mknod(agent_dir / "database" / STAGED, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    opens: list[tuple[str, int]] = []
    real_open = os.open

    def spy(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        opens.append((str(path), flags))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(deposit, "os", types.SimpleNamespace(**{**vars(os), "open": spy}))
    with pytest.raises(UnsafeFile, match="is a special file, not a regular file"):
        read_every_report(tmp_path / "deposit")
    with pytest.raises(UnsafeFile, match="is a special file, not a regular file"):
        read_staged(tmp_path / "deposit")
    node_opens = [(p, f) for p, f in opens if p.endswith((REPORT, STAGED))]
    assert node_opens, "looked at"
    assert all(f & os.O_PATH for _, f in node_opens), f"a device node was opened: {node_opens}"
