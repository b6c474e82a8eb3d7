"""Schema 3 (history/migration.py): task_result of a version-1 database, with rows in it, becomes
partitioned by day without losing a row, while another connection keeps inserting, and resumes
after an interruption."""

import threading
import time

import psycopg2
import pytest

from sitewatch import logs
from sitewatch.db import schema
from sitewatch.history import migration, partitions

V1_ROWS = 30_000


def at_version_1(dsn):
    """A database migrated to version 1 only, as an older sitewatch left it, with rows in it."""
    conn = psycopg2.connect(dsn)
    number, name, sql = schema.migrations()[0]
    assert number == 1
    with conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE schema_version (version integer PRIMARY KEY, name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())")
        cur.execute(sql)
        schema.record_version(cur, number, name)
        cur.execute("INSERT INTO url (url, period, timeout, next_check_at)"
                    " SELECT 'http://u' || g || '.example/', 60, 5, now() FROM generate_series(1, 100) g")
        # Three days of results, some failed, some without a response time, one removed URL's.
        cur.execute("""
            INSERT INTO task_result (url_id, scheduled_at, started_at, response_time_ms, status_code, ok,
                                     error_kind, error, cert_days_left, checked_by)
            SELECT 1 + g %% 101, now() - interval '3 days' + g * interval '8 s', now(),
                   CASE WHEN g %% 7 = 0 THEN NULL ELSE g %% 500 END, CASE WHEN g %% 7 = 0 THEN NULL ELSE 200 END,
                   g %% 7 <> 0, CASE WHEN g %% 7 = 0 THEN 'timeout' END, CASE WHEN g %% 7 = 0 THEN 'a, "quoted"' END,
                   g %% 90, 'v1'
            FROM generate_series(1, %s) g""", (V1_ROWS,))
    return conn


def snapshot(conn):
    with conn, conn.cursor() as cur:
        cur.execute("SELECT url_id, scheduled_at, started_at, response_time_ms, status_code, regex_matched, ok,"
                    " error_kind, error, cert_days_left, attempt, checked_by, recorded_at"
                    " FROM task_result WHERE checked_by = 'v1' ORDER BY url_id, scheduled_at")
        return cur.fetchall()


class Writer(threading.Thread):
    """Inserts results the way a version-1 consumer does, until stopped; records failures and waits."""

    def __init__(self, dsn):
        super().__init__(daemon=True)
        self.dsn, self.stop, self.errors, self.written, self.longest = dsn, threading.Event(), [], 0, 0.0

    def run(self):
        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        n = 0
        while not self.stop.is_set():
            n += 1
            t0 = time.monotonic()
            try:
                with conn.cursor() as cur:
                    # No conflict target: schema.migrate goes on past 0003 to 0013, whose slot key adds
                    # the region (a version-12 host's ON CONFLICT (url_id, scheduled_at) fails after it,
                    # by design: 0013_regions.py). This test is about 0003 keeping every row.
                    cur.execute("INSERT INTO task_result (url_id, scheduled_at, started_at, ok, checked_by)"
                                " VALUES (1000, now() + make_interval(secs => %s * 0.001), now(), true, 'writer')"
                                " ON CONFLICT DO NOTHING", (n,))
                self.written += 1
            except psycopg2.Error as e:
                self.errors.append(str(e))
            self.longest = max(self.longest, time.monotonic() - t0)
            time.sleep(0.002)
        conn.close()


def test_migration_keeps_every_row_while_writers_continue(empty_dsn):
    conn = at_version_1(empty_dsn)
    before = snapshot(conn)
    assert len(before) == V1_ROWS
    writer = Writer(empty_dsn)
    writer.start()
    time.sleep(0.3)
    applied = schema.migrate(conn)
    time.sleep(0.3)
    writer.stop.set()
    writer.join()

    assert "0003_history.py" in applied
    assert snapshot(conn) == before                       # the same rows, every column
    assert writer.errors == []
    assert writer.written > 50
    assert writer.longest < 2.0                           # held up for a moment at most
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM task_result WHERE checked_by = 'writer'")
        assert cur.fetchone()[0] == writer.written        # none lost across the swap
        cur.execute("SELECT relkind FROM pg_class WHERE relname = 'task_result'")
        assert cur.fetchone()[0] == "p"
        parts = partitions.attached(cur)
        assert parts[0]["name"] == "task_result_legacy" and parts[0]["lower"] is None
        cur.execute("SELECT now() + interval '7 days'")
        assert parts[-1]["upper"] > cur.fetchone()[0]     # days ahead exist
        cur.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'task_result'")
        assert "id" not in {name for (name,) in cur.fetchall()}
        # Inserts keep working, and a slot is still recorded once.
        for ok in (True, False):
            cur.execute("INSERT INTO task_result (url_id, scheduled_at, started_at, ok, checked_by)"
                        " VALUES (1, date_trunc('minute', now()), now(), %s, 'after')"
                        " ON CONFLICT (url_id, scheduled_at, region) DO NOTHING", (ok,))
        cur.execute("SELECT count(*) FROM task_result WHERE checked_by = 'after'")
        assert cur.fetchone()[0] == 1
        cur.execute("SELECT max(version) FROM schema_version")
        assert cur.fetchone()[0] == schema.LATEST_VERSION
    assert schema.migrate(conn) == []                     # idempotent
    conn.close()


@pytest.mark.parametrize("stopped_after", ["constraint", "validate"])
def test_interrupted_migration_resumes(empty_dsn, stopped_after):
    conn = at_version_1(empty_dsn)
    before = snapshot(conn)
    log = logs.get()
    with conn.cursor() as cur:
        cur.execute("SET statement_timeout = 0")
    migration._step_constraint(conn, log)
    if stopped_after == "validate":
        migration._step_validate(conn, log)
    conn.close()                                          # the process died here

    conn = psycopg2.connect(empty_dsn)
    assert "0003_history.py" in schema.migrate(conn)
    assert snapshot(conn) == before
    with conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('task_result_migration'), to_regclass('task_result_legacy') IS NOT NULL")
        assert cur.fetchone() == (None, True)
    conn.close()


def test_fresh_database_gets_daily_partitions_only(empty_dsn):
    conn = psycopg2.connect(empty_dsn)
    schema.migrate(conn)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                    " WHERE i.inhparent = 'task_result'::regclass")
        names = {name for (name,) in cur.fetchall()}
    assert "task_result_legacy" not in names
    assert len(names) >= 9                                # yesterday, today, 7 ahead
    conn.close()


def test_conversion_waits_for_a_long_transaction_and_then_completes(empty_dsn):
    """Recovery path (issue 25 §4.7): a transaction reading task_result for longer than the
    conversion's lock_timeout (3 s): the conversion gives up its lock attempt instead of queueing
    every writer behind it, retries, and completes once the reader is done; no row lost, and the
    reader is not disturbed."""
    conn = at_version_1(empty_dsn)
    before = snapshot(conn)
    reader = psycopg2.connect(empty_dsn)
    with reader.cursor() as cur:
        cur.execute("SELECT count(*) FROM task_result")      # ACCESS SHARE, held until commit
        assert cur.fetchone()[0] == V1_ROWS
    hold_s = 9.0
    released = threading.Timer(hold_s, reader.commit)
    writer = Writer(empty_dsn)
    writer.start()
    t0 = time.monotonic()
    released.start()
    try:
        applied = schema.migrate(conn)
    finally:
        released.join()
        writer.stop.set()
        writer.join()
    took = time.monotonic() - t0
    reader.close()
    assert "0003_history.py" in applied
    assert took >= hold_s - 0.5, f"done in {took:.1f} s, while the reader still held its lock?"
    # A lock request waiting behind the reader queues every writer behind it: the conversion gives
    # up after its 3 s lock_timeout and retries, so no write waits anywhere near the 9 s.
    assert writer.errors == [] and writer.written > 50
    assert writer.longest < hold_s - 3, f"a write waited {writer.longest:.1f} s"
    assert snapshot(conn) == before
    with conn, conn.cursor() as cur:
        cur.execute("SELECT relkind FROM pg_class WHERE relname = 'task_result'")
        assert cur.fetchone()[0] == "p"
    conn.close()
