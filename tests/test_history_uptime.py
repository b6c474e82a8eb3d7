"""Uptime rules (issue 9, test 8) and the histogram's percentiles, on a real PostgreSQL."""

import datetime

from sitewatch import config
from sitewatch.history import histogram, maintenance, uptime, windows
from tests.historydata import add_urls, clear_of_hour_turn, ensure_past_partitions
from tests.historydata import conn as conn  # noqa: F401  (fixture)

HOUR = datetime.timedelta(hours=1)


def test_truncate_never_round_up():
    assert uptime.truncated_ratio(43_199, 43_200) == 0.99997
    assert uptime.format_percent(uptime.truncated_ratio(43_199, 43_200)) == "99.997%"
    assert uptime.truncated_ratio(999_999, 1_000_000) == 0.99999          # not 1.0
    assert uptime.truncated_ratio(5, 5) == 1.0
    assert uptime.format_percent(1.0) == "100.000%"
    assert uptime.truncated_ratio(0, 3) == 0.0
    assert uptime.truncated_ratio(0, 0) is None
    assert uptime.format_percent(None) == "-"
    assert uptime.truncated_ratio(2, 3) == 0.66666                        # not .66667


def test_percentile_reads_the_bucket_of_the_rank():
    assert histogram.percentile([], 0.95) is None
    values = [10.0] * 94 + [100.0] * 5 + [1000.0]
    hist = histogram.from_values(values)
    for q, true in [(0.5, 10.0), (0.95, 100.0), (0.99, 100.0), (1.0, 1000.0)]:
        got = histogram.percentile(hist, q)
        assert abs(got - true) / true < 0.1, (q, got)
    assert histogram.merge([1, 2], [0, 0, 3], None) == [1, 2, 3]
    for v in (0.05, 0.1, 1, 17.3, 250, 9999, 10 ** 7):
        low, high = histogram.bounds(histogram.bucket(v))
        assert low <= v and (v < high or histogram.bucket(v) == histogram.SIZE - 1)


def insert(conn, url_id, times, ok=True):
    with conn.cursor() as cur:
        cur.execute("INSERT INTO task_result (url_id, scheduled_at, started_at, ok, response_time_ms, checked_by)"
                    " SELECT %s, t, t, %s, 50, 'test' FROM unnest(%s::timestamptz[]) AS t", (url_id, ok, list(times)))
    conn.commit()


def test_uptime_rules_over_rollups_and_raw_rows(conn):
    ensure_past_partitions(conn, 2)
    nodata, every_2s, skipping = add_urls(conn, 3)
    clear_of_hour_turn(conn, 120)      # the windows start at a whole hour: one hour for the whole test
    with conn.cursor() as cur:
        cur.execute("SELECT now()")
        now = cur.fetchone()[0]
        cur.execute("UPDATE url SET created_at = now() - interval '2 days', period = 2 WHERE id = %s", (every_2s,))
        cur.execute("UPDATE url SET created_at = now() - interval '2 days', period = 60 WHERE id IN (%s, %s)",
                    (nodata, skipping))
    conn.commit()
    start = windows.window_bounds(now, "24h", None, None)["start"]
    # every_2s: 43,200 results inside the window (the window starts at a whole hour, so they are
    # a little under 2 s apart), one failed.
    step = (now - start - datetime.timedelta(seconds=1)) / 43_200
    slots = [start + i * step for i in range(43_200)]
    insert(conn, every_2s, slots[1:])
    insert(conn, every_2s, slots[:1], ok=False)
    # skipping: every other minute only (half its slots were never checked).
    minutes = [start + datetime.timedelta(minutes=2 * i) for i in range(720)]
    checked = [t for t in minutes if t < now]
    insert(conn, skipping, checked)
    cfg = config.load({}, {}, None)

    def check():
        figures = uptime.for_urls(conn, [nodata, every_2s, skipping, 999_999])
        for name in windows.WINDOWS:
            assert figures[nodata].windows[name].uptime is None          # no data: no figure
            assert figures[nodata].windows[name].coverage == 0.0
            assert figures[999_999].windows[name].coverage is None       # not monitored any more
        day = figures[every_2s].windows["24h"]
        assert day.results == 43_200 and day.failed == 1
        assert day.uptime == 0.99997 and uptime.format_percent(day.uptime) == "99.997%"
        assert day.coverage > 0.99
        skip = figures[skipping].windows["24h"]
        assert skip.uptime == 1.0
        assert abs(skip.coverage - 0.5) < 0.01
        month = figures[skipping].windows["30d"]
        assert month.uptime == 1.0 and month.results == len(checked)
        # Expected slots: 2 days of 60 s slots. The 24 h window starts at the next whole hour,
        # so it holds 23 to 24 hours of results: coverage is 0.24 to 0.25 by the minute of the hour.
        assert abs(month.coverage - len(checked) / 2880) < 0.001
        assert abs(figures[every_2s].p95_ms_24h - 50) / 50 < 0.1
        return figures

    before = check()                   # all from raw rows
    maintenance.run_once(conn, cfg)
    after = check()                    # now mostly from rollups: the same figures
    for url_id in before:                # (expected slots move on with the clock)
        assert ({n: (w.ok, w.failed) for n, w in before[url_id].windows.items()}
                == {n: (w.ok, w.failed) for n, w in after[url_id].windows.items()})


def test_the_test_clock_moves_every_connections_now_on(conn, dsn):
    """historydata.set_clock, which the hour-turn tests rely on: now() and clock_timestamp() of
    this connection and of new ones (sitewatch's own included) run the shift ahead, twice added."""
    from sitewatch.db.database import connect
    from tests.historydata import set_clock

    def ahead(c) -> list[float]:
        with c.cursor() as cur:
            cur.execute("SELECT extract(epoch FROM now() - pg_catalog.now()),"
                        " extract(epoch FROM clock_timestamp() - pg_catalog.clock_timestamp())")
            out = [round(float(v)) for v in cur.fetchone()]
        c.commit()
        return out
    assert ahead(conn) == [0, 0]
    set_clock(conn, 600)
    set_clock(conn, 1200)
    theirs = connect(dsn, 5, "test")
    try:
        assert ahead(conn) == ahead(theirs) == [1800, 1800]
    finally:
        theirs.close()
