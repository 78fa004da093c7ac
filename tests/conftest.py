"""Shared fixtures: tools on PATH, a session-wide scratch directory."""
import pytest

from sushi import tools

tools.setup()


@pytest.fixture(scope="session")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("sushi")
