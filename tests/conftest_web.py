"""Fixtures for the web tests: a seeded database and the real `sitewatch web` on 127.0.0.1."""

import subprocess
import sys
import time

import httpx
import psycopg2
import pytest

from tests import webseed
from tests.conftest import _fresh_database, clean_env
from tests.historydata import clear_of_hour_turn


def seed_database(dsn):
    """Seed a migrated database with webseed's data; returns (dsn, ids)."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        ids = webseed.seed(conn)
    finally:
        conn.close()
    return dsn, ids


@pytest.fixture
def seeded(dsn):
    """The test's database with webseed's data; returns (dsn, ids)."""
    return seed_database(dsn)


@pytest.fixture(scope="module")
def shared_seeded(pg_base_dsn, template_db):
    """One seeded database for a module's tests that only read it (seeding and the rollups it
    runs take about a second a test); returns (dsn, ids)."""
    for dsn in _fresh_database(pg_base_dsn, "sitewatch_w", template_db):
        conn = psycopg2.connect(dsn)
        try:        # the figures tests compare windows that start at a whole hour: one hour for the module
            clear_of_hour_turn(conn, 90)
        finally:
            conn.close()
        yield seed_database(dsn)


class WebServer:
    """`sitewatch web --listen 127.0.0.1:0` as a subprocess; .url is where it listens."""

    def __init__(self, tmp_path, dsn, env=None):
        full_env = clean_env(tmp_path, DB_DSN=dsn, SITEWATCH_LOG__FORMAT="json")
        full_env.update({k: str(v) for k, v in (env or {}).items()})
        self.proc = subprocess.Popen([sys.executable, "-m", "sitewatch", "web", "--listen", "127.0.0.1:0"],
                                     env=full_env, cwd=tmp_path, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("sitewatch web: serving on "):
            self.proc.kill()
            raise AssertionError(f"sitewatch web did not start: {line!r} {self.proc.stderr.read()}")
        self.url = line.split("serving on ", 1)[1].strip().rstrip("/")
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def get(self, path, **kwargs):
        return self.client.get(path, **kwargs)

    def stop(self) -> int:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def web_factory(tmp_path):
    started = []

    def start(dsn, env=None):
        server = WebServer(tmp_path, dsn, env)
        started.append(server)
        return server
    yield start
    for server in started:
        server.stop()


@pytest.fixture
def web(seeded, web_factory):
    """A web server on the seeded database; web.ids holds the seeded URL ids."""
    dsn, ids = seeded
    server = web_factory(dsn)
    server.ids = ids
    server.dsn = dsn
    return server


@pytest.fixture(scope="module")
def shared_web(shared_seeded, tmp_path_factory):
    """One web server on shared_seeded for a module's GET-only tests; .ids, .dsn as for `web`."""
    dsn, ids = shared_seeded
    server = WebServer(tmp_path_factory.mktemp("web"), dsn)
    server.ids, server.dsn = ids, dsn
    yield server
    server.stop()


def wait_for(condition, timeout=10.0, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    return condition()
