"""Where the tests find the project and their committed fixtures (never outside the repository)."""

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
PROJECT_ROOT = TESTS.parent
FIXTURES = TESTS / "fixtures"
