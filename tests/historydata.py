"""Synthetic history for the history tests: partitions for past days, results with failures,
missing response times and certificate days, and an independent recomputation from raw rows."""

import datetime

import psycopg2
import pytest

from sitewatch import config
from sitewatch.history import histogram, partitions

DAY = datetime.timedelta(days=1)


@pytest.fixture
def conn(dsn):
    """A transactional connection to the test's database (import this fixture to use it)."""
    c = psycopg2.connect(dsn)
    yield c
    c.close()


def cfg(**history):
    """The default configuration, with history.* keys overridden (cfg(raw_days=1))."""
    return config.load({f"SITEWATCH_HISTORY__{k.upper()}": str(v) for k, v in history.items()}, {}, None)


def clear_of_hour_turn(conn, need_s: float, offset_s: float = 0.0, not_before_s: float = 0.0) -> None:
    """Make sure the database clock is at least `not_before_s` past the turn of the hour of
    (now - offset_s) and `need_s` before the next one, so a test that reads the hour once (its
    windows, the rollups' final hour, which turns `offset_s` late) keeps reading the hour the
    code reads for its whole run, and checks the same things at any time of day.

    The code under test takes its `now` from the database: near the turn, the database's clock
    is moved on (set_clock) by as much as a test would otherwise have waited, up to
    need_s + not_before_s; elsewhere in the hour nothing changes.
    """
    assert need_s + not_before_s < 3000
    with conn.cursor() as cur:
        cur.execute("SELECT extract(epoch FROM (clock_timestamp() - make_interval(secs => %s))"
                    " - date_trunc('hour', clock_timestamp() - make_interval(secs => %s)))::float8",
                    (offset_s, offset_s))
        past = cur.fetchone()[0]
    conn.commit()
    if past < not_before_s:
        set_clock(conn, not_before_s - past + 0.5)
    elif past > 3600 - need_s:
        set_clock(conn, 3600 - past + not_before_s + 0.5)


CLOCK_SHIFT = "swtest.clock_shift"     # a custom setting: how far the test database's clock is moved on


def set_clock(conn, ahead_s: float) -> None:
    """Move the test database's clock `ahead_s` seconds further on, for this connection and every
    new one (ALTER DATABASE), sitewatch's included: public.now() and public.clock_timestamp()
    add the shift to pg_catalog's, and search_path puts public first (an explicit pg_catalog
    after it lets public functions shadow its own). Column defaults (created_at, recorded_at)
    were bound to pg_catalog.now() when the tables were made and keep the real time: a row
    they date is up to the shift older than the moved clock says, as if made before a wait."""
    with conn.cursor() as cur:
        cur.execute("SELECT coalesce(extract(epoch FROM nullif(current_setting(%s, true), '')::interval), 0)::float8",
                    (CLOCK_SHIFT,))
        shift = f"{cur.fetchone()[0] + ahead_s} seconds"
        for name, volatility in (("now", "STABLE"), ("clock_timestamp", "VOLATILE")):
            cur.execute(f"CREATE OR REPLACE FUNCTION public.{name}() RETURNS timestamptz LANGUAGE sql"
                        f" {volatility} PARALLEL SAFE AS $$ SELECT pg_catalog.{name}()"
                        f" + coalesce(nullif(current_setting('{CLOCK_SHIFT}', true), ''), '0')::interval $$")
        database = conn.info.dbname
        cur.execute(f'ALTER DATABASE "{database}" SET search_path = public, pg_catalog')
        cur.execute(f'ALTER DATABASE "{database}" SET {CLOCK_SHIFT} = %s', (shift,))
        cur.execute("SET search_path = public, pg_catalog")
        cur.execute("SELECT set_config(%s, %s, false)", (CLOCK_SHIFT, shift))
    conn.commit()


def ensure_past_partitions(conn, days: int) -> None:
    """Partitions for the `days` UTC days before today (a fresh database has only yesterday on)."""
    with conn.cursor() as cur:
        cur.execute("SELECT date_trunc('day', now(), 'UTC')")
        today = cur.fetchone()[0]
        for back in range(1, days + 1):
            partitions.create_partition(cur, today - back * DAY)
    conn.commit()


def add_urls(conn, count: int, prefix: str = "http://site") -> list[int]:
    with conn.cursor() as cur:
        cur.execute("INSERT INTO url (url, period, timeout, next_check_at)"
                    " SELECT %s || g || '.example/', 60, 5, now() + interval '1 hour'"
                    " FROM generate_series(1, %s) g RETURNING id", (prefix, count))
        ids = [row[0] for row in cur.fetchall()]
    conn.commit()
    return ids


def insert_results(conn, url_ids, start, end, step_s: int = 60, checked_by: str = "synthetic") -> int:
    """One result per URL every step_s seconds in [start, end): response times spread over
    20..520 ms, every 13th without a response (timeout), every 11th failed with status 500, every
    17th `lost` (the monitor's failure: neither ok nor failed in the rollups)."""
    with conn.cursor() as cur:
        cur.execute("""
            INSERT INTO task_result (url_id, scheduled_at, started_at, response_time_ms, status_code, ok,
                                     error_kind, error, cert_days_left, checked_by)
            SELECT u, t, t,
                   CASE WHEN n %% 13 = 0 OR n %% 17 = 0 THEN NULL ELSE 20 + (n * 7919 %% 1000) * 0.5 END,
                   CASE WHEN n %% 13 = 0 OR n %% 17 = 0 THEN NULL WHEN n %% 11 = 0 THEN 500 ELSE 200 END,
                   n %% 13 <> 0 AND n %% 11 <> 0 AND n %% 17 <> 0,
                   CASE WHEN n %% 17 = 0 THEN 'lost' WHEN n %% 13 = 0 THEN 'timeout'
                        WHEN n %% 11 = 0 THEN 'status' END,
                   CASE WHEN n %% 17 = 0 THEN 'not recorded after 3 attempts'
                        WHEN n %% 13 = 0 THEN 'deadline of 5 s passed' WHEN n %% 11 = 0 THEN 'status 500' END,
                   30 + (n %% 7) - (u %% 3), %(by)s
            FROM unnest(%(urls)s::bigint[]) AS u,
                 generate_series(%(start)s::timestamptz, %(end)s::timestamptz - interval '1 microsecond',
                                 make_interval(secs => %(step)s)) AS t,
                 LATERAL (SELECT (extract(epoch FROM t)::bigint / %(step)s + u * 31) AS n) AS k
            ORDER BY t, u            -- in time order, as sitewatch writes them (BRIN relies on it)
            ON CONFLICT (url_id, scheduled_at, region) DO NOTHING""",
                    {"urls": list(url_ids), "start": start, "end": end, "step": step_s, "by": checked_by})
        count = cur.rowcount
    conn.commit()
    return count


RECOMPUTE = """
    SELECT url_id, date_trunc(%(unit)s, scheduled_at, 'UTC') AS bucket, count(*) AS checks,
           count(*) FILTER (WHERE ok) AS ok, count(*) FILTER (WHERE NOT ok AND error_kind <> 'lost') AS failed,
           count(response_time_ms) AS rt_count, sum(response_time_ms) AS rt_sum,
           min(response_time_ms) AS rt_min, max(response_time_ms) AS rt_max,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY response_time_ms) AS p95,
           min(cert_days_left) AS cert_days_min,
           count(*) FILTER (WHERE status_code IS NULL OR status_code NOT BETWEEN 200 AND 299) AS non_2xx
    FROM task_result WHERE scheduled_at < %(until)s
    GROUP BY 1, 2 ORDER BY 1, 2"""


def assert_rollups_match_raw(conn, table: str, unit: str, until) -> int:
    """Every bucket before `until` equals a recomputation from raw rows; returns buckets compared."""
    with conn.cursor() as cur:
        cur.execute(RECOMPUTE, {"unit": unit, "until": until})
        expected = cur.fetchall()
        cur.execute(f"SELECT url_id, bucket, checks, ok, failed, rt_count, rt_sum, rt_min, rt_max, rt_hist,"
                    f" cert_days_min, non_2xx FROM {table} WHERE bucket < %s ORDER BY 1, 2", (until,))
        actual = cur.fetchall()
    conn.commit()
    assert [(e[0], e[1]) for e in expected] == [(a[0], a[1]) for a in actual], f"{table}: buckets differ"
    for e, a in zip(expected, actual, strict=True):
        url_id, bucket, checks, ok, failed, rt_count, rt_sum, rt_min, rt_max, p95, cert, non_2xx = e
        assert (a[2], a[3], a[4], a[5], a[11]) == (checks, ok, failed, rt_count, non_2xx), (table, url_id, bucket)
        assert a[7] == rt_min and a[8] == rt_max and a[10] == cert, (table, url_id, bucket)
        assert (a[6] is None) == (rt_sum is None) and (rt_sum is None or abs(a[6] - rt_sum) < 1e-6 * rt_sum)
        assert sum(a[9]) == rt_count
        if p95 is not None:
            ours = histogram.percentile(a[9], 0.95)
            assert abs(histogram.bucket(ours) - histogram.bucket(p95)) <= 1, (table, url_id, bucket, ours, p95)
    return len(expected)


def rollup_rows(conn, table: str) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(f"SELECT * FROM {table} ORDER BY url_id, bucket")
        rows = cur.fetchall()
    conn.commit()
    return rows


def watermark(conn, level: str):
    with conn.cursor() as cur:
        cur.execute("SELECT done_until FROM rollup_watermark WHERE level = %s", (level,))
        value = cur.fetchone()[0]
    conn.commit()
    return value
