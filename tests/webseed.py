"""Seed data for the web tests: URLs, 30 days of raw results, rollups, states and incidents.

The rollups are computed from the raw rows here, the way the history job would (every complete
hour but the last two, every day before today), and then raw rows older than 7 days are
deleted (raw retention): so the 7 d and 30 d figures can only come out right if the web combines
rollups and raw rows correctly. A copy of every raw row stays in `seed_raw` as the truth to
compare with.
"""

import os

from sitewatch.web.data import HIST_BUCKETS

CONTRACT_SQL = os.path.join(os.path.dirname(__file__), "web_contract.sql")

ALPHA = "https://alpha.example.com/"
BETA = "https://user:s3cret@beta.example.com/status?token=abc123"   # down; shown redacted
GAMMA = "http://gamma.example.com/"                                # never checked: unknown
PERIOD = 600
FILLER = 240          # more URLs, so there are several pages


def apply_contract(conn) -> None:
    """TRANSITIONAL (see tests/web_contract.sql): the alerts and history tables when absent."""
    with open(CONTRACT_SQL, encoding="utf-8") as f, conn.cursor() as cur:
        cur.execute(f.read())


_BUCKET = (f"CASE WHEN response_time_ms < 1 THEN 0 ELSE least({HIST_BUCKETS - 1},"
           " floor(4 * ln(response_time_ms) / ln(2.0))::int + 1) END")


def _rollup(unit: str, table: str, before: str) -> str:
    return f"""
    INSERT INTO {table} (url_id, bucket, checks, ok, failed, rt_count, rt_sum, rt_min, rt_max, rt_hist,
                         cert_days_min)
    SELECT g.url_id, g.b, g.checks, g.ok, g.failed, g.rt_count, g.rt_sum, g.rt_min, g.rt_max,
           ARRAY(SELECT count(*) FILTER (WHERE r.idx = i)::int
                 FROM generate_series(0, {HIST_BUCKETS - 1}) i
                 LEFT JOIN (SELECT {_BUCKET} AS idx FROM task_result t
                            WHERE t.url_id = g.url_id AND t.scheduled_at >= g.b
                              AND t.scheduled_at < g.b + interval '1 {unit}'
                              AND t.response_time_ms IS NOT NULL) r ON r.idx = i
                 GROUP BY i ORDER BY i),
           g.cert
    FROM (SELECT url_id, date_trunc('{unit}', scheduled_at) AS b, count(*) AS checks,
                 count(*) FILTER (WHERE ok) AS ok,
                 count(*) FILTER (WHERE NOT ok AND error_kind IS DISTINCT FROM 'lost') AS failed,
                 count(response_time_ms) AS rt_count, sum(response_time_ms) AS rt_sum,
                 min(response_time_ms) AS rt_min, max(response_time_ms) AS rt_max, min(cert_days_left) AS cert
          FROM task_result WHERE scheduled_at < {before} GROUP BY 1, 2) g
    """


def seed(conn) -> dict:
    """Seed the test database; returns {"alpha": id, "beta": id, "gamma": id}."""
    apply_contract(conn)
    with conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
        ids = {}
        for name, url in (("alpha", ALPHA), ("beta", BETA), ("gamma", GAMMA)):
            cur.execute("INSERT INTO url (url, period, timeout, next_check_at, created_at) "
                        "VALUES (%s, %s, 10, now(), now() - interval '40 days') RETURNING id", (url, PERIOD))
            ids[name] = cur.fetchone()[0]
        cur.execute("INSERT INTO url (url, period, timeout, next_check_at) "
                    "SELECT format('https://site-%%s.example.org/', lpad(n::text, 4, '0')), 60, 10, now() "
                    "FROM generate_series(1, %s) n", (FILLER,))
        # 30 days of raw results every PERIOD s. alpha: fails one slot in 17 (timeout), one in 53
        # is lost (the monitor's failure, counts for nothing); beta: same, and down for 3 hours.
        cur.execute(f"""
            INSERT INTO task_result (url_id, scheduled_at, started_at, response_time_ms, status_code, ok,
                                     error_kind, error, cert_days_left, checked_by)
            SELECT u.id, s.ts, s.ts + interval '1 second',
                   CASE WHEN failing THEN NULL ELSE 20 + (n * 37 + u.id * 11) %% 400 END,
                   CASE WHEN failing THEN NULL ELSE 200 END,
                   NOT failing,
                   CASE WHEN NOT failing THEN NULL WHEN lost THEN 'lost'
                        WHEN u.id = %(beta)s AND recent THEN 'connect' ELSE 'timeout' END,
                   CASE WHEN NOT failing THEN NULL WHEN lost THEN 'not recorded after 3 attempts'
                        WHEN u.id = %(beta)s AND recent THEN 'connection refused' ELSE 'no answer within 10 s' END,
                   CASE WHEN failing THEN NULL ELSE 42 END,
                   'seed'
            FROM url u
            CROSS JOIN LATERAL (
                SELECT ts, n, n %% 53 = 0 AS lost, ts > now() - interval '3 hours' AS recent
                FROM generate_series(date_trunc('hour', now()) - interval '30 days', now(),
                                     interval '{PERIOD} seconds') WITH ORDINALITY AS g (ts, n)) s
            CROSS JOIN LATERAL (SELECT s.lost OR s.n %% 17 = 0 OR (u.id = %(beta)s AND s.recent) AS failing) f
            WHERE u.id IN (%(alpha)s, %(beta)s)
        """, ids)
        cur.execute("CREATE TABLE seed_raw AS SELECT * FROM task_result")
        # What the history job would have rolled up by now, then raw retention.
        cur.execute(_rollup("hour", "rollup_hour", "date_trunc('hour', now()) - interval '2 hours'"))
        cur.execute(_rollup("day", "rollup_day", "date_trunc('day', now())"))
        cur.execute("DELETE FROM task_result WHERE scheduled_at < now() - interval '7 days'")
        cur.execute("INSERT INTO url_state (url_id, state, since, last_slot) VALUES "
                    "(%(alpha)s, 'up', now() - interval '2 days', date_trunc('minute', now())), "
                    "(%(beta)s, 'down', now() - interval '3 hours', date_trunc('minute', now()))", ids)
        cur.execute("""INSERT INTO url_state (url_id, state, since)
                       SELECT id, 'up', now() - interval '1 day' FROM url WHERE url LIKE 'https://site-%%'""")
        cur.execute("""
            INSERT INTO incident (url_id, started_at, ended_at, first_error_kind, first_error,
                                  last_error_kind, last_error, failed_checks)
            VALUES (%(beta)s, now() - interval '3 hours', NULL, 'connect', 'connection refused',
                    'connect', 'connection refused', 18),
                   (%(alpha)s, now() - interval '2 days 30 minutes', now() - interval '2 days', 'timeout',
                    'no answer within 10 s', 'timeout', 'no answer within 10 s', 3),
                   (999999, now() - interval '5 days', now() - interval '5 days' + interval '12 minutes',
                    'dns', 'name not known', 'dns', 'name not known', 2)
        """, ids)
    return ids


def truth(conn, url_id: int, since_sql: str) -> tuple[int, int]:
    """(ok, failed) from the raw rows (seed_raw) since a SQL time expression."""
    with conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FILTER (WHERE ok), count(*) FILTER (WHERE NOT ok AND "
                    f"error_kind IS DISTINCT FROM 'lost') FROM seed_raw "
                    f"WHERE url_id = %s AND scheduled_at >= {since_sql}", (url_id,))
        return cur.fetchone()
