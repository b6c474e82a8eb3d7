"""Seed a database for the web benchmark: N URLs with 30 days of rollups (figures in docs/benchmarks.md).

    python bench/web_seed.py --dsn postgresql://postgres@127.0.0.1:5432/postgres --db sitewatch_bench_web

Per URL (period 300 s): 30 rows of rollup_day (the days before today), rollup_hour for every
hour of the UTC days the 24 h, 7 d and 30 d windows read hours from (today's complete hours,
yesterday, and the first, partial day of the 7 d and 30 d windows: sitewatch.history.uptime
reads whole days from rollup_day and the other hours from rollup_hour), and raw task_result
rows for the current hour (what the history job has not rolled up yet); rollup_watermark says
so (hours final until the current hour, days until today). Histograms are in the rollups' own
layout (sitewatch.history.histogram). url_state (rows made by the alerts' trigger on url):
every URL up, 1% of them down, with one open incident each, and 5,000 closed incidents.
Everything goes through the real schema (schema.migrate to the latest version).
"""

import argparse
import os
import sys
import time

import psycopg2
import psycopg2.extensions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sitewatch.db import schema  # noqa: E402
from sitewatch.history import histogram, summary  # noqa: E402

PERIOD = 300

STEPS = [
    ("urls", """
        INSERT INTO url (url, period, timeout, next_check_at, created_at)
        SELECT format('https://host-%%s.example.net/health', lpad(n::text, 6, '0')), {period}, 10,
               now() + interval '1 year', now() - interval '40 days'
        FROM generate_series(1, %(urls)s) n"""),
    ("url_state", """
        UPDATE url_state SET state = CASE WHEN url_id %% 100 = 0 THEN 'down' ELSE 'up' END,
                             since = now() - (url_id %% 5000) * interval '1 minute'"""),
    # Eight response-time shapes, shared by many rows: nine buckets each from about 40 ms
    # (bucket {low}) on, in the rollups' layout (trailing empty buckets left out).
    ("shapes", """
        CREATE TEMP TABLE shape AS
        SELECT k, ARRAY(SELECT CASE WHEN i >= {low} + k THEN i - {low} + 1 ELSE 0 END
                        FROM generate_series(0, {low} + 8 + k) i ORDER BY i)::int[] AS hist
        FROM generate_series(0, 7) k"""),
    ("rollup_day", """
        INSERT INTO rollup_day (url_id, bucket, checks, ok, failed, non_2xx, rt_count, rt_sum, rt_min, rt_max,
                                rt_hist, cert_days_min)
        SELECT u.id, d, 288, 288 - f, f, f, 288 - f, (288 - f) * 120.0, 40, 900, s.hist, 60
        FROM url u
        CROSS JOIN generate_series(date_trunc('day', now()) - interval '30 days',
                                   date_trunc('day', now()) - interval '1 day', interval '1 day') d
        CROSS JOIN LATERAL (SELECT CASE WHEN (u.id + extract(doy FROM d)::int) %% 7 = 0 THEN 3 ELSE 0 END AS f) x
        JOIN shape s ON s.k = u.id %% 8"""),
    ("rollup_hour", """
        INSERT INTO rollup_hour (url_id, bucket, checks, ok, failed, non_2xx, rt_count, rt_sum, rt_min, rt_max,
                                 rt_hist, cert_days_min)
        SELECT u.id, h, 12, 12 - f, f, f, 12 - f, (12 - f) * 120.0, 40, 900, s.hist, 60
        FROM url u
        CROSS JOIN (SELECT generate_series(date_trunc('day', now()) - interval '1 day',
                                           date_trunc('hour', now()) - interval '1 hour', interval '1 hour')
                    UNION ALL
                    SELECT generate_series(d, d + interval '23 hours', interval '1 hour')
                    FROM unnest(ARRAY[date_trunc('day', now() - interval '7 days'),
                                      date_trunc('day', now() - interval '30 days')]) AS d) AS hh (h)
        CROSS JOIN LATERAL (SELECT CASE WHEN (u.id + extract(hour FROM h)::int) %% 11 = 0 THEN 1 ELSE 0 END AS f) x
        JOIN shape s ON s.k = (u.id + 3) %% 8"""),
    ("task_result", """
        INSERT INTO task_result (url_id, scheduled_at, started_at, response_time_ms, status_code, ok, error_kind,
                                 error, cert_days_left, checked_by)
        SELECT u.id, t, t + interval '20 ms', CASE WHEN down THEN NULL ELSE 40 + (u.id * 7 + n) %% 300 END,
               CASE WHEN down THEN NULL ELSE 200 END, NOT down,
               CASE WHEN down THEN 'connect' END, CASE WHEN down THEN 'connection refused' END, 60, 'bench'
        FROM url u
        CROSS JOIN LATERAL (SELECT u.id %% 100 = 0 AS down) x
        CROSS JOIN generate_series(date_trunc('hour', now()) + (u.id %% {period}) * interval '1 second',
                                   now(), interval '{period} seconds') WITH ORDINALITY AS g (t, n)"""),
    ("watermarks", """
        UPDATE rollup_watermark SET done_until = CASE level WHEN 'hour' THEN date_trunc('hour', now())
                                                            ELSE date_trunc('day', now()) END"""),
    ("incidents", """
        INSERT INTO incident (url_id, url, started_at, ended_at, first_error_kind, first_error, last_error_kind,
                              last_error, failed_checks)
        SELECT id, url, now() - (id %% 5000) * interval '1 minute', NULL, 'connect', 'connection refused', 'connect',
               'connection refused', 3 + id %% 50
        FROM url WHERE id %% 100 = 0
        UNION ALL
        SELECT 1 + (n * 7919) %% %(urls)s, 'https://closed.example.net/', now() - n * interval '7 minutes',
               now() - n * interval '7 minutes' + interval '12 minutes', 'timeout', 'no answer within 10 s',
               'timeout', 'no answer within 10 s', 4
        FROM generate_series(1, 5000) n"""),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres", help="server to use")
    parser.add_argument("--db", default="sitewatch_bench_web", help="database to (re)create")
    parser.add_argument("--urls", type=int, default=100_000)
    args = parser.parse_args()
    admin = psycopg2.connect(args.dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {args.db} WITH (FORCE)")
        cur.execute(f"CREATE DATABASE {args.db}")
    admin.close()
    dsn = psycopg2.extensions.make_dsn(args.dsn, dbname=args.db)
    conn = psycopg2.connect(dsn)
    schema.migrate(conn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
        for name, sql in STEPS:
            started = time.monotonic()
            cur.execute(sql.format(period=PERIOD, low=histogram.bucket(40)), {"urls": args.urls})
            print(f"{name}: {cur.rowcount} rows in {time.monotonic() - started:.1f} s", flush=True)
    # The uptime summary, as the maintenance job builds it when the hourly watermark moves.
    conn.autocommit = False
    started = time.monotonic()
    built = summary.refresh(conn)
    print(f"uptime summary: {built} in {time.monotonic() - started:.1f} s", flush=True)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE")
        cur.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        print(f"database {args.db}: {cur.fetchone()[0]}; DSN {dsn}")
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
