"""Schema 13 (db/migrations/0013_regions.py): a version-12 database with results, tasks and alert
state migrates with every existing row in region '' and the slot key (url_id, scheduled_at, region)."""

import importlib

import psycopg2
import pytest

from sitewatch.db import schema


def migrate_to(conn, version: int) -> None:
    """Apply the migrations up to `version` only, as an older sitewatch left the database."""
    with conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE schema_version (version integer PRIMARY KEY, name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())")
    for number, name, sql in schema.migrations():
        if number > version:
            break
        if sql is None:
            module = importlib.import_module(f"sitewatch.db.migrations.{name[:-3]}")
            module.upgrade(conn, lambda cur, n=number, m=name: schema.record_version(cur, n, m))
            conn.commit()
        else:
            with conn, conn.cursor() as cur:
                cur.execute(sql)
                schema.record_version(cur, number, name)


@pytest.fixture
def v12(empty_dsn):
    conn = psycopg2.connect(empty_dsn)
    migrate_to(conn, 12)
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO url (url, period, timeout, next_check_at)"
                    " SELECT 'http://u' || g || '.example/', 60, 5, now() FROM generate_series(1, 20) g")
        # results of two days (two partitions: today's and yesterday's, the only past one there
        # is), and a task outstanding. They reach back 12 hours before midnight, whatever the
        # time of day: 2,000 minutes back left yesterday before 09:20 UTC (no partition there).
        cur.execute("INSERT INTO task_result (url_id, scheduled_at, started_at, ok, checked_by)"
                    " SELECT 1 + g % 20, date_trunc('second', now() - g * ((now() - date_trunc('day', now(), 'UTC')"
                    " + interval '12 hours') / 2000)), now(), g % 5 <> 0, 'v12' FROM generate_series(1, 2000) g")
        cur.execute("INSERT INTO task (url_id, scheduled_at, available_at) SELECT id, now(), now() FROM url")
    yield conn
    conn.close()


def scalar(conn, sql, args=None):
    with conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()[0]


def test_existing_rows_get_region_empty_and_the_key_includes_the_region(v12):
    before = scalar(v12, "SELECT count(*) FROM task_result")
    applied = schema.migrate(v12)
    assert applied[0] == "0013_regions.py"      # then the later versions
    assert scalar(v12, "SELECT count(*) FROM task_result WHERE region = ''") == before == 2000
    assert scalar(v12, "SELECT count(*) FROM task WHERE region = ''") == 20
    assert scalar(v12, "SELECT count(*) FROM url WHERE regions = '{}' AND down_when IS NULL") == 20
    # every partition has the new key, and it is the only unique index left
    assert scalar(v12, """SELECT count(*) FROM pg_inherits h JOIN pg_index i ON i.indrelid = h.inhrelid
                          WHERE h.inhparent = 'task_result'::regclass AND i.indisunique""") \
        == scalar(v12, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'task_result'::regclass")
    slot = "(SELECT url_id, scheduled_at FROM task_result ORDER BY scheduled_at DESC LIMIT 1)"
    # the same slot in another region is a new row; in region '' again, a conflict
    insert = (f"INSERT INTO task_result (url_id, scheduled_at, started_at, ok, checked_by, region)"
              f" SELECT url_id, scheduled_at, now(), true, 'v13', %s FROM {slot} AS s"
              f" ON CONFLICT (url_id, scheduled_at, region) DO NOTHING RETURNING 1")
    with v12, v12.cursor() as cur:
        cur.execute(insert, ("eu",))
        assert cur.rowcount == 1
        cur.execute(insert, ("",))
        assert cur.rowcount == 0
    # a task per (url, region)
    with v12, v12.cursor() as cur:
        cur.execute("INSERT INTO task (url_id, scheduled_at, available_at, region) VALUES (1, now(), now(), 'eu')")
        cur.execute("INSERT INTO task (url_id, scheduled_at, available_at, region) VALUES (1, now(), now(), 'eu')"
                    " ON CONFLICT (url_id, region) DO NOTHING")
        assert cur.rowcount == 0


def test_an_interrupted_key_build_is_resumed(v12):
    """A partition's index left invalid (CREATE INDEX CONCURRENTLY interrupted) is rebuilt."""
    with v12, v12.cursor() as cur:
        cur.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                    " WHERE i.inhparent = 'task_result'::regclass ORDER BY 1 LIMIT 1")
        partition = cur.fetchone()[0]
        cur.execute("ALTER TABLE task_result ADD COLUMN region text NOT NULL DEFAULT ''")
        cur.execute(f"CREATE UNIQUE INDEX {partition}_slot_key ON {partition} (url_id, scheduled_at, region)")
        # what an interrupted concurrent build leaves: the index marked invalid
        cur.execute(f"UPDATE pg_index SET indisvalid = false WHERE indexrelid = '{partition}_slot_key'::regclass")
    assert schema.migrate(v12)[0] == "0013_regions.py"
    assert scalar(v12, f"SELECT indisvalid FROM pg_index WHERE indexrelid = '{partition}_slot_key'::regclass")
    assert scalar(v12, "SELECT count(*) FROM task_result WHERE region = ''") == 2000
