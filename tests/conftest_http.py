"""Pytest plugin: the hostile HTTP server, shared by the whole test session.

Loaded from tests/conftest.py with `pytest_plugins = ["tests.conftest_http"]`.
"""

import pytest

from tests.httpfixture import HostileServer, release_all_hanging


@pytest.fixture(scope="session")
def hostile_server():
    with HostileServer() as server:
        yield server


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """After a test's fixtures are torn down (its `sitewatch run` processes stopped), the
    hostile servers' hanging handlers end: /hang is bounded by the test, not by an hour."""
    yield
    release_all_hanging()
