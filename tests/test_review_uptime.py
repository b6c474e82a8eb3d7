"""Issue 24, D20: the long windows (90 d, 365 d) never read hours that retention has expired.

Hourly rollups are kept history.hourly_days (90); the 365-day window used to start at the first
whole UTC hour inside it and read its first, partial day from rollup_hour, whose rows for that
day are long gone: up to 23 hours counted as expected slots with no results."""

import datetime

import psycopg2

from sitewatch.history import uptime, windows
from tests.historydata import clear_of_hour_turn

UTC = datetime.timezone.utc
HOUR = datetime.timedelta(hours=1)
DAY = datetime.timedelta(days=1)


def test_long_windows_start_on_a_whole_utc_day():
    now = datetime.datetime(2026, 12, 6, 12, 30, tzinfo=UTC)
    for name in ("90d", "365d"):
        bounds = windows.window_bounds(now, name, now.replace(minute=0), now.replace(hour=0, minute=0))
        assert bounds["start"] == (now - windows.WINDOWS[name]).replace(hour=0, minute=0) + DAY, name
        assert bounds["start"] == bounds["day_from"], name        # no partial first day from rollup_hour
    # the windows the summary keeps still start on the hour
    assert windows.window_bounds(now, "24h", None, None)["start"] == datetime.datetime(2026, 12, 5, 13, tzinfo=UTC)


def test_365d_window_has_full_coverage_after_hourly_rollups_expired(dsn):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        clear_of_hour_turn(conn, 30)    # the hour read here is the one uptime.for_urls reads
        with conn.cursor() as cur:
            cur.execute("SELECT now(), date_trunc('hour', now(), 'UTC'), date_trunc('day', now(), 'UTC')")
            now, this_hour, today = cur.fetchone()
            cur.execute("INSERT INTO url (url, period, timeout, next_check_at, created_at)"
                        " VALUES ('https://long.example/', 3600, 5, now() + interval '1 hour',"
                        "         now() - interval '400 days') RETURNING id")
            (url_id,) = cur.fetchone()
            # Every hour checked and ok: daily rollups for 366 days back, hourly ones only for today
            # (older ones expired), watermarks at today and at this hour.
            cur.execute("INSERT INTO rollup_day (url_id, bucket, checks, ok, failed, non_2xx, rt_count, rt_hist)"
                        " SELECT %s, d, 24, 24, 0, 0, 0, '{}'"
                        " FROM generate_series(%s::timestamptz - interval '366 days',"
                        "                      %s::timestamptz - interval '1 day', interval '1 day') d",
                        (url_id, today, today))
            cur.execute("INSERT INTO rollup_hour (url_id, bucket, checks, ok, failed, non_2xx, rt_count, rt_hist)"
                        " SELECT %s, h, 1, 1, 0, 0, 0, '{}'"
                        " FROM generate_series(%s::timestamptz, %s::timestamptz - interval '1 hour',"
                        "                      interval '1 hour') h",
                        (url_id, today, this_hour))
            cur.execute("UPDATE rollup_watermark SET done_until = CASE level WHEN 'day' THEN %s ELSE %s END",
                        (today, this_hour))
        window = uptime.for_urls(conn, [url_id], windows=("365d",), p95=False)[url_id].windows["365d"]
    finally:
        conn.close()
    assert window.failed == 0
    # Every expected slot has its result: none of the window lies in expired hourly rollups.
    assert window.ok == window.expected, (window, now)
    assert window.coverage == 1.0
