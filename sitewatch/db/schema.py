"""Versioned migrations: numbered .sql files in sitewatch/migrations.

`migrate` is idempotent and safe when several processes run it at once: it
holds a transaction-level advisory lock while it reads the version and applies
what is missing, all in one transaction.

A migration may instead be a Python module (NNNN_name.py with `upgrade(conn)`)
when it must not run in one transaction: converting a big table online, in
resumable steps that each commit (0003_history.py). It runs under a
session-level advisory lock (the same key), and its last step records the
version in the same transaction as its final change.
"""

import importlib
import time
from importlib import resources

from ..errors import SchemaTooNew

# Arbitrary constant shared by every sitewatch process: "the migration lock".
MIGRATION_LOCK_KEY = 0x5173_7761_7463_68


def migrations() -> list[tuple[int, str, str | None]]:
    """[(version, filename, sql)] in order; sql is None for a Python migration."""
    found = []
    for item in resources.files("sitewatch.db.migrations").iterdir():
        if item.name[:1].isdigit() and item.name.endswith(".sql"):
            found.append((int(item.name.split("_", 1)[0]), item.name, item.read_text(encoding="utf-8")))
        elif item.name[:1].isdigit() and item.name.endswith(".py"):
            found.append((int(item.name.split("_", 1)[0]), item.name, None))
    return sorted(found)


LATEST_VERSION = migrations()[-1][0]


def _too_new(version: int) -> SchemaTooNew:
    return SchemaTooNew(f"the database schema is at version {version}, newer than this sitewatch "
                        f"understands ({LATEST_VERSION}); upgrade sitewatch")


def current_version(cur) -> int:
    cur.execute("SELECT to_regclass('schema_version') IS NOT NULL")
    if not cur.fetchone()[0]:
        return 0
    cur.execute("SELECT coalesce(max(version), 0) FROM schema_version")
    return cur.fetchone()[0]


def migrate(conn) -> list[str]:
    """Bring the database to LATEST_VERSION; return the names of the migrations applied.

    `conn` must not be in autocommit mode. SQL migrations in a row are applied in one
    transaction; a Python migration commits in its own steps (see the module docstring).
    """
    applied = []
    while True:
        python_step = None
        with conn:  # one transaction: all the SQL migrations up to the next Python one, or none
            with conn.cursor() as cur:
                _wait_for_lock(cur, "pg_try_advisory_xact_lock")
                cur.execute("CREATE TABLE IF NOT EXISTS schema_version ("
                            " version integer PRIMARY KEY, name text NOT NULL,"
                            " applied_at timestamptz NOT NULL DEFAULT now())")
                version = current_version(cur)
                if version > LATEST_VERSION:
                    raise _too_new(version)
                for number, name, sql in migrations():
                    if number <= version:
                        continue
                    if sql is None:
                        python_step = (number, name)
                        break
                    cur.execute(sql)
                    record_version(cur, number, name)
                    applied.append(name)
        if python_step is None:
            return applied
        if _run_python_migration(conn, *python_step):
            applied.append(python_step[1])


def _wait_for_lock(cur, function: str) -> None:
    """Take the migration lock, waiting as long as it takes.

    Another host may hold it for minutes (a Python migration on a big table):
    polling with the try- variant never runs into statement_timeout as a blocked
    pg_advisory_lock would.
    """
    while True:
        cur.execute(f"SELECT {function}(%s)", (MIGRATION_LOCK_KEY,))
        if cur.fetchone()[0]:
            return
        time.sleep(0.5)


def record_version(cur, number: int, name: str) -> None:
    cur.execute("INSERT INTO schema_version (version, name) VALUES (%s, %s)", (number, name))


def _run_python_migration(conn, number: int, name: str) -> bool:
    """Run one Python migration under the session-level migration lock; False if another did it."""
    module = importlib.import_module(f"sitewatch.db.migrations.{name[:-3]}")
    with conn.cursor() as cur:
        _wait_for_lock(cur, "pg_try_advisory_lock")
    conn.commit()
    try:
        with conn.cursor() as cur:
            version = current_version(cur)
        conn.commit()
        if version >= number:
            return False
        module.upgrade(conn, lambda cur: record_version(cur, number, name))
        return True
    finally:
        conn.rollback()
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
        conn.commit()


def check_version(conn) -> int:
    """Raise SchemaTooNew if a newer sitewatch migrated this database."""
    with conn, conn.cursor() as cur:
        version = current_version(cur)
    if version > LATEST_VERSION:
        raise _too_new(version)
    return version
