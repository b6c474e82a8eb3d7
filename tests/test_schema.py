"""Schema migrations on a real PostgreSQL (DESIGN.md section 2)."""

import subprocess
import sys
import threading

import psycopg2
import pytest

from sitewatch.db import schema
from sitewatch.errors import SchemaTooNew
from tests.conftest import clean_env, count


def connect(dsn):
    return psycopg2.connect(dsn)


def columns(conn, table):
    with conn.cursor() as cur:
        cur.execute("SELECT column_name, data_type, is_nullable FROM information_schema.columns"
                    " WHERE table_schema = 'public' AND table_name = %s", (table,))
        return {name: (kind, nullable == "YES") for name, kind, nullable in cur.fetchall()}


def unique_constraints(conn, table):
    """Column lists of the UNIQUE constraints and unique indexes of `table`."""
    with conn.cursor() as cur:
        cur.execute("""
            SELECT array_agg(a.attname ORDER BY k.ord)
            FROM pg_index i
            CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
            WHERE i.indrelid = %s::regclass AND i.indisunique
            GROUP BY i.indexrelid
        """, (table,))
        return {tuple(row[0]) for row in cur.fetchall()}


@pytest.fixture
def empty(empty_dsn):
    conn = connect(empty_dsn)
    yield conn
    conn.close()


def test_migrate_creates_the_contract_tables(empty):
    applied = schema.migrate(empty)
    assert applied == [name for _, name, _ in schema.migrations()]

    url = columns(empty, "url")
    for column in ("id", "url", "period", "regex", "created_at", "next_check_at"):
        assert column in url, f"url.{column} missing"
    assert url["regex"][1] is True                                # null when no regex

    task = columns(empty, "task")
    for column in ("id", "url_id", "scheduled_at", "status", "attempts"):
        assert column in task, f"task.{column} missing"

    result = columns(empty, "task_result")
    for column in ("url_id", "scheduled_at", "started_at", "response_time_ms", "status_code", "regex_matched",
                   "ok", "error_kind", "error", "checked_by"):
        assert column in result, f"task_result.{column} missing"
    # Null when there is no response / no regex / no error.
    for column in ("response_time_ms", "status_code", "regex_matched", "error_kind", "error"):
        assert result[column][1] is True, f"task_result.{column} must be nullable"
    assert result["ok"] == ("boolean", False)

    assert ("url_id", "scheduled_at", "region") in unique_constraints(empty, "task_result")   # 0013: a slot per region
    assert ("url",) in unique_constraints(empty, "url")


def test_unique_slot_is_enforced(empty):
    schema.migrate(empty)
    with empty, empty.cursor() as cur:
        cur.execute("INSERT INTO task_result (url_id, scheduled_at, started_at, ok, checked_by)"
                    " VALUES (1, date_trunc('hour', now()), now(), true, 'a')")  # a slot with a partition
    with pytest.raises(psycopg2.errors.UniqueViolation):
        with empty, empty.cursor() as cur:
            cur.execute("INSERT INTO task_result (url_id, scheduled_at, started_at, ok, checked_by)"
                        " VALUES (1, date_trunc('hour', now()), now(), false, 'b')")
    assert count(empty, "task_result") == 1


def test_a_url_has_at_most_one_task(empty):
    schema.migrate(empty)
    with pytest.raises(psycopg2.errors.UniqueViolation):
        with empty, empty.cursor() as cur:
            cur.execute("INSERT INTO url (url, period, timeout, next_check_at)"
                        " VALUES ('http://a.example/', 60, 10, now()) RETURNING id")
            url_id = cur.fetchone()[0]
            for _ in range(2):
                cur.execute("INSERT INTO task (url_id, scheduled_at, available_at) VALUES (%s, now(), now())",
                            (url_id,))


def test_migrate_is_idempotent(empty):
    schema.migrate(empty)
    with empty, empty.cursor() as cur:
        cur.execute("INSERT INTO url (url, period, timeout, next_check_at)"
                    " VALUES ('http://kept.example/', 60, 10, now())")
    assert schema.migrate(empty) == []
    assert schema.migrate(empty) == []
    assert schema.check_version(empty) == schema.LATEST_VERSION
    assert count(empty, "url") == 1                                # data survives
    assert count(empty, "schema_version") == len(schema.migrations())


def test_migration_versions_are_distinct_and_increasing():
    versions = [number for number, _, _ in schema.migrations()]
    assert versions == sorted(set(versions))
    assert versions[-1] == schema.LATEST_VERSION


def test_concurrent_migrations_of_an_empty_database(empty_dsn):
    workers = 4
    barrier = threading.Barrier(workers)
    errors, applied = [], []

    def migrate():
        conn = connect(empty_dsn)
        try:
            barrier.wait()
            applied.append(schema.migrate(conn))
        except Exception as e:  # collected and asserted on below
            errors.append(e)
        finally:
            conn.close()

    threads = [threading.Thread(target=migrate) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(applied) == workers
    # Exactly one of them did the work; the others found it done.
    assert sorted(len(names) for names in applied) == [0] * (workers - 1) + [len(schema.migrations())]

    conn = connect(empty_dsn)
    with conn.cursor() as cur:
        cur.execute("SELECT version, count(*) FROM schema_version GROUP BY version ORDER BY version")
        assert cur.fetchall() == [(number, 1) for number, _, _ in schema.migrations()]
    conn.close()


def test_concurrent_db_migrate_commands(empty_dsn, tmp_path):
    env = clean_env(tmp_path, DB_DSN=empty_dsn)
    procs = [subprocess.Popen([sys.executable, "-m", "sitewatch", "db", "migrate"], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert f"version {schema.LATEST_VERSION}" in out
    conn = connect(empty_dsn)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT version) FROM schema_version")
        assert cur.fetchone() == (len(schema.migrations()), len(schema.migrations()))
    conn.close()


@pytest.fixture
def newer_schema(db):
    """The test's database as a newer sitewatch would leave it."""
    with db.cursor() as cur:
        cur.execute("INSERT INTO schema_version (version, name) VALUES (%s, 'from_the_future.sql')",
                    (schema.LATEST_VERSION + 1,))
    return db


def test_schema_newer_than_this_sitewatch_is_refused(newer_schema, dsn):
    conn = connect(dsn)
    with pytest.raises(SchemaTooNew, match="upgrade sitewatch"):
        schema.migrate(conn)
    with pytest.raises(SchemaTooNew):
        schema.check_version(conn)
    conn.close()


@pytest.mark.parametrize("args", [["url", "list"], ["url", "add", "http://a.example/"], ["db", "migrate"]])
def test_commands_refuse_a_newer_schema(cli, newer_schema, args):
    result = cli(*args)
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "newer" in lines[0] and "upgrade" in lines[0]
    assert f"version {schema.LATEST_VERSION + 1}" in lines[0]
    assert "Traceback" not in result.stderr
    assert count(newer_schema, "url") == 0                         # nothing written
