"""Seed data for the web tests: URLs, 30 days of raw results, real rollups, states and incidents.

Everything goes through the real schema (the test database is migrated to the latest version):
url_state rows come from the alerts' trigger on url, raw results go into task_result's daily
partitions, and the rollups are written by the real maintenance job (history.maintenance
run_once), which then applies raw retention (history.raw_days = 7: partitions older than that
are dropped once rolled up). So the 7 d and 30 d figures can only come out right if the web
combines rollups and raw rows correctly. A copy of every raw row stays in `seed_raw` as the
truth to compare with.
"""

import datetime

from sitewatch import config
from sitewatch.history import maintenance
from tests.historydata import ensure_past_partitions

ALPHA = "https://alpha.example.com/"
BETA = "https://user:s3cret@beta.example.com/status?token=abc123"   # down; shown redacted
GAMMA = "http://gamma.example.com/"                                # never checked: unknown
PERIOD = 600
FILLER = 240          # more URLs, so there are several pages
RAW_DAYS = 7
DAY = datetime.timedelta(days=1)


def seed(conn) -> dict:
    """Seed the test database (conn in autocommit); returns {"alpha": id, "beta": id, "gamma": id}."""
    ensure_past_partitions(conn, 31)
    with conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
        ids = {}
        for name, url in (("alpha", ALPHA), ("beta", BETA), ("gamma", GAMMA)):
            cur.execute("INSERT INTO url (url, period, timeout, next_check_at, created_at) "
                        "VALUES (%s, %s, 10, now(), now() - interval '40 days') RETURNING id", (url, PERIOD))
            ids[name] = cur.fetchone()[0]
        # created_at from now(), not the column's default: the database's clock may be moved on
        # (historydata.set_clock), and the default keeps the real time.
        cur.execute("INSERT INTO url (url, period, timeout, next_check_at, created_at) "
                    "SELECT format('https://site-%%s.example.org/', lpad(n::text, 4, '0')), 60, 10, now(), now() "
                    "FROM generate_series(1, %s) n", (FILLER,))
        # 30 days of raw results every PERIOD s. alpha: fails one slot in 17 (timeout), one in 53
        # is lost (the monitor's failure: counted neither as up nor as down);
        # beta: same, and down for 3 hours.
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
        # url_state rows exist already (the alerts' trigger on url): set the states.
        cur.execute("UPDATE url_state SET state = 'up', since = now() - interval '2 days', "
                    "last_slot = date_trunc('minute', now()) WHERE url_id = %(alpha)s", ids)
        cur.execute("UPDATE url_state SET state = 'down', since = now() - interval '3 hours', "
                    "last_slot = date_trunc('minute', now()) WHERE url_id = %(beta)s", ids)
        cur.execute("UPDATE url_state SET state = 'up', since = now() - interval '1 day' "
                    "WHERE url_id IN (SELECT id FROM url WHERE url LIKE 'https://site-%%')")
        cur.execute("""
            INSERT INTO incident (url_id, url, started_at, ended_at, first_error_kind, first_error,
                                  last_error_kind, last_error, failed_checks)
            VALUES (%(beta)s, alert_redact_url(%(beta_url)s), now() - interval '3 hours', NULL, 'connect',
                    'connection refused', 'connect', 'connection refused', 18),
                   (%(alpha)s, %(alpha_url)s, now() - interval '2 days 30 minutes', now() - interval '2 days',
                    'timeout', 'no answer within 10 s', 'timeout', 'no answer within 10 s', 3),
                   (999999, 'https://removed.example.com/', now() - interval '5 days',
                    now() - interval '5 days' + interval '12 minutes',
                    'dns', 'name not known', 'dns', 'name not known', 2)
        """, {**ids, "beta_url": BETA, "alpha_url": ALPHA})
    # The real history job: hourly and daily rollups up to the grace window, then raw retention.
    cfg = config.load({"SITEWATCH_HISTORY__RAW_DAYS": str(RAW_DAYS)}, {}, None)
    summary = maintenance.run_once(conn, cfg)
    assert summary and summary["hours_rolled_up"] > 24 * 29 and summary["partitions_dropped"] > 0, summary
    return ids


def truth(conn, url_id: int, since_sql: str) -> tuple[int, int]:
    """(ok, failed) from the raw rows (seed_raw) since a SQL time expression."""
    with conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FILTER (WHERE ok), count(*) FILTER (WHERE NOT ok AND error_kind <> 'lost') "
                    f"FROM seed_raw "
                    f"WHERE url_id = %s AND scheduled_at >= {since_sql}", (url_id,))
        return cur.fetchone()
