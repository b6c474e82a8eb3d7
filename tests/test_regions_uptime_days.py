"""Daily region rollups (issue 21, migration 0019) on a real PostgreSQL: the per-region and
quorum uptime read (regionuptime.for_urls) takes whole days from rollup_region_day, the
windows' edge hours from rollup_region_hour and the rest raw, and gives exactly the counts of
a direct computation from the raw rows, over 32 days of results with failures, lost results,
slots no region reported, confirmation checks off the slot grid and maintenance windows
(one across a day boundary, one on the 30-day window's first hour, one in the raw rows).
Also: migration 0019's backfill, and an install without regions paying nothing new.
"""

import datetime

import psycopg2
import pytest

from sitewatch.db import schema
from sitewatch.history import maintenance, regionuptime, rollup
from tests.historydata import cfg, clear_of_hour_turn, ensure_past_partitions
from tests.test_regions_migration import migrate_to

HOUR = datetime.timedelta(hours=1)
DAY = datetime.timedelta(days=1)
MINUTE = datetime.timedelta(minutes=1)
PERIOD = 600
WINDOWS = {"24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY}
REGIONS = ("a", "b", "c")


def q(conn, sql, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall() if cur.description else None
    conn.commit()
    return rows


@pytest.fixture
def conn(dsn):
    conn = psycopg2.connect(dsn)
    yield conn
    conn.close()


def first_hour_after(t: datetime.datetime) -> datetime.datetime:
    """The first whole UTC hour at or after t (where uptime's windows start)."""
    floor = t.replace(minute=0, second=0, microsecond=0)
    return floor if floor == t else floor + HOUR


def day_of(t: datetime.datetime) -> datetime.datetime:
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def seed(conn) -> tuple[list[int], datetime.datetime]:
    """Two URLs with regions a, b, c (one down_when any) and one without, a result every
    PERIOD from 32 days ago to two minutes ago; returns the regional URLs and now."""
    ensure_past_partitions(conn, 33)
    [(now,)] = q(conn, "SELECT now()")
    ids = [q(conn, "INSERT INTO url (url, period, timeout, next_check_at, regions, down_when) VALUES"
                   " (%s, %s, 5, date_trunc('hour', now(), 'UTC') + interval '1 hour', %s, %s) RETURNING id",
             (url, PERIOD, regions, down_when))[0][0]
           for url, regions, down_when in (("http://q.rd.example/", "{a,b,c}", None),
                                           ("http://any.rd.example/", "{a,b,c}", "any"),
                                           ("http://plain.rd.example/", "{}", None))]
    # n numbers a slot; region k fails on its own every 5th (shifted) and a and b together every
    # 7th (down by majority); lost on its own every 17th, and every region lost every 23rd slot.
    q(conn, """
        INSERT INTO task_result (url_id, scheduled_at, started_at, ok, error_kind, checked_by, region)
        SELECT u, t, t, NOT lost AND (n + 4 * k) %% 5 <> 0 AND (n %% 7 <> 0 OR k = 2),
               CASE WHEN lost THEN 'lost' WHEN (n + 4 * k) %% 5 = 0 OR (n %% 7 = 0 AND k < 2) THEN 'connect' END,
               't', r
        FROM unnest(%(urls)s::bigint[]) WITH ORDINALITY AS x(u, ui),
             generate_series(date_trunc('day', %(now)s::timestamptz, 'UTC') - interval '32 days',
                             %(now)s::timestamptz - interval '2 minutes', make_interval(secs => %(period)s)) AS t,
             LATERAL (SELECT (extract(epoch FROM t)::bigint / %(period)s + u * 31) AS n) AS s,
             LATERAL unnest(CASE WHEN ui < 3 THEN '{a,b,c}'::text[] ELSE '{""}'::text[] END)
                 WITH ORDINALITY AS y(r, k1),
             LATERAL (SELECT k1 - 1 AS k, n %% 23 = 0 OR (n + 4 * (k1 - 1)) %% 17 = 0 AS lost) AS v
        ORDER BY t, u""", {"urls": ids, "now": now, "period": PERIOD})
    # Confirmation checks: region a alone, 3 s after a slot, failed (in its figure, no slot)
    q(conn, """
        INSERT INTO task_result (url_id, scheduled_at, started_at, ok, error_kind, checked_by, region)
        SELECT url_id, scheduled_at + interval '3 seconds', now(), false, 'connect', 't', 'a'
        FROM task_result WHERE region = 'a' AND (extract(epoch FROM scheduled_at)::bigint / %s) %% 61 = 0""",
      (PERIOD,))
    start_30d = first_hour_after(now - WINDOWS["30d"])
    ten_days_ago = day_of(now) - 10 * DAY
    for i, (starts, ends) in enumerate(((ten_days_ago - 2 * HOUR, ten_days_ago + 3 * HOUR),
                                        (start_30d - HOUR, start_30d + 2 * HOUR),
                                        (now - 40 * MINUTE, now - 20 * MINUTE))):
        q(conn, "INSERT INTO silence (pattern, like_pattern, starts_at, ends_at, maintenance_id, settled)"
                " VALUES ('http://*.rd.example/', 'http://%%.rd.example/', %s, %s, %s, true)", (starts, ends, i + 1))
    return ids[:2], now


def direct(conn, now) -> dict:
    """{url_id: {region or '': (ok, failed) of 24h, 7d, 30d}} counted from the raw rows alone."""
    rows = q(conn, """
        SELECT t.url_id, t.scheduled_at, t.region, t.ok, t.error_kind IS NOT DISTINCT FROM 'lost',
               NOT EXISTS (SELECT 1 FROM silence s WHERE s.maintenance_id IS NOT NULL AND u.url LIKE s.like_pattern
                           AND t.scheduled_at >= s.starts_at AND t.scheduled_at < s.ends_at),
               mod((extract(epoch FROM t.scheduled_at - u.next_check_at) * 1000000)::bigint, u.period * 1000000) = 0,
               coalesce(u.down_when, 'majority')
        FROM task_result t JOIN url u ON u.id = t.url_id WHERE t.region <> ''""")
    found: dict = {}
    slots: dict = {}
    for url_id, at, region, ok, lost, counted, on_grid, down_when in rows:
        for k, length in enumerate(WINDOWS.values()):
            if at < first_hour_after(now - length):
                continue
            counts = found.setdefault(url_id, {}).setdefault(region, [0] * 6)
            counts[2 * k] += ok and counted
            counts[2 * k + 1] += not ok and not lost and counted
            if on_grid:
                slots.setdefault((url_id, at, k), []).append((ok, lost, counted, down_when))
    for (url_id, _, k), verdicts in slots.items():
        reported = [ok for ok, lost, _, _ in verdicts if not lost]
        if not reported or not all(counted for _, _, counted, _ in verdicts):
            continue
        needed = {"any": 1, "majority": len(reported) // 2 + 1}[verdicts[0][3]]
        down = reported.count(False) >= needed
        found[url_id].setdefault("", [0] * 6)[2 * k + (1 if down else 0)] += 1
    return {url_id: {region: tuple(c) for region, c in regions.items()} for url_id, regions in found.items()}


def read(conn, now) -> dict:
    found = regionuptime.for_urls(conn, None, "majority", now)
    return {url_id: {region: tuple(n for name in WINDOWS for n in (w[name].ok, w[name].failed))
                     for region, w in regions.items()} for url_id, regions in found.items()}


def test_the_read_from_days_edge_hours_and_raw_rows_equals_a_count_of_the_raw_rows(conn):
    ids, now = seed(conn)
    expected = direct(conn, now)
    assert sorted(expected) == ids and all(sorted(expected[i]) == ["", "a", "b", "c"] for i in ids)
    # every kind of slot is there: up, failed, lost, inside maintenance (the counts differ)
    assert expected[ids[0]][""] != expected[ids[1]][""]
    assert read(conn, now) == expected          # all raw: nothing rolled up yet
    q(conn, "INSERT INTO region_host (owner, region, seen_at) VALUES ('h:notifier:1', 'a', now())")
    rollup.catch_up_hours(conn, 300, down_when="majority")
    days = rollup.catch_up_days(conn)
    assert days["regional"] is True and days["days"] >= 31      # 32 before 00:05 UTC
    # a day row is the sum of its hours, the quorum's included
    assert q(conn, "SELECT count(*) FROM rollup_region_day") == [(2 * 4 * days["days"],)]
    assert q(conn, """SELECT count(*) FROM rollup_region_day d
                      JOIN (SELECT url_id, region, date_trunc('day', bucket, 'UTC') AS day, sum(checks) AS checks,
                                   sum(ok) AS ok, sum(failed) AS failed FROM rollup_region_hour GROUP BY 1, 2, 3) h
                        ON (h.url_id, h.region, h.day, h.checks, h.ok, h.failed)
                         = (d.url_id, d.region, d.bucket, d.checks, d.ok, d.failed)""") == [(2 * 4 * days["days"],)]
    assert read(conn, now) == expected
    # The raw rows the rollups cover go, and the hours of the windows' whole days: the days
    # and the edges' hours still give every count.
    [(hour_until,)] = q(conn, "SELECT done_until FROM rollup_watermark WHERE level = 'hour'")
    q(conn, "DELETE FROM task_result WHERE scheduled_at < %s", (min(hour_until, now.replace(minute=0, second=0,
                                                                                           microsecond=0)),))
    start_30d, start_7d = first_hour_after(now - WINDOWS["30d"]), first_hour_after(now - WINDOWS["7d"])
    deleted = q(conn, "WITH d AS (DELETE FROM rollup_region_hour WHERE (bucket >= %(a)s AND bucket < %(b)s)"
                      " OR (bucket >= %(c)s AND bucket < %(d)s) RETURNING 1) SELECT count(*) FROM d",
                {"a": day_of(start_30d) + DAY, "b": day_of(start_7d), "c": day_of(start_7d) + DAY,
                 "d": day_of(now) - DAY})[0][0]
    assert deleted >= 2 * 4 * 24 * 25
    assert read(conn, now) == expected
    # The edges' hours are read: without the first hours of the 30-day window its counts change;
    # or, when the window's first day is whole (it starts at midnight) or every hour of its first
    # day is inside the maintenance seeded at its start (2 hours: it starts at 22:00 or 23:00,
    # when the test runs between 21:00 and 23:00 UTC), without today's first hours.
    first_day_end = day_of(start_30d) + DAY
    first = start_30d if start_30d != day_of(start_30d) and start_30d + 2 * HOUR < first_day_end else day_of(now)
    q(conn, "DELETE FROM rollup_region_hour WHERE bucket >= %s AND bucket < %s", (first, first + 4 * HOUR))
    changed = read(conn, now)
    assert [changed[i][r][4:] != expected[i][r][4:] for i in ids for r in ("", "a")] == [True] * 4
    if first == start_30d:
        assert [changed[i][r][:4] for i in ids for r in "abc"] == [expected[i][r][:4] for i in ids for r in "abc"]


def test_the_daily_rollup_recomputes_a_day_and_deletes_what_its_hours_no_longer_support(conn):
    ids, now = seed(conn)
    q(conn, "INSERT INTO region_host (owner, region, seen_at) VALUES ('h:notifier:1', 'a', now())")
    rollup.catch_up_hours(conn, 300, down_when="majority")
    rollup.catch_up_days(conn)
    day = day_of(now) - 3 * DAY
    before = q(conn, "SELECT url_id, region, checks, ok, failed FROM rollup_region_day WHERE bucket = %s"
                     " ORDER BY 1, 2", (day,))
    q(conn, "UPDATE rollup_region_hour SET ok = ok + 1 WHERE bucket = %s AND region = 'b'", (day + 5 * HOUR,))
    q(conn, "DELETE FROM rollup_region_hour WHERE region = 'c' AND url_id = %s AND bucket >= %s AND bucket < %s",
      (ids[1], day, day + DAY))
    with conn.cursor() as cur:
        rollup.recompute_days(cur, day, day + DAY)
    conn.commit()
    after = q(conn, "SELECT url_id, region, checks, ok, failed FROM rollup_region_day WHERE bucket = %s"
                    " ORDER BY 1, 2", (day,))
    assert after == [(u, r, c, ok + (r == "b"), f) for u, r, c, ok, f in before if (u, r) != (ids[1], "c")]


def test_migration_20_rolls_up_the_days_before_the_day_watermark(empty_dsn):
    conn = psycopg2.connect(empty_dsn)
    try:
        migrate_to(conn, 18)
        [(today,)] = q(conn, "SELECT date_trunc('day', now(), 'UTC')")
        q(conn, "INSERT INTO rollup_region_hour (url_id, region, bucket, checks, ok, failed)"
                " SELECT u, r, b, 6, 5 + (extract(hour FROM b)::integer %% 2), 1 - (extract(hour FROM b)::integer %% 2)"
                " FROM generate_series(1, 2) u, unnest('{\"\",a}'::text[]) r,"
                " generate_series(%s::timestamptz - interval '3 days', %s::timestamptz - interval '1 hour',"
                "                 interval '1 hour') b", (today, today))
        q(conn, "UPDATE rollup_watermark SET done_until = %s WHERE level = 'day'", (today - DAY,))
        q(conn, "UPDATE rollup_watermark SET done_until = %s WHERE level = 'hour'", (today,))
        assert "0019_region_day.sql" in schema.migrate(conn)
        conn.commit()
        # the two days before the watermark, 24 hours each (12 with a failure); not the one after
        assert q(conn, "SELECT url_id, region, bucket, checks, ok, failed FROM rollup_region_day ORDER BY 1, 2, 3") == [
            (u, r, today - back * DAY, 144, 132, 12) for u in (1, 2) for r in ("", "a") for back in (3, 2)]
        # the daily rollup does the rest, once a host has had a region
        q(conn, "INSERT INTO region_host (owner, region, seen_at) VALUES ('h:notifier:1', 'a', now())")
        assert rollup.catch_up_days(conn)["days"] == 1
        assert q(conn, "SELECT count(*), sum(checks) FROM rollup_region_day WHERE bucket = %s", (today - DAY,)) == [
            (4, 4 * 144)]
    finally:
        conn.close()


def _scans(conn) -> dict:
    """Scans and writes of the region tables so far, this backend's own counts included."""
    q(conn, "SELECT pg_stat_force_next_flush()")
    q(conn, "SELECT pg_stat_clear_snapshot()")
    return dict(q(conn, "SELECT relname, coalesce(seq_scan, 0) + coalesce(idx_scan, 0) + n_tup_ins + n_tup_del"
                        " FROM pg_stat_user_tables WHERE relname IN"
                        " ('region_host', 'rollup_region_hour', 'rollup_region_day')"))


def test_an_install_without_regions_reads_no_region_table_in_idle_runs(conn):
    """The job of an install that never had a region: one probe of region_host per rollup that
    works (hours, days), nothing of the region rollups; in an idle run no statement at all."""
    ensure_past_partitions(conn, 2)
    q(conn, "INSERT INTO url (url, period, timeout, next_check_at) VALUES"
            " ('http://p.example/', 600, 5, now() + interval '1 hour')")
    q(conn, "INSERT INTO task_result (url_id, scheduled_at, started_at, ok, checked_by)"
            " SELECT 1, t, t, true, 't' FROM generate_series(date_trunc('day', now(), 'UTC') - interval '2 days',"
            " now() - interval '10 minutes', interval '10 minutes') t")
    clear_of_hour_turn(conn, 120, offset_s=300)
    first = q(conn, "SELECT min(scheduled_at) FROM task_result")[0][0]       # two days before midnight
    before = _scans(conn)
    report = maintenance.run_once(conn, cfg())
    # Every final hour and day since the first row: two days and today's final hours, or (in
    # the first minutes after midnight, before 23:00's hour is final) a day and 47 hours.
    until = datetime.datetime.fromisoformat(report["hours_final_until"])
    day_until = until.replace(hour=0, minute=0, second=0, microsecond=0)
    assert report["hours_rolled_up"] == (until - first) // HOUR >= 47
    assert report["days_rolled_up"] == (day_until - first) // DAY >= 1
    worked = _scans(conn)
    assert worked["region_host"] > before["region_host"]
    assert (worked["rollup_region_hour"], worked["rollup_region_day"]) == (
        before["rollup_region_hour"], before["rollup_region_day"])
    report = maintenance.run_once(conn, cfg())
    assert report["days_rolled_up"] == 0 and report["hours_rolled_up"] == 0
    assert _scans(conn) == worked
