"""Every SQL query of the web (read-only); uptime and percentiles come from sitewatch.history.

Tables read: url, task_result (migration 0001); url_state, incident (0002_alerts.sql);
rollup_hour, rollup_day, rollup_watermark (0003_history.py).

The figures have one owner, the history subsystem: uptime, coverage and p95 per window are
`sitewatch.history.uptime.for_urls` (its rules: README "Uptime rules"; the same figures as
`sitewatch status`), and response-time histograms are `sitewatch.history.histogram`'s layout
(the one the rollups are written in). The 90-day daily bar (`daily`) and the 24 h chart
(`hourly`) are per-day and per-hour series that for_urls does not give; they read the same
three disjoint sources the same way: rollup_day before the day watermark, rollup_hour from
there to the hour watermark, raw task_result rows after it. As in the rollups, failed =
results that are not ok, except `lost` slots (the monitor's failure, not the site's: they
count neither as up nor as down) and slots inside a maintenance window (likewise: the
maintenance_ranges join, migration 0014).

Indexes this relies on: the primary keys of the rollups (url_id, bucket), task_result's
primary key (url_id, scheduled_at), url's index on (url, id) (0009: one URL may be several
monitors, so pages are ordered and continued by URL, then id). Down URLs are found by a scan of
url_state (a partial index on url_state (url_id) WHERE state = 'down' would remove it).
"""

import datetime
from collections import defaultdict

import psycopg2.extras

from ..history import histogram, regionuptime, uptime, windows
from ..history.rollup import QUERIES as HISTORY_QUERIES

HOUR = datetime.timedelta(hours=1)
DAY = datetime.timedelta(days=1)

# --- SQL -------------------------------------------------------------------------------------------

# A URL as people may see it, as redact.redact_url shows it: no userinfo (up to the LAST '@'
# of the authority: a password may hold '@'), no query string, no fragment. Search runs on this,
# so a search cannot probe for a password or a token. Most URLs have none of '@', '?' and '#':
# they skip the regular expression.
_PLAIN = "(strpos(u.url, '@') = 0 AND strpos(u.url, '?') = 0 AND strpos(u.url, '#') = 0)"
SHOWN_URL_SQL = _PLAIN.join(("(CASE WHEN ", r""" THEN u.url
    ELSE regexp_replace(split_part(split_part(u.url, '#', 1), '?', 1), '^([A-Za-z][A-Za-z0-9+.-]*://)[^/]*@',
                        '\1***@') END)"""))

# A search: the shown URL contains q. A URL without '@', '?' and '#' is shown as stored, so a
# plain ILIKE decides. When q has no '*', whatever a shown URL contains also occurs in the
# stored one (the shown URL is the stored one's "scheme://" and "@host/path" around '***'),
# so that ILIKE rules the others out before their shown form is computed. At 100,000 URLs a
# search costs 50-110 ms instead of 140-190 ms (the regular expression on every URL).
_SEARCH = f"""(%(q)s::text IS NULL OR CASE WHEN %(raw_q)s::text IS NULL THEN {SHOWN_URL_SQL} ILIKE %(q)s
    ELSE u.url ILIKE %(raw_q)s AND ({_PLAIN} OR {SHOWN_URL_SQL} ILIKE %(q)s) END)"""

# One URL's (UTC day, ok, failed) over [start, now): rollup_day in [start, day_to), rollup_hour
# in [day_to, hour_to), raw rows from hour_to (see _series_bounds).
DAILY_SQL = """
SELECT bucket, ok, failed FROM rollup_day
WHERE url_id = %(id)s AND bucket >= %(start)s AND bucket < %(day_to)s
UNION ALL
SELECT date_trunc('day', bucket, 'UTC'), sum(ok), sum(failed) FROM rollup_hour
WHERE url_id = %(id)s AND bucket >= %(day_to)s AND bucket < %(hour_to)s
GROUP BY 1
UNION ALL
SELECT date_trunc('day', scheduled_at, 'UTC'),
       count(*) FILTER (WHERE ok AND outside_maintenance(ranges, scheduled_at)),
       count(*) FILTER (WHERE NOT ok AND error_kind IS DISTINCT FROM 'lost'
                        AND outside_maintenance(ranges, scheduled_at))
FROM task_result LEFT JOIN maintenance_ranges(%(hour_to)s, 'infinity') USING (url_id)
WHERE url_id = %(id)s AND scheduled_at >= %(hour_to)s
GROUP BY 1
"""

# One URL's hours over [start, now) for the 24 h chart: (hour, ok, failed, rt_hist, raw bucket
# indexes): rollup_hour before the hour watermark, raw rows after it.
HOURLY_SQL = """
SELECT bucket, ok, failed, rt_hist, NULL::integer[] FROM rollup_hour
WHERE url_id = %(id)s AND bucket >= %(start)s AND bucket < %(hour_to)s
UNION ALL
SELECT date_trunc('hour', scheduled_at, 'UTC'),
       count(*) FILTER (WHERE ok AND outside_maintenance(ranges, scheduled_at)),
       count(*) FILTER (WHERE NOT ok AND error_kind IS DISTINCT FROM 'lost'
                        AND outside_maintenance(ranges, scheduled_at)),
       NULL::integer[], array_agg(""" + histogram.BUCKET_SQL.format(rt="response_time_ms") + """)
                            FILTER (WHERE response_time_ms IS NOT NULL)
FROM task_result LEFT JOIN maintenance_ranges(greatest(%(start)s, %(hour_to)s), 'infinity') USING (url_id)
WHERE url_id = %(id)s AND scheduled_at >= greatest(%(start)s, %(hour_to)s)
GROUP BY 1
"""

# `maintenance` while a maintenance window covers the URL (maintenance_now(): once per statement)
_URL_COLUMNS = """u.id, u.url, u.name, u.period, u.regex, u.created_at,
       CASE WHEN u.url LIKE ANY (ARRAY(SELECT maintenance_now())) THEN 'maintenance'
            ELSE coalesce(s.state, 'unknown') END AS state, s.since"""

_LAST_CHECK = """LEFT JOIN LATERAL (
    SELECT t.scheduled_at AS last_scheduled_at, t.started_at AS last_started_at, t.ok AS last_ok,
           t.status_code AS last_status_code, t.response_time_ms AS last_response_time_ms,
           t.error_kind AS last_error_kind, t.error AS last_error, t.cert_days_left AS last_cert_days_left
    FROM task_result t WHERE t.url_id = u.id ORDER BY t.scheduled_at DESC LIMIT 1) last ON true"""

_FILTER = f"""(%(state)s::text IS NULL OR coalesce(s.state, 'unknown') = %(state)s)
  AND {_SEARCH}"""

# Down first, then by URL. Two ordered, limited branches instead of one sort of every URL:
# down URLs are few (a hashed set from url_state), and the other branch walks url's (url, id)
# index and stops after offset + limit rows. url_state is joined there only for a state
# filter (psycopg2 sends the parameters inline, so `NULL IS NULL` folds away and the planner
# drops the unused join). The last check is looked up for the page's rows only.
# Keyset paging (`after`, the last row's branch, URL and id: one URL may be several
# monitors): the down branch continues after (after_url, after_id) when the last row was
# down, and is done when it was not; the other branch starts after it when the last row was
# in it. Each walks the (url, id) index from there, whatever the depth (a deep OFFSET reads
# and drops every row before it).
URL_PAGE_SQL = f"""
WITH down AS MATERIALIZED (SELECT url_id FROM url_state WHERE state = 'down'),
page AS (
    SELECT p.id, p.down FROM (
        (SELECT u.id, u.url, true AS down FROM url u
         WHERE u.id IN (SELECT url_id FROM down) AND (%(state)s::text IS NULL OR %(state)s = 'down')
           AND {_SEARCH}
           AND (%(after_down)s::boolean IS NULL OR (%(after_down)s AND (u.url, u.id) > (%(after_url)s, %(after_id)s)))
         ORDER BY u.url, u.id LIMIT %(end)s)
        UNION ALL
        (SELECT u.id, u.url, false FROM url u LEFT JOIN url_state s ON s.url_id = u.id
         WHERE u.id NOT IN (SELECT url_id FROM down) AND {_FILTER}
           AND (%(after_down)s::boolean IS DISTINCT FROM false OR (u.url, u.id) > (%(after_url)s, %(after_id)s))
         ORDER BY u.url, u.id LIMIT %(end)s)) p
    ORDER BY p.down DESC, p.url, p.id
    LIMIT %(limit)s OFFSET %(offset)s)
SELECT {_URL_COLUMNS}, p.down AS page_down, last.*
FROM page p JOIN url u ON u.id = p.id LEFT JOIN url_state s ON s.url_id = u.id
{_LAST_CHECK}
ORDER BY p.down DESC, u.url, u.id
"""

URL_TEXT_SQL = "SELECT url FROM url WHERE id = %(id)s"

URL_COUNT_SQL = f"""
SELECT count(*) FROM url u LEFT JOIN url_state s ON s.url_id = u.id WHERE {_FILTER}
"""

URL_ONE_SQL = f"""
SELECT {_URL_COLUMNS}, last.*, now() AS db_now, u.method, u.headers, u.body, u.body_json, u.bearer,
       u.client_cert, u.client_key, u.ip_version
FROM url u LEFT JOIN url_state s ON s.url_id = u.id
{_LAST_CHECK}
WHERE u.id = %(id)s
"""

# Every URL has a url_state row (the alerts' trigger on url inserts it, in state 'unknown');
# the LEFT JOINs and coalesce(..., 'unknown') only guard a hand-edited database.
SUMMARY_SQL = """
SELECT (SELECT count(*) FROM url) AS urls, s.up, s.degraded, s.partial, s.down,
       (SELECT count(*) FROM incident WHERE ended_at IS NULL) AS open_incidents,
       s.last_result_slot, now() AS generated_at
FROM (SELECT count(*) FILTER (WHERE state = 'up') AS up, count(*) FILTER (WHERE state = 'down') AS down,
             count(*) FILTER (WHERE state = 'degraded') AS degraded,
             count(*) FILTER (WHERE state = 'partial') AS partial,
             max(last_slot) AS last_result_slot
      FROM url_state) s
"""

CHECKS_SQL = """
SELECT scheduled_at, started_at, ok, status_code, response_time_ms, regex_matched, error_kind, error,
       cert_days_left, degraded
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
SELECT i.id, i.url_id, u.url, u.period, i.started_at, i.ended_at,
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
    row["unknown"] = row["urls"] - row["up"] - row["degraded"] - row["partial"] - row["down"]
    return row


class CursorGone(Exception):
    """The URL an `after` cursor names has been removed."""


def url_page(conn, state: str | None, q: str | None, limit: int, offset: int,
             counts: dict | None = None, after: tuple[bool, int] | None = None) -> tuple[list[dict], int, tuple | None]:
    """One page of URLs (down first, then by URL), the number matching the filter (taken from
    `counts`, a summary(), when there is no search), and the cursor of the next page: (down,
    id) of this page's last row, None on the last page. `after` is such a cursor (offset 0)."""
    after_down = after_url = None
    if after is not None:
        found = _rows(conn, URL_TEXT_SQL, {"id": after[1]})
        if not found:
            raise CursorGone(f"no URL with ID {after[1]}")
        after_down, after_url = after[0], found[0]["url"]
    params = {"state": state, "q": _like(q), "raw_q": _like(q) if q and "*" not in q else None,
              "limit": limit + 1, "offset": offset, "end": offset + limit + 1,
              "after_down": after_down, "after_url": after_url, "after_id": after[1] if after else None}
    rows = _rows(conn, URL_PAGE_SQL, params)
    cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        cursor = (rows[-1]["page_down"], rows[-1]["id"])
    if counts is not None and q is None:
        total = counts[state] if state else counts["urls"]
    else:
        total = _rows(conn, URL_COUNT_SQL, params)[0]["count"]
    return rows, total, cursor


def url_one(conn, url_id: int) -> dict | None:
    rows = _rows(conn, URL_ONE_SQL, {"id": url_id})
    return rows[0] if rows else None


# The windows the web offers: history's (24h, 7d, 30d, 90d, 365d).
WINDOWS = windows.WINDOWS


def uptime_windows(conn, url_ids: list[int], names=("24h", "7d", "30d"),
                   down_when: str = "majority") -> dict[int, dict]:
    """{url_id: {name: {ok, failed, expected, uptime, coverage}, "p95_ms_24h": ms}} for many URLs
    in a fixed number of queries: sitewatch.history.uptime.for_urls, as plain dicts. A URL with
    regions counts each slot once, by the quorum rule (regionuptime.py, `down_when` is
    alerts.down_when), in the windows that has (24h, 7d, 30d; longer ones count every region's
    result), its coverage then slots with a verdict / expected slots."""
    out: dict[int, dict] = {url_id: {} for url_id in url_ids}
    if not url_ids:
        return out
    for url_id, fig in uptime.for_urls(conn, url_ids, windows=tuple(names)).items():
        entry = out[url_id]
        for name, w in fig.windows.items():
            entry[name] = {"ok": w.ok, "failed": w.failed, "expected": w.expected,
                           "uptime": w.uptime, "coverage": w.coverage}
        entry["p95_ms_24h"] = fig.p95_ms_24h
    for url_id, regions in regionuptime.for_urls(conn, url_ids, down_when).items():
        for name, w in regions.get(regionuptime.QUORUM, {}).items():
            if name in out[url_id]:
                entry = out[url_id][name]
                slots = uptime.Window(w.ok, w.failed, entry["expected"])
                entry.update(ok=w.ok, failed=w.failed, uptime=slots.uptime, coverage=slots.coverage)
    return out


def figures(ok: int, failed: int, expected: int | None) -> dict:
    """The same figures as for_urls' Window, for counts the web sums itself (daily bars)."""
    w = uptime.Window(ok, failed, expected)
    return {"ok": ok, "failed": failed, "expected": expected, "uptime": w.uptime, "coverage": w.coverage}


def _series_bounds(conn, start_of) -> dict:
    """Where rollup_day, rollup_hour and raw rows apply from `start` on (history's watermarks).

    start_of(now) gives the start. Days come from rollup_day before the day watermark, hours
    from rollup_hour before the hour watermark, the rest from raw rows: disjoint, so nothing
    counts twice (like windows.window_bounds, with a start on a day or hour boundary)."""
    with conn.cursor() as cur:
        cur.execute(HISTORY_QUERIES["frontier"])
        hour_until, day_until, now, _, _ = cur.fetchone()
    start = start_of(now)
    hour_to = max(start, min(hour_until or start, windows.floor_time(now, HOUR)))
    day_to = max(start, windows.floor_time(min(day_until or start, hour_to), DAY))
    return {"start": start, "day_to": day_to, "hour_to": hour_to}


def hourly(conn, url_id: int, hours: int = 24) -> list[dict]:
    """The last `hours` UTC hours of one URL, oldest first: ok, failed, p50 and p95 in ms."""
    bounds = _series_bounds(conn, lambda now: windows.floor_time(now, HOUR) - (hours - 1) * HOUR)
    merged: dict = {}
    with conn.cursor() as cur:
        cur.execute(HOURLY_SQL, {"id": url_id, **bounds})
        for bucket, ok, failed, hist, raw_idx in cur.fetchall():
            slot = merged.setdefault(bucket, {"ok": 0, "failed": 0, "hist": []})
            slot["ok"] += int(ok)
            slot["failed"] += int(failed)
            slot["hist"] = histogram.merge(slot["hist"], hist)
            for idx in raw_idx or []:
                slot["hist"] = histogram.merge(slot["hist"], [0] * idx + [1])
    out = []
    for bucket in sorted(merged):
        slot = merged[bucket]
        out.append({"hour": bucket, "ok": slot["ok"], "failed": slot["failed"],
                    "p50_ms": histogram.percentile(slot["hist"], 0.5),
                    "p95_ms": histogram.percentile(slot["hist"], 0.95)})
    return out


def daily(conn, url_id: int, days: int) -> dict:
    """{date: (ok, failed)} for the last `days` UTC days of one URL (days without data absent)."""
    bounds = _series_bounds(conn, lambda now: windows.floor_time(now, DAY) - (days - 1) * DAY)
    merged: dict = defaultdict(lambda: [0, 0])
    with conn.cursor() as cur:
        cur.execute(DAILY_SQL, {"id": url_id, **bounds})
        for bucket, ok, failed in cur.fetchall():
            day = bucket.astimezone(datetime.timezone.utc).date()
            merged[day][0] += int(ok)
            merged[day][1] += int(failed)
    return {day: tuple(v) for day, v in merged.items()}


def checks(conn, url_id: int, limit: int, before=None) -> list[dict]:
    return _rows(conn, CHECKS_SQL, {"id": url_id, "limit": limit, "before": before})


def cert_days_left(conn, url: dict) -> int | None:
    """From the last check, else the newest hourly rollup (the last check may have failed before TLS)."""
    if url.get("last_cert_days_left") is not None:
        return url["last_cert_days_left"]
    if not url["url"].lower().startswith(("https:", "tls:")):   # the kinds with a certificate
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


# The list page's strip of recent slots (sitewatch.web.glance): each URL's results in its last
# `slots` + 1 periods (the newest slot may still be being checked), newest first, for a page of
# URLs in ONE query. Per URL, a backward walk of task_result's primary key (url_id,
# scheduled_at), stopping after `slots` rows: an ordered Append, newest partition first, so older
# partitions are not reached (the empty ones made ahead cost a probe each; an upper bound
# `<= now()` pruned those but made the planner sort every row of the window instead). Never a
# scan of task_result. A URL without results in the window still gives one row (NULLs), so
# every URL has db_now. When task_result gets a `degraded` column, select it here too.
STRIP_SQL = """
SELECT p.id AS url_id, now() AS db_now, r.*
FROM unnest(%(ids)s::bigint[], %(periods)s::integer[]) AS p (id, period)
LEFT JOIN LATERAL (
    SELECT t.scheduled_at, t.ok, t.status_code, t.response_time_ms, t.error_kind, t.error, t.degraded
    FROM task_result t
    WHERE t.url_id = p.id
      AND t.scheduled_at > now() - make_interval(secs => p.period * (%(slots)s + 1)::double precision)
    ORDER BY t.scheduled_at DESC
    LIMIT %(slots)s) r ON true
"""


def recent_results(conn, urls: list[dict], slots: int) -> tuple[dict[int, list[dict]], datetime.datetime | None]:
    """({url_id: its results in the last `slots` periods, oldest first}, the database's now) for
    a page of URLs (dicts with id and period), in one query."""
    out: dict[int, list[dict]] = {u["id"]: [] for u in urls}
    if not urls:
        return out, None
    rows = _rows(conn, STRIP_SQL, {"ids": [u["id"] for u in urls], "periods": [u["period"] for u in urls],
                                   "slots": slots})
    for row in rows:
        if row["scheduled_at"] is not None:
            out[row["url_id"]].append(row)
    for results in out.values():
        results.reverse()
    return out, rows[0]["db_now"]
