"""How the suite is spread over pytest-xdist workers (`scripts/test.sh` runs `-n 3 --dist loadgroup`).

Every test is sent to a worker on its own, except the tests of a module that use a module-scoped
fixture (a cluster, a scanned site): they go to one worker together (an `xdist_group` named after the
module, added here), so that what they share is built once. Nothing has to be declared: the tests of
a new module with a module-scoped fixture are grouped, any other test is spread. What is worth
sharing between modules is session-scoped: built once per worker (the embedded PostgreSQL, the drill
environment, the sample dumps, the robustness tests' stage).

The order tests are handed out in is pytest-randomly's (shuffled from the seed), in tiers: modules of
`slow` tests first (grouped ones before the others), then grouped modules, then the rest, so that the
long end-to-end tests start at once and the many short tests fill the gaps at the end
(a long test handed out last would run alone). Modules stay whole, in the order of the seed within their tier.

Without xdist (`-n 0`, or a single module run by hand) only the order changes, by the same tiers.
"""

from __future__ import annotations

import pytest

SHARED_SCOPES = {"module", "package", "class"}  # what a test shares with the other tests of its module


def shares_a_fixture(item: pytest.Item) -> bool:
    """Whether the test uses a fixture that outlives it but not its module (the session's are per
    worker, and built once by each)."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(
        definitions[-1].scope in SHARED_SCOPES
        for definitions in info.name2fixturedefs.values()
        if definitions
    )


def module_of(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]


def tier(items: list[pytest.Item]) -> tuple[bool, bool]:
    """Slow modules first, and of each kind the modules whose tests go to one worker together (the
    longest units of work) first."""
    slow = any(item.get_closest_marker("slow") for item in items)
    return not slow, not any(shares_a_fixture(item) for item in items)


@pytest.hookimpl(tryfirst=True)  # after pytest-randomly's shuffle (a wrapper), before xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(module_of(item), []).append(item)
    # xdist's workers run with `dist` "no" and `loadgroup` set; the controller collects nothing
    grouping = getattr(config.option, "loadgroup", False) or config.getoption("dist", "no") == "loadgroup"
    for name, tests in modules.items():
        for item in tests:
            if grouping and shares_a_fixture(item):
                item.add_marker(pytest.mark.xdist_group(name))
    ordered = sorted(modules.values(), key=tier)  # stable: the seed's order within a tier
    items[:] = [item for tests in ordered for item in tests]
