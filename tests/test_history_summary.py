"""The uptime summary (history/summary.py) gives exactly the figures of the direct computation.

Real PostgreSQL; synthetic results with failures, lost slots and missing response times over
32 days, so every source is used: rollup_day, rollup_hour, and raw rows on both sides of the
summary's `until`.
"""

import datetime
import io
import json
import random

import psycopg2
import pytest

from sitewatch.history import maintenance, report, rollup, summary, uptime, windows
from tests.historydata import add_urls, cfg, clear_of_hour_turn, ensure_past_partitions, insert_results
from tests.historydata import conn as conn  # noqa: F401  (fixture)

HOUR = datetime.timedelta(hours=1)
DAY = datetime.timedelta(days=1)


def figures(conn, ids, use_summary):
    out = uptime.for_urls(conn, ids, windows=summary.WINDOWS, use_summary=use_summary)
    return {url_id: ({name: (w.ok, w.failed, w.expected) for name, w in f.windows.items()}, f.hist_24h)
            for url_id, f in out.items()}


def assert_same(conn, ids, serves: bool | None = None):
    """The summary's figures equal the direct ones, for a list of ids and for all URLs, and
    so do those `sitewatch status` prints (its own loop over the counts). serves: whether
    status_lines must serve (and so be compared), when the test knows."""
    direct = figures(conn, ids, use_summary=False)
    assert figures(conn, ids, use_summary=True) == direct
    everything = uptime.for_urls(conn, ids, windows=summary.WINDOWS, all_urls=True)
    assert {i: {n: (w.ok, w.failed, w.expected) for n, w in f.windows.items()} for i, f in everything.items()} \
        == {i: windows for i, (windows, _) in direct.items()}
    served = assert_status_same(conn)
    with conn.cursor() as cur:
        cur.execute(rollup.QUERIES["frontier"])
        hour_until, _, now, anchor, _ = cur.fetchone()
    conn.commit()
    assert served == summary.current(anchor, hour_until, now)
    assert serves is None or served == serves
    return direct


def assert_status_same(conn):
    """`sitewatch status` shows the figures of the direct computation: status_rows for all URLs
    (on one connection and on two) and for URLs named; and status_lines (the one statement
    that serves while the summary is current) prints the same JSON and the same table as
    status_rows. Returns whether status_lines served."""
    report.configure_session(conn)

    def direct_figures(ids):
        direct = uptime.for_urls(conn, ids, windows=summary.WINDOWS, use_summary=False)
        return [(url_id, tuple(f.windows[n].uptime for n in summary.WINDOWS) + (f.windows["24h"].coverage,)
                 + (None if f.p95_ms_24h is None else round(f.p95_ms_24h, 1),)) for url_id, f in direct.items()]
    with conn.cursor() as cur:
        cur.execute("SELECT id FROM url")
        expected_before = direct_figures([url_id for (url_id,) in cur.fetchall()])
    conn.commit()
    shown = {"one connection": report.status_rows(conn, None),
             "two connections": report.status_rows(conn, None, lambda: psycopg2.connect(conn.dsn))}
    ids = [url_id for url_id, _ in shown["one connection"]]
    shown["named"] = report.status_rows(conn, ids)
    monitors = [(row["url"], row["name"]) for _, row in shown["one connection"]]
    assert monitors == sorted(monitors, key=lambda m: (m[0], m[1] is not None, m[1] or ""))
    # computed before and after: a slot may fall due between (coverage counts those expected by now)
    expected_after = direct_figures(ids)
    for how, rows in shown.items():
        got = sorted((url_id, (r["uptime_24h"], r["uptime_7d"], r["uptime_30d"], r["coverage_24h"], r["p95_ms_24h"]))
                     for url_id, r in rows)
        assert got in (sorted(expected_before), sorted(expected_after)), (how, got, expected_after)
    served = report.status_lines(conn, None, as_json=True)
    if served is None:
        return False
    def other():
        return psycopg2.connect(conn.dsn)
    # status_rows read just before and just after: a slot may fall due between two reads (the
    # coverage counts the slots expected by each read's now), so the lines must equal one of them.
    for ids_given, connect in ((None, None), (None, other), (ids[:1], None), (ids, other)):
        for as_json in (True, False):
            before = printed(conn, report.lines_of(report.status_rows(conn, ids_given), as_json), as_json)
            shown = printed(conn, report.status_lines(conn, ids_given, as_json, connect=connect), as_json)
            after = printed(conn, report.lines_of(report.status_rows(conn, ids_given), as_json), as_json)
            assert shown in (before, after), (ids_given, connect, as_json, shown, before)
    with conn.cursor() as cur:       # --down: only the URLs whose alerts' state is down
        cur.execute("INSERT INTO url_state (url_id, state, since) VALUES (%s, 'down', now())"
                    " ON CONFLICT (url_id) DO UPDATE SET state = 'down'", (ids[0],))
    conn.commit()
    def down():
        return [(url_id, row) for url_id, row in report.status_rows(conn, None) if row["state"] == "down"]
    assert ids[0] in [url_id for url_id, _ in down()] and len(down()) < len(ids)
    for as_json in (True, False):
        before = printed(conn, report.lines_of(down(), as_json), as_json)
        shown = printed(conn, report.status_lines(conn, None, as_json, down=True), as_json)
        assert shown in (before, printed(conn, report.lines_of(down(), as_json), as_json))
    return True


def printed(conn, lines, as_json):
    """What print_status_lines prints: JSON parsed (times compared as instants), or the text."""
    out = io.StringIO()
    report.print_status_lines(conn, lines, as_json, out)
    if not as_json:
        return out.getvalue()
    objects = json.loads(out.getvalue())
    for o in objects:
        o["since"] = o["since"] and datetime.datetime.fromisoformat(o["since"])
    return objects


def summary_state(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT anchor, until FROM uptime_summary_state")
        row = cur.fetchone()
        cur.execute("SELECT count(*) FROM uptime_summary")
        count = cur.fetchone()[0]
    conn.commit()
    return row, count


def now_of(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT now()")
        now = cur.fetchone()[0]
    conn.commit()
    return now


def old_urls(conn, count: int) -> list[int]:
    """`count` URLs created 40 days ago, with partitions for the last 32 days."""
    ensure_past_partitions(conn, 32)
    ids = add_urls(conn, count)
    with conn.cursor() as cur:
        cur.execute("UPDATE url SET created_at = now() - interval '40 days'")
        # The first URL monitored thrice (DESIGN section 12): unnamed, and under two names, which
        # `status` lists after it, in name order (not in id order), each shown with its name.
        cur.execute("UPDATE url SET url = (SELECT url FROM url WHERE id = %(first)s), name = 'z-named'"
                    " WHERE id = %(second)s", {"first": ids[0], "second": ids[1]})
        cur.execute("UPDATE url SET url = (SELECT url FROM url WHERE id = %(first)s), name = 'a-named'"
                    " WHERE id = %(third)s", {"first": ids[0], "third": ids[2]})
    conn.commit()
    return ids


def test_summary_is_built_added_to_and_equals_the_direct_computation(conn):
    ids = old_urls(conn, 4)
    # Past hh:05, when the job's final hour (grace 300 s) has caught up with the windows' hour, and
    # not near the next turn: the summary is current throughout, and status_lines is compared
    # every time (in the first minutes of an hour it would not serve: the lag test covers that).
    clear_of_hour_turn(conn, 120, not_before_s=310)
    now = now_of(conn)
    # 32 days of results every 10 minutes, then every minute for the last 3 hours, up to
    # 20 minutes ago: rollup_day, rollup_hour and raw rows after the watermark all hold some.
    insert_results(conn, ids, now - 32 * DAY, now - 3 * HOUR, step_s=600)
    insert_results(conn, ids, now - 3 * HOUR, now - datetime.timedelta(minutes=20), step_s=60)
    assert figures(conn, ids, use_summary=True) == figures(conn, ids, use_summary=False)   # no summary yet

    report = maintenance.run_once(conn, cfg())
    assert report["summary"] == "built" and report["summary_rows"] == 4
    (anchor, until), rows = summary_state(conn)
    assert anchor == rollup.watermark(conn.cursor(), "hour") and until >= anchor and rows == 4
    conn.commit()
    direct = assert_same(conn, ids, serves=True)
    assert all(direct[i][0]["30d"][1] > 0 and direct[i][0]["24h"][0] > 0 for i in ids)   # failures counted
    assert all(sum(direct[i][1]) > 0 for i in ids)

    # Results after `until` (the completeness bound: no result can arrive before it any more)
    # are read as raw rows, then added by the job once complete (grace 0 here: no waiting).
    insert_results(conn, ids, until, now_of(conn), step_s=15, checked_by="recent")
    with conn.cursor() as cur:       # faster and slower than anything so far: the histogram grows both ways
        cur.execute("INSERT INTO task_result (url_id, scheduled_at, started_at, response_time_ms, ok, checked_by)"
                    " VALUES (%s, %s, %s, 0.05, true, 'fast'), (%s, %s, %s, 9000, true, 'slow')",
                    (ids[0], until + datetime.timedelta(seconds=1), until,
                     ids[0], until + datetime.timedelta(seconds=2), until))
    conn.commit()
    assert_same(conn, ids)
    # A URL added since the build: no summary row yet, then an inserted one.
    (new,) = add_urls(conn, 1, prefix="http://new")
    insert_results(conn, [new], until, now_of(conn), step_s=30)
    assert_same(conn, ids + [new])
    # Less than summary.ADD_EVERY complete since `until`: nothing is added yet.
    assert summary.refresh(conn, 0.0, datetime.timedelta(hours=1)) == {"summary": "current"}
    assert summary_state(conn)[0][1] == until
    report = summary.refresh(conn, 0.0, datetime.timedelta(0))
    assert report == {"summary": "added", "summary_rows": 5}
    assert summary_state(conn)[0][1] > until and summary_state(conn)[1] == 5
    assert_same(conn, ids + [new])
    assert summary.refresh(conn, 3600.0) == {"summary": "current"}
    assert_same(conn, ids + [new])


@pytest.mark.parametrize("lag_hours", [0, 2])
def test_summary_when_the_hourly_watermark_lags_the_clock(conn, lag_hours):
    """In the first minutes of an hour the windows have moved on but the watermark has not:
    the hours that left each window are subtracted (up to summary.MAX_LAG, then not used),
    and `status` computes its figures in Python. With no lag (the rest of the hour) status
    computes them in one statement (report.status_lines): both equal the direct ones."""
    ids = old_urls(conn, 3)
    clear_of_hour_turn(conn, 120)      # anchor and lag are set from this hour
    now = now_of(conn)
    insert_results(conn, ids, now - 31 * DAY, now, step_s=300)
    anchor = windows.floor_time(now, HOUR) - lag_hours * HOUR
    with conn.cursor() as cur:
        rollup.recompute_hours(cur, windows.floor_time(now - 31 * DAY, HOUR), anchor)
        rollup.recompute_days(cur, windows.floor_time(now - 31 * DAY, DAY), windows.floor_time(anchor, DAY))
        cur.execute("UPDATE rollup_watermark SET done_until = %s WHERE level = 'hour'", (anchor,))
        cur.execute("UPDATE rollup_watermark SET done_until = %s WHERE level = 'day'",
                    (windows.floor_time(anchor, DAY),))
    conn.commit()
    assert summary.refresh(conn, 300.0)["summary"] == "built"
    assert summary_state(conn)[0][0] == anchor
    assert summary.usable(anchor, anchor, now, summary.WINDOWS)           # hours behind: subtracted
    assert summary.current(anchor, anchor, now) == (lag_hours == 0)
    direct = assert_same(conn, ids, serves=lag_hours == 0)
    assert all(direct[i][0]["24h"][0] > 0 for i in ids)
    # Many raw rows after `until` for one URL (status_lines' p95 takes its general branch for
    # more than three), one for another, and buckets below and above the summary's histogram.
    until = summary_state(conn)[0][1]
    insert_results(conn, ids[:1], until, now_of(conn), step_s=15, checked_by="recent")
    with conn.cursor() as cur:
        cur.execute("INSERT INTO task_result (url_id, scheduled_at, started_at, response_time_ms, ok, checked_by)"
                    " VALUES (%s, %s, %s, 0.05, true, 'fast'), (%s, %s, %s, 9000, true, 'slow')"
                    " ON CONFLICT DO NOTHING",
                    (ids[1], until + datetime.timedelta(milliseconds=1), until,
                     ids[2], until + datetime.timedelta(milliseconds=2), until))
    conn.commit()
    assert_same(conn, ids)

    assert not summary.usable(anchor, anchor, now + 7 * HOUR, summary.WINDOWS)   # job down: not used
    assert not summary.usable(anchor, anchor + HOUR, now, summary.WINDOWS)       # watermark moved on
    assert not summary.usable(anchor, anchor, now, ("24h", "90d"))               # a window it does not keep
    assert not summary.usable(None, anchor, now, summary.WINDOWS)


def test_status_lines_p95_equals_the_python_percentile_over_random_histograms(conn):
    """status_lines reads p95 by binary searches over the summary's cumulative histogram,
    corrected for the raw rows after `until`; status_rows merges them in Python and takes
    histogram.percentile. Over random histograms (empty ones too) and 0 to 6 raw rows per
    URL (below, inside and above the histogram, some without a response time), every URL's
    line is the same both ways."""
    rng = random.Random(9)
    ids = old_urls(conn, 300)
    clear_of_hour_turn(conn, 120)      # the summary is current only within the hour of its anchor
    now = now_of(conn)
    anchor = windows.floor_time(now, HOUR)
    until = max(anchor, now - datetime.timedelta(minutes=3))
    with conn.cursor() as cur:
        cur.execute("UPDATE rollup_watermark SET done_until = %s WHERE level = 'hour'", (anchor,))
        cur.execute(rollup.QUERIES["summary_set_state"], {"anchor": anchor, "until": until})
        raw = []
        for url_id in ids:
            low = rng.randrange(0, 60)
            hist = [rng.choice((0, 0, 1, 3, 40)) for _ in range(rng.randrange(0, 12))]
            hist = [0] * low + hist
            first, cum = summary._cumulative(hist)
            results = cum[-1] if cum else 0
            failed = rng.randrange(0, 3) if results else 0
            cur.execute("INSERT INTO uptime_summary VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        (url_id, results - failed, failed, results, failed, results, failed, first, cum))
            for k in range(rng.choice((0, 1, 1, 2, 2, 3, 6))):
                ms = None if rng.random() < 0.1 else rng.choice((0.01, 5.0, 50.0, 200.0, 3000.0, 60000.0))
                raw.append((url_id, until + datetime.timedelta(milliseconds=k + 1), until, ms, ms is not None))
        cur.executemany("INSERT INTO task_result (url_id, scheduled_at, started_at, response_time_ms, ok, checked_by)"
                        " VALUES (%s, %s, %s, %s, %s, 'random')", raw)
        # A URL with secrets in it, and one with a character that JSON escapes.
        cur.execute("UPDATE url SET url = 'http://user:hunter2@secret.example/a\"b?token=abc' WHERE id = %s",
                    (ids[0],))
        cur.execute("UPDATE url SET url = 'http://quote.example/a\"b' WHERE id = %s", (ids[1],))
    conn.commit()
    report.configure_session(conn)

    def by_python(as_json):   # read before and after the SQL: a slot may fall due between (coverage)
        return printed(conn, report.lines_of(report.status_rows(conn, None), as_json), as_json)
    json_before = by_python(True)
    lines = report.status_lines(conn, None, as_json=True, connect=lambda: psycopg2.connect(conn.dsn))
    assert lines is not None
    by_sql = printed(conn, lines, True)
    table_before = by_python(False)
    table = printed(conn, report.status_lines(conn, None, as_json=False), False)
    assert "hunter2" not in table and "abc" not in table and "http://***@secret.example/a\"b?***" in table
    assert table in (table_before, by_python(False))
    assert len(by_sql) == 300 and sum(o["p95_ms_24h"] is None for o in by_sql) > 0
    assert len({o["p95_ms_24h"] for o in by_sql}) > 20
    assert by_sql in (json_before, by_python(True))
    assert {"http://***@secret.example/a\"b?***", 'http://quote.example/a"b'} <= {o["url"] for o in by_sql}
