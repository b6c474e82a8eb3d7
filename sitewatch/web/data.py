"""Every SQL query of the web (read-only), and the uptime and percentile figures.

Tables read: url, task_result (migration 0001); url_state, incident (alerts);
rollup_hour, rollup_day (history). The contracts are in PLAN.md.

Uptime and percentiles are computed in two places only, `uptime_windows` and
`percentile` (with `HIST_EDGES`): the history subsystem owns the same figures
(`sitewatch.history`), and at merge these two are switched to its API.

How a window is counted (until then): a window of N hours is the current UTC hour
and the N-1 before it. Each (URL, hour) comes from `rollup_hour` where the history
job wrote it, and from the raw `task_result` rows for the hours after the URL's
newest rolled-up hour (the job has not got to them yet), so the figures are current
and equal to a count over the raw rows. `lost` results are the monitor's failure,
not the site's: they count as neither ok nor failed. Windows of days (7d, 30d, 90d,
365d) are the current UTC day and the days before it, from `rollup_day`, filled the same
way from the hours and raw rows after the newest rolled-up day. `daily` (the 90-day bar)
and `hourly` (the 24 h chart) read the same way.

Indexes this relies on: the primary keys of the rollups (url_id, bucket), task_result's
UNIQUE (url_id, scheduled_at), url's UNIQUE (url). Down URLs are found by a scan of
url_state (a partial index on url_state (url_id) WHERE state = 'down' would remove it).
"""

import math
from collections import defaultdict

import psycopg2.extras

# --- Percentiles from fixed log-spaced histograms -------------------------------------------------

# Bucket 0 holds [0, 1) ms; bucket i >= 1 holds [2^((i-1)/4), 2^(i/4)) ms; the last is open-ended.
# Four buckets per doubling: a percentile is known within about 9%.
HIST_BUCKETS = 64
HIST_EDGES = [2 ** (i / 4) for i in range(HIST_BUCKETS)]       # upper edge of bucket i


def bucket_index(ms: float) -> int:
    if ms < 1:
        return 0
    return min(HIST_BUCKETS - 1, int(math.floor(4 * math.log2(ms))) + 1)


# The same bucketing in SQL, for raw rows not rolled up yet.
_BUCKET_SQL = (f"CASE WHEN t.response_time_ms < 1 THEN 0 ELSE least({HIST_BUCKETS - 1},"
               " floor(4 * ln(t.response_time_ms) / ln(2.0))::int + 1) END")


def percentile(hist: list[int], q: float) -> float | None:
    """The q-quantile (0..1) in ms of a histogram; the geometric middle of its bucket."""
    total = sum(hist)
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for i, n in enumerate(hist):
        seen += n
        if seen >= rank:
            if i == 0:
                return 0.5
            low = HIST_EDGES[i - 1]
            return low if i == HIST_BUCKETS - 1 else math.sqrt(low * HIST_EDGES[i])
    return None


def _hist_from_pairs(pairs) -> list[int]:
    hist = [0] * HIST_BUCKETS
    for idx, n in pairs:
        if idx is not None and 0 <= idx < HIST_BUCKETS:
            hist[idx] += int(n)
    return hist


# --- SQL -------------------------------------------------------------------------------------------

# A URL as people may see it: no userinfo, no query string (search runs on this, so a search
# cannot probe for a secret token either).
SHOWN_URL_SQL = r"regexp_replace(split_part(split_part(u.url, '#', 1), '?', 1), '^([A-Za-z]+://)[^/@]*@', '\1***@')"

# Per (URL, hour) since the window's start: rolled-up hours, then raw rows of the hours after
# each URL's newest rolled-up hour. %(ids)s: the URLs; %(hours)s: the longest window in hours.
_RAW_FROM_CTE = """
ids AS (SELECT DISTINCT unnest(%(ids)s::bigint[]) AS url_id),
bounds AS (SELECT date_trunc('hour', now()) - make_interval(hours => %(hours)s - 1) AS cut),
raw_from AS (
    SELECT i.url_id,
           greatest(b.cut, (SELECT max(r.bucket) + interval '1 hour' FROM rollup_hour r
                            WHERE r.url_id = i.url_id)) AS t
    FROM ids i, bounds b)"""

_HOURS_CTE = _RAW_FROM_CTE + """,
hours AS (
    SELECT r.url_id, r.bucket, r.ok, r.failed
    FROM rollup_hour r JOIN ids USING (url_id), bounds b
    WHERE r.bucket >= b.cut
    UNION ALL
    SELECT t.url_id, date_trunc('hour', t.scheduled_at),
           count(*) FILTER (WHERE t.ok),
           count(*) FILTER (WHERE NOT t.ok AND t.error_kind IS DISTINCT FROM 'lost')
    FROM raw_from f JOIN task_result t ON t.url_id = f.url_id AND t.scheduled_at >= f.t
    GROUP BY 1, 2)
"""

# Per (URL, UTC day) since the window's start: rolled-up days; after each URL's newest
# rolled-up day its rolled-up hours; after its newest rolled-up hour its raw rows.
_DAYS_CTE = """
ids AS (SELECT DISTINCT unnest(%(ids)s::bigint[]) AS url_id),
bounds AS (SELECT date_trunc('day', now()) - make_interval(days => %(days)s - 1) AS cut),
day_from AS (
    SELECT i.url_id,
           greatest(b.cut, (SELECT max(r.bucket) + interval '1 day' FROM rollup_day r
                            WHERE r.url_id = i.url_id)) AS d,
           (SELECT max(r.bucket) + interval '1 hour' FROM rollup_hour r WHERE r.url_id = i.url_id) AS h
    FROM ids i, bounds b),
days AS (
    SELECT r.url_id, r.bucket, r.ok, r.failed
    FROM rollup_day r JOIN ids USING (url_id), bounds b
    WHERE r.bucket >= b.cut
    UNION ALL
    SELECT r.url_id, date_trunc('day', r.bucket), sum(r.ok), sum(r.failed)
    FROM day_from f JOIN rollup_hour r ON r.url_id = f.url_id AND r.bucket >= f.d
    GROUP BY 1, 2
    UNION ALL
    SELECT t.url_id, date_trunc('day', t.scheduled_at),
           count(*) FILTER (WHERE t.ok),
           count(*) FILTER (WHERE NOT t.ok AND t.error_kind IS DISTINCT FROM 'lost')
    FROM day_from f JOIN task_result t ON t.url_id = f.url_id AND t.scheduled_at >= greatest(f.d, f.h)
    GROUP BY 1, 2)
"""


def _windows_sql(cte: str, unit: str) -> str:
    """ok, failed and expected slots (for coverage) per (URL, window of N `unit`s)."""
    start = f"date_trunc('{unit}', now()) - make_interval({unit}s => w.n - 1)"
    return "WITH " + cte + f"""
SELECT u.id, w.n, coalesce(sum(b.ok), 0)::bigint, coalesce(sum(b.failed), 0)::bigint,
       floor(extract(epoch FROM now() - greatest({start}, u.created_at)) / u.period)::bigint
FROM url u JOIN ids i ON i.url_id = u.id
CROSS JOIN unnest(%(windows)s::int[]) AS w (n)
LEFT JOIN {unit}s b ON b.url_id = u.id AND b.bucket >= {start}
GROUP BY u.id, u.created_at, u.period, w.n
"""


UPTIME_HOURS_SQL = _windows_sql(_HOURS_CTE, "hour")
UPTIME_DAYS_SQL = _windows_sql(_DAYS_CTE, "day")

DAILY_SQL = "WITH " + _DAYS_CTE + """
SELECT bucket, sum(ok)::bigint, sum(failed)::bigint FROM days GROUP BY 1
"""

# Response-time histogram over the window, per URL: (url_id, bucket index, count).
RT_HIST_SQL = "WITH " + _RAW_FROM_CTE + """
SELECT url_id, idx, sum(n)::bigint FROM (
    SELECT r.url_id, (e.i - 1)::int AS idx, e.n
    FROM rollup_hour r JOIN ids USING (url_id), bounds b,
         unnest(r.rt_hist) WITH ORDINALITY AS e (n, i)
    WHERE r.bucket >= b.cut AND e.n > 0
    UNION ALL
    SELECT t.url_id, """ + _BUCKET_SQL + """, 1
    FROM raw_from f JOIN task_result t ON t.url_id = f.url_id AND t.scheduled_at >= f.t
    WHERE t.response_time_ms IS NOT NULL) x
GROUP BY 1, 2
"""

# One URL's hours (for the 24 h chart): (bucket, ok, failed, histogram or raw bucket indexes).
HOURLY_SQL = """
WITH bounds AS (
    SELECT date_trunc('hour', now()) - make_interval(hours => %(hours)s - 1) AS cut,
           (SELECT max(bucket) + interval '1 hour' FROM rollup_hour WHERE url_id = %(id)s) AS raw_from)
SELECT r.bucket, r.ok, r.failed, r.rt_hist, NULL::int[]
FROM rollup_hour r, bounds b WHERE r.url_id = %(id)s AND r.bucket >= b.cut
UNION ALL
SELECT date_trunc('hour', t.scheduled_at),
       count(*) FILTER (WHERE t.ok),
       count(*) FILTER (WHERE NOT t.ok AND t.error_kind IS DISTINCT FROM 'lost'),
       NULL::integer[],
       array_agg(""" + _BUCKET_SQL + """) FILTER (WHERE t.response_time_ms IS NOT NULL)
FROM task_result t, bounds b
WHERE t.url_id = %(id)s AND t.scheduled_at >= greatest(b.cut, b.raw_from)
GROUP BY 1
"""

_URL_COLUMNS = """u.id, u.url, u.period, u.regex, u.created_at,
       coalesce(s.state, 'unknown') AS state, s.since"""

_LAST_CHECK = """LEFT JOIN LATERAL (
    SELECT t.scheduled_at AS last_scheduled_at, t.started_at AS last_started_at, t.ok AS last_ok,
           t.status_code AS last_status_code, t.response_time_ms AS last_response_time_ms,
           t.error_kind AS last_error_kind, t.error AS last_error, t.cert_days_left AS last_cert_days_left
    FROM task_result t WHERE t.url_id = u.id ORDER BY t.scheduled_at DESC LIMIT 1) last ON true"""

_FILTER = f"""(%(state)s::text IS NULL OR coalesce(s.state, 'unknown') = %(state)s)
  AND (%(q)s::text IS NULL OR {SHOWN_URL_SQL} ILIKE %(q)s)"""

# Down first, then by URL. Two ordered, limited branches instead of one sort of every URL:
# down URLs are few (a hashed set from url_state), and the other branch walks url's unique
# index and stops after offset + limit rows. url_state is joined there only for a state
# filter (psycopg2 sends the parameters inline, so `NULL IS NULL` folds away and the planner
# drops the unused join). The last check is looked up for the page's rows only.
URL_PAGE_SQL = f"""
WITH down AS MATERIALIZED (SELECT url_id FROM url_state WHERE state = 'down'),
page AS (
    SELECT p.id, p.down FROM (
        (SELECT u.id, u.url, true AS down FROM url u
         WHERE u.id IN (SELECT url_id FROM down) AND (%(state)s::text IS NULL OR %(state)s = 'down')
           AND (%(q)s::text IS NULL OR {SHOWN_URL_SQL} ILIKE %(q)s)
         ORDER BY u.url LIMIT %(end)s)
        UNION ALL
        (SELECT u.id, u.url, false FROM url u LEFT JOIN url_state s ON s.url_id = u.id
         WHERE u.id NOT IN (SELECT url_id FROM down) AND {_FILTER}
         ORDER BY u.url LIMIT %(end)s)) p
    ORDER BY p.down DESC, p.url
    LIMIT %(limit)s OFFSET %(offset)s)
SELECT {_URL_COLUMNS}, last.*
FROM page p JOIN url u ON u.id = p.id LEFT JOIN url_state s ON s.url_id = u.id
{_LAST_CHECK}
ORDER BY p.down DESC, u.url
"""

URL_COUNT_SQL = f"""
SELECT count(*) FROM url u LEFT JOIN url_state s ON s.url_id = u.id WHERE {_FILTER}
"""

URL_ONE_SQL = f"""
SELECT {_URL_COLUMNS}, last.*, now() AS db_now
FROM url u LEFT JOIN url_state s ON s.url_id = u.id
{_LAST_CHECK}
WHERE u.id = %(id)s
"""

# url_state rows go with their URL (ON DELETE CASCADE): URLs without one are 'unknown'.
SUMMARY_SQL = """
SELECT (SELECT count(*) FROM url) AS urls, s.up, s.down,
       (SELECT count(*) FROM incident WHERE ended_at IS NULL) AS open_incidents,
       s.last_result_slot, now() AS generated_at
FROM (SELECT count(*) FILTER (WHERE state = 'up') AS up, count(*) FILTER (WHERE state = 'down') AS down,
             max(last_slot) AS last_result_slot
      FROM url_state) s
"""

CHECKS_SQL = """
SELECT scheduled_at, started_at, ok, status_code, response_time_ms, regex_matched, error_kind, error,
       cert_days_left
FROM task_result
WHERE url_id = %(id)s AND (%(before)s::timestamptz IS NULL OR scheduled_at < %(before)s)
ORDER BY scheduled_at DESC
LIMIT %(limit)s
"""

CERT_SQL = """
SELECT cert_days_min FROM rollup_hour
WHERE url_id = %(id)s AND cert_days_min IS NOT NULL ORDER BY bucket DESC LIMIT 1
"""

INCIDENTS_SQL = """
SELECT i.id, i.url_id, u.url, i.started_at, i.ended_at,
       coalesce(i.ended_at, now()) - i.started_at AS duration,
       i.first_error_kind, i.first_error, i.last_error_kind, i.last_error, i.failed_checks
FROM incident i LEFT JOIN url u ON u.id = i.url_id
WHERE (%(open)s::boolean IS NULL OR (i.ended_at IS NULL) = %(open)s)
  AND (%(url_id)s::bigint IS NULL OR i.url_id = %(url_id)s)
ORDER BY (i.ended_at IS NULL) DESC, i.started_at DESC, i.id DESC
LIMIT %(limit)s OFFSET %(offset)s
"""


# --- Queries ---------------------------------------------------------------------------------------

def _rows(conn, sql: str, params: dict) -> list[dict]:
    with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute(sql, params)
        return [dict(row) for row in cur.fetchall()]


def _like(text: str | None) -> str | None:
    if not text:
        return None
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def summary(conn) -> dict:
    row = _rows(conn, SUMMARY_SQL, {})[0]
    row["unknown"] = row["urls"] - row["up"] - row["down"]
    return row


def url_page(conn, state: str | None, q: str | None, limit: int, offset: int,
             counts: dict | None = None) -> tuple[list[dict], int]:
    """One page of URLs (down first, then by URL) and the number matching the filter
    (taken from `counts`, a summary(), when there is no search)."""
    params = {"state": state, "q": _like(q), "limit": limit, "offset": offset, "end": offset + limit}
    rows = _rows(conn, URL_PAGE_SQL, params)
    if counts is not None and q is None:
        total = counts[state] if state else counts["urls"]
    else:
        total = _rows(conn, URL_COUNT_SQL, params)[0]["count"]
    return rows, total


def url_one(conn, url_id: int) -> dict | None:
    rows = _rows(conn, URL_ONE_SQL, {"id": url_id})
    return rows[0] if rows else None


# Window names and their length: hours-long windows count UTC hours, longer ones UTC days.
WINDOWS = {"24h": ("hours", 24), "7d": ("days", 7), "30d": ("days", 30), "90d": ("days", 90),
           "365d": ("days", 365)}


def uptime_windows(conn, url_ids: list[int], names=("24h", "7d", "30d")) -> dict[int, dict]:
    """{url_id: {name: {ok, failed, expected, uptime, coverage}, "p95_ms_24h": ms}} for many URLs
    in three queries, whatever their number. uptime = ok / (ok + failed), truncated (never
    rounded up to 1); coverage = (ok + failed) / expected slots; None without data.
    """
    out: dict[int, dict] = {url_id: {} for url_id in url_ids}
    if not url_ids:
        return out
    ids = list(url_ids)
    with conn.cursor() as cur:
        for unit, sql in (("hours", UPTIME_HOURS_SQL), ("days", UPTIME_DAYS_SQL)):
            wanted = {WINDOWS[name][1]: name for name in names if WINDOWS[name][0] == unit}
            if not wanted:
                continue
            cur.execute(sql, {"ids": ids, unit: max(wanted), "windows": list(wanted)})
            for url_id, n, ok, failed, expected in cur.fetchall():
                out[url_id][wanted[n]] = figures(ok, failed, expected)
        cur.execute(RT_HIST_SQL, {"ids": ids, "hours": 24})
        pairs = defaultdict(list)
        for url_id, idx, n in cur.fetchall():
            pairs[url_id].append((idx, n))
    for url_id in url_ids:
        out[url_id]["p95_ms_24h"] = percentile(_hist_from_pairs(pairs.get(url_id, [])), 0.95)
    return out


def figures(ok: int, failed: int, expected: int | None) -> dict:
    counted = ok + failed
    return {"ok": ok, "failed": failed, "expected": expected,
            "uptime": math.floor(ok / counted * 1e6) / 1e6 if counted else None,
            "coverage": min(1.0, math.floor(counted / expected * 1e6) / 1e6) if expected else None}


def hourly(conn, url_id: int, hours: int = 24) -> list[dict]:
    """The last `hours` UTC hours of one URL, oldest first: ok, failed, p50 and p95 in ms."""
    merged: dict = {}
    with conn.cursor() as cur:
        cur.execute(HOURLY_SQL, {"id": url_id, "hours": hours})
        for bucket, ok, failed, hist, raw_idx in cur.fetchall():
            slot = merged.setdefault(bucket, {"ok": 0, "failed": 0, "hist": [0] * HIST_BUCKETS})
            slot["ok"] += ok
            slot["failed"] += failed
            for i, n in enumerate(hist or []):
                if i < HIST_BUCKETS:
                    slot["hist"][i] += n
            for idx in raw_idx or []:
                slot["hist"][idx] += 1
    out = []
    for bucket in sorted(merged):
        slot = merged[bucket]
        out.append({"hour": bucket, "ok": slot["ok"], "failed": slot["failed"],
                    "p50_ms": percentile(slot["hist"], 0.5), "p95_ms": percentile(slot["hist"], 0.95)})
    return out


def daily(conn, url_id: int, days: int) -> dict:
    """{date: (ok, failed)} for the last `days` UTC days of one URL (days without data absent)."""
    merged: dict = defaultdict(lambda: [0, 0])
    with conn.cursor() as cur:
        cur.execute(DAILY_SQL, {"ids": [url_id], "days": days})
        for bucket, ok, failed in cur.fetchall():
            merged[bucket.date()][0] += int(ok)
            merged[bucket.date()][1] += int(failed)
    return {day: tuple(v) for day, v in merged.items()}


def checks(conn, url_id: int, limit: int, before=None) -> list[dict]:
    return _rows(conn, CHECKS_SQL, {"id": url_id, "limit": limit, "before": before})


def cert_days_left(conn, url: dict) -> int | None:
    """From the last check, else the newest hourly rollup (the last check may have failed before TLS)."""
    if url.get("last_cert_days_left") is not None:
        return url["last_cert_days_left"]
    if not url["url"].lower().startswith("https:"):
        return None
    with conn.cursor() as cur:
        cur.execute(CERT_SQL, {"id": url["id"]})
        row = cur.fetchone()
    return row[0] if row else None


def incidents(conn, open_only: bool | None = None, url_id: int | None = None, limit: int = 100,
              offset: int = 0) -> list[dict]:
    """Open incidents first, then the most recent; url is None for a removed URL."""
    return _rows(conn, INCIDENTS_SQL, {"open": open_only, "url_id": url_id, "limit": limit,
                                       "offset": offset})
