"""Pytest plugin: the hostile HTTP server, shared by the whole test session.

Loaded from tests/conftest.py with `pytest_plugins = ["tests.conftest_http"]`.
"""

import pytest

from tests.httpfixture import HostileServer


@pytest.fixture(scope="session")
def hostile_server():
    with HostileServer() as server:
        yield server
