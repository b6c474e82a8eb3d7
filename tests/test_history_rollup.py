"""Rollups on a real PostgreSQL (issue 9, tests 1-4): they equal a recomputation from raw rows,
reruns are identical, concurrent jobs compute each bucket once and never move the watermark back,
and a job killed before its commit leaves nothing behind."""

import datetime
import os
import signal
import subprocess
import sys
import threading
import time

import psycopg2

from sitewatch.history import maintenance, rollup, uptime
from tests.conftest import clean_env
from tests.historydata import (
    add_urls,
    assert_rollups_match_raw,
    cfg,
    clear_of_hour_turn,
    ensure_past_partitions,
    insert_results,
    rollup_rows,
    watermark,
)
from tests.historydata import conn as conn  # noqa: F401  (fixture)

HOUR = datetime.timedelta(hours=1)


def db_now(conn, need_s: float = 60):
    """now, and the hour every result before which is final: the grace window is 300 s here.
    Waits first if that hour would turn within need_s (the test's expectations use it throughout)."""
    clear_of_hour_turn(conn, need_s, offset_s=300)
    with conn.cursor() as cur:
        cur.execute("SELECT now(), date_trunc('hour', now() - interval '300 s', 'UTC')")
        now, hour = cur.fetchone()
    conn.commit()
    return now, hour


def test_rollups_equal_a_recomputation_from_raw_rows_late_rows_included(conn):
    ensure_past_partitions(conn, 3)
    urls = add_urls(conn, 4)
    now, hour = db_now(conn)
    start = hour - 48 * HOUR
    insert_results(conn, urls, start, hour - 3 * HOUR)
    # A slot still outstanding three hours ago (a consumer holds its result in memory while the
    # database was away): the watermark must wait for it.
    with conn.cursor() as cur:
        cur.execute("INSERT INTO task (url_id, scheduled_at, available_at, status) VALUES (%s, %s, now(), 1)",
                    (urls[0], hour - 3 * HOUR + datetime.timedelta(seconds=30)))
    conn.commit()
    assert maintenance.run_once(conn, cfg()) is not None
    assert watermark(conn, "hour") == hour - 3 * HOUR     # not past the outstanding slot's hour
    # Now the late result arrives (and the rest of the recent hours), and the task is done.
    insert_results(conn, urls, hour - 3 * HOUR, now - datetime.timedelta(minutes=1))
    with conn.cursor() as cur:
        cur.execute("DELETE FROM task")
    conn.commit()
    summary = maintenance.run_once(conn, cfg())
    assert summary["hours_rolled_up"] >= 2
    until = watermark(conn, "hour")
    assert until == hour
    assert assert_rollups_match_raw(conn, "rollup_hour", "hour", until) >= 4 * 45
    days_until = watermark(conn, "day")
    assert days_until == datetime.datetime.combine(until.date(), datetime.time(), until.tzinfo)
    assert assert_rollups_match_raw(conn, "rollup_day", "day", days_until) >= 4


def test_rerunning_any_window_gives_identical_rows(conn):
    ensure_past_partitions(conn, 3)
    urls = add_urls(conn, 3)
    _, hour = db_now(conn)
    insert_results(conn, urls, hour - 50 * HOUR, hour - HOUR, step_s=30)
    maintenance.run_once(conn, cfg())
    hours, days = rollup_rows(conn, "rollup_hour"), rollup_rows(conn, "rollup_day")
    assert len(hours) >= 3 * 47 and days
    for start, end in [(hour - 50 * HOUR, hour), (hour - 30 * HOUR, hour - 29 * HOUR), (hour - 7 * HOUR, hour)]:
        with conn.cursor() as cur:
            rollup.recompute_hours(cur, start, end)
        conn.commit()
    with conn.cursor() as cur:
        cur.execute("SELECT min(bucket), max(bucket) + interval '1 day' FROM rollup_day")
        first, last = cur.fetchone()
        rollup.recompute_days(cur, first, last)
    conn.commit()
    maintenance.run_once(conn, cfg())                      # and the job again
    assert rollup_rows(conn, "rollup_hour") == hours
    assert rollup_rows(conn, "rollup_day") == days


def test_concurrent_jobs_over_48_simulated_hours(dsn, conn):
    """Four 'hosts' run the job in a loop while results arrive hour by hour. Time is simulated by
    an outstanding task whose slot moves forward an hour at a time: nothing after it is final."""
    ensure_past_partitions(conn, 3)
    urls = add_urls(conn, 3)
    _, hour = db_now(conn)
    start = hour - 48 * HOUR
    with conn.cursor() as cur:
        cur.execute("INSERT INTO task (url_id, scheduled_at, available_at) VALUES (%s, %s, now())",
                    (urls[0], start))
    conn.commit()
    stop = threading.Event()
    errors, seen = [], []

    def host():
        c = psycopg2.connect(dsn)
        try:
            while not stop.is_set():
                maintenance.run_once(c, cfg())
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))
        finally:
            c.close()

    def observer():
        c = psycopg2.connect(dsn)
        while not stop.is_set():
            seen.append(watermark(c, "hour"))
            time.sleep(0.01)
        c.close()

    threads = [threading.Thread(target=host) for _ in range(4)] + [threading.Thread(target=observer)]
    for t in threads:
        t.start()
    for h in range(48):
        insert_results(conn, urls, start + h * HOUR, start + (h + 1) * HOUR, step_s=120)
        with conn.cursor() as cur:
            cur.execute("UPDATE task SET scheduled_at = %s", (start + (h + 1) * HOUR,))
        conn.commit()
        time.sleep(0.02)
    with conn.cursor() as cur:
        cur.execute("DELETE FROM task")
    conn.commit()
    deadline = time.monotonic() + 30
    while watermark(conn, "hour") != hour and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert watermark(conn, "hour") == hour
    values = [v for v in seen if v is not None]
    assert values == sorted(values), "the watermark moved backwards"
    assert len(set(values)) > 3                            # it did advance in steps
    assert assert_rollups_match_raw(conn, "rollup_hour", "hour", hour) == 3 * 48
    assert_rollups_match_raw(conn, "rollup_day", "day", watermark(conn, "day"))


def test_job_killed_before_its_watermark_moves_changes_no_reader_and_is_redone(dsn, conn, tmp_path):
    """The rollup's statements commit one by one (they must not hold a transaction across the
    job's rests); the watermark moves last. A job killed before it moves leaves rows readers do
    not take (they read rollup_hour only before the watermark), and the next run writes them
    again, exactly."""
    ensure_past_partitions(conn, 3)
    urls = add_urls(conn, 3)
    _, hour = db_now(conn)
    insert_results(conn, urls, hour - 30 * HOUR, hour - HOUR)

    def counts():
        found = uptime.for_urls(conn, urls, p95=False, use_summary=False)
        conn.rollback()
        return {i: {name: (w.ok, w.failed) for name, w in f.windows.items()} for i, f in found.items()}
    before = counts()
    assert sum(w[0] + w[1] for f in before.values() for w in f.values()) > 0
    # Hold the watermark row: the job writes its rollups, then waits to move the watermark.
    blocker = psycopg2.connect(dsn)
    with blocker.cursor() as cur:
        cur.execute("SELECT * FROM rollup_watermark WHERE level = 'hour' FOR UPDATE")
    env = clean_env(tmp_path, DB_DSN=dsn)
    job = subprocess.Popen([sys.executable, "-m", "sitewatch", "db", "maintain"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sitewatch cli'"
                            " AND wait_event_type = 'Lock' AND query LIKE 'UPDATE rollup_watermark%%'")
                waiting = cur.fetchone()[0]
            conn.commit()
            if waiting:
                break
            assert time.monotonic() < deadline, "the job never reached its watermark update"
            time.sleep(0.05)
        os.kill(job.pid, signal.SIGKILL)
        job.wait(timeout=10)
    finally:
        if job.poll() is None:
            job.kill()
        blocker.rollback()
        blocker.close()
    # Wait for the killed job's backend to roll back.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sitewatch cli'")
            if cur.fetchone()[0] == 0:
                break
        conn.commit()
        time.sleep(0.05)
    conn.commit()
    assert watermark(conn, "hour") is None
    assert rollup_rows(conn, "rollup_hour") != []          # written past the watermark...
    assert counts() == before                              # ...and read by no one
    maintenance.run_once(conn, cfg())
    assert watermark(conn, "hour") == hour
    assert assert_rollups_match_raw(conn, "rollup_hour", "hour", hour) == 3 * 29
