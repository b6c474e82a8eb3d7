"""The per-URL uptime summary: what makes `sitewatch status` and the web page fast at 100,000 URLs.

Computing 24 h / 7 d / 30 d uptime and the 24 h p95 of every URL from the rollups reads a
month of daily rows, a day of hourly histograms and up to an hour of raw rows per URL: at
100,000 URLs that is tens of seconds. The maintenance job keeps, per URL, those counts and
the 24 h histogram, cumulative (table uptime_summary, migrations 0004 and 0005), so that a
reader adds only the raw rows of the last few minutes (`status` computes its lines from it
in SQL: queries.sql status_lines).

The summary is anchored at the hourly watermark A it was built at: each window W covers
[A - W + 1 h, until), which is exactly the rolled-up part plus the first raw rows of the
window as it stands while the clock is in the hour after A. Readers add the raw rows from
`until` on. While the watermark lags the clock (the first minutes of every hour, until the
job rolls up the hour that ended) the windows have moved on by whole hours: readers subtract
those hours' rollup_hour rows. So the figures are always exactly those of
uptime.for_urls's direct computation over the same data.

The job (refresh, every history.interval):
* when the hourly watermark moved: build again from the rollups (one big statement an hour,
  overwriting every row: self-healing, nothing accumulates);
* otherwise: add the raw rows that became complete since `until` (the rollups'
  completeness bound with a shorter margin, GRACE_S), once at least ADD_EVERY of them has
  (every other run at the default interval of 60 s).
"""

import datetime
import itertools

from psycopg2.extras import execute_values

from . import windows
from .pacing import Pace, url_chunks
from .rollup import QUERIES, watermark

HOUR = datetime.timedelta(hours=1)
WINDOWS = ("24h", "7d", "30d")         # the windows uptime_summary has columns for
MAX_LAG = 6 * HOUR                     # a summary older than this is not used (the job is down)
# How far behind the clock the job adds raw rows. The rollups wait out a grace window of at
# least 5 minutes on top of the completeness bound (history/rollup.py); the summary needs
# only the bound itself (no outstanding task and no URL's next slot before it, both read in
# the job's snapshot; results and tasks change in one statement: nothing before it can
# still get a result) plus a small margin, so that readers add a minute or two of raw rows
# rather than five. The margin covers the one way a slot can still land behind the bound: a
# URL added or re-slotted by a transaction that commits seconds after it took its time.
# Should a result still come later, the next hourly build (from the rollups) counts it.
GRACE_S = 10.0
# Each addition rewrites every URL's summary row (1.2-2 s of CPU at 100,000 URLs, most of
# the job's time, whether it adds one minute of rows or two): the job adds once this much
# has become complete, every other run at the default interval of 60 s, which halves that
# cost. Readers then add about 130 s of raw rows at most (GRACE_S and two runs: up to 3 per
# URL at a 60 s period; against 120 s when the job added every run with a 60 s margin); in
# general up to about GRACE_S + ADD_EVERY + history.interval, and more while an old
# outstanding task holds the bound back.
ADD_EVERY = datetime.timedelta(seconds=90)
_TINY = datetime.timedelta(microseconds=1)


def refresh(conn, grace_s: float = GRACE_S, add_every: datetime.timedelta = ADD_EVERY,
            pace: Pace | None = None) -> dict:
    """Bring the summary up to date (the caller holds the maintenance lock), in short
    statements (pacing.py). Commits.
    'current': nothing to do yet (less than `add_every` of rows complete since `until`)."""
    pace = pace or Pace(duty=1.0)
    with conn.cursor() as cur:
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        anchor = watermark(cur, "hour")
        if anchor is None:
            conn.commit()
            return {"summary": "none"}
        cur.execute(QUERIES["complete_before"], {"grace_s": grace_s})
        until = max(anchor, cur.fetchone()[0])
        cur.execute(QUERIES["summary_state"])
        state = cur.fetchone()
        if state is not None and state[0] == anchor:
            if until <= state[1] or until - state[1] < add_every:
                conn.commit()
                return {"summary": "current"}
            rows = 0
            for lo, hi, _ in url_chunks(cur, pace, first=10_000):
                pace.execute(cur, QUERIES["summary_add"], {"from": state[1], "to": until, "lo": lo, "hi": hi})
                rows += cur.rowcount
            cur.execute(QUERIES["summary_set_state"], {"anchor": anchor, "until": until})
            conn.commit()
            return {"summary": "added", "summary_rows": rows}
        rows = _build(conn, cur, anchor, until, watermark(cur, "day"), pace)
        cur.execute(QUERIES["summary_set_state"], {"anchor": anchor, "until": until})
    conn.commit()
    return {"summary": "built", "summary_rows": rows}


def vacuum(conn) -> None:
    """VACUUM and ANALYZE the summary (`conn` in autocommit). Every build and addition
    rewrites every row of it, and readers scan all of it: vacuumed at once, the table stays
    near its live size whatever autovacuum's settings (with autovacuum off, 100,000 URLs
    left 680,000 dead rows, 164 MB, after a few runs); analysed at once, the readers' plans
    know its size from the first build on."""
    with conn.cursor() as cur:
        cur.execute("VACUUM (ANALYZE) uptime_summary")


def _build(conn, cur, anchor, until, day_until, pace: Pace) -> int:
    """Overwrite every summary row from the rollups before `anchor` and raw rows up to
    `until`. The rows are computed a chunk of URLs at a time into a staging table, each chunk
    committed before the pace's rest (what they read no longer changes: rollups before the
    watermark, raw rows before the completeness bound); then one short transaction, with no
    rest, replaces the summary: readers see the old rows or the new ones, never a mix."""
    bounds = [windows.window_bounds(anchor + _TINY, name, anchor, day_until) for name in WINDOWS]
    sql, params = windows.window_counts_sql(bounds)
    cur.execute(QUERIES["summary_stage_create"])
    written = 0
    with pace.committing(conn):
        for _, _, ids in url_chunks(cur, pace):
            if ids:
                written += pace.call(_build_chunk, cur, sql, params, ids, bounds[0]["start"], anchor, until)
    cur.execute(QUERIES["summary_stage_swap"])
    return written


def _build_chunk(cur, sql, params, ids, start, anchor, until) -> int:
    """The summary rows of URLs `ids`; returns how many were written."""
    cur.execute(sql, {**params, "ids": ids, "all": False, "raw_until": until})
    rows = {url_id: [int(v) for v in values] for url_id, *values in cur.fetchall()}
    cur.execute(QUERIES["window_histogram"], {"ids": ids, "all": False, "start": start,
                                              "hour_to": anchor, "raw_until": until})
    hists = windows.cells_to_histograms(cur.fetchall())
    execute_values(cur, "INSERT INTO pg_temp.summary_stage (url_id, ok_24h, failed_24h, ok_7d, failed_7d, ok_30d,"
                        " failed_30d, hist_from, cum_24h) VALUES %s",
                   ((url_id, *values, *_cumulative(hists.get(url_id, []))) for url_id, values in rows.items()),
                   template="(%s, %s, %s, %s, %s, %s, %s, %s, %s::integer[])", page_size=5000)
    return len(rows)


def _cumulative(hist: list[int]) -> tuple[int, list[int]]:
    """(index of the first non-empty bucket, the running counts from there on): cum_24h."""
    first = next((i for i, c in enumerate(hist) if c), len(hist))
    return (first, list(itertools.accumulate(hist[first:]))) if first < len(hist) else (0, [])


def _differences(cum: list[int]) -> list[int]:
    """The histogram of a cumulative one (its trailing empty buckets left out)."""
    hist = [b - a for a, b in zip([0, *cum], cum, strict=False)]     # the last total pairs with nothing
    while hist and hist[-1] == 0:
        hist.pop()
    return hist


def _lag(anchor, now) -> datetime.timedelta:
    """How far the windows have moved on since the summary was built at `anchor` (whole
    hours, the same for every window)."""
    return windows.ceil_time(now - windows.DAY, HOUR) - (anchor - windows.DAY + HOUR)


def usable(anchor, hour_until, now, windows) -> bool:
    """Whether readers may use the summary built at `anchor` for these windows now."""
    if anchor is None or anchor != hour_until or not set(windows) <= set(WINDOWS):
        return False
    return datetime.timedelta(0) <= _lag(anchor, now) <= MAX_LAG


def current(anchor, hour_until, now) -> bool:
    """usable(), and the windows have not moved on since the summary was built: its counts
    need no lag subtracted."""
    return usable(anchor, hour_until, now, WINDOWS) and _lag(anchor, now) == datetime.timedelta(0)


_COLUMNS = {"24h": (1, 2), "7d": (3, 4), "30d": (5, 6)}    # each window's ok and failed in summary_read


def read(cur, bounds: dict, anchor, until, ids, all_urls: bool) -> tuple[dict, dict]:
    """({url_id: (ok, failed) of each window of `bounds` in turn},
        {url_id: (offset, 24 h histogram from bucket `offset` on)}).

    Plain loops: `status` runs them for 100,000 URLs.
    """
    params = {"ids": [] if all_urls else ids, "all": all_urls}
    # `until` as the frontier query read it: summary_read says why it is passed along.
    cur.execute(QUERIES["summary_read"], {**params, "until_hint": until})
    names = list(bounds)
    columns = None if names == list(WINDOWS) else [i for name in names for i in _COLUMNS[name]]
    counts, hists = {}, {}
    for row in cur.fetchall():
        url_id, offset, hist, buckets = row[0], row[7], _differences(row[8] or ()), row[9]
        counts[url_id] = row[1:7] if columns is None else [row[i] for i in columns]
        if buckets:       # the raw rows' response times
            if not hist:
                offset = min(buckets)
            elif min(buckets) < offset:
                hist[:0] = [0] * (offset - min(buckets))
                offset = min(buckets)
            for index in buckets:
                if index - offset >= len(hist):
                    hist.extend([0] * (index - offset + 1 - len(hist)))
                hist[index - offset] += 1
        hists[url_id] = (offset, hist)
    lagging = [(k, name) for k, name in enumerate(bounds)
               if bounds[name]["start"] > anchor - windows.WINDOWS[name] + HOUR]
    for k, name in lagging:
        _subtract_lag(cur, params, anchor, k, name, bounds[name]["start"], counts, hists)
    return counts, hists


def _subtract_lag(cur, params, anchor, k: int, name: str, start, counts: dict, hists: dict) -> None:
    """The hours that left window `name` since the summary was built (the watermark lags)."""
    cur.execute(QUERIES["summary_lag_counts"], {**params, "anchor": anchor, "length": windows.WINDOWS[name],
                                                "start": start})
    for url_id, ok, failed in cur.fetchall():
        if url_id in counts:
            values = list(counts[url_id])
            values[2 * k] -= ok
            values[2 * k + 1] -= failed
            counts[url_id] = values
    if name != "24h":
        return
    cur.execute(QUERIES["summary_lag_histograms"], {**params, "anchor": anchor, "start": start})
    for url_id, array in cur.fetchall():
        offset, hist = hists.get(url_id, (0, None))
        if not hist:
            continue
        # Every non-empty bucket of those hours is in the summary's histogram (it counted them).
        for i, c in enumerate(array[offset:offset + len(hist)]):
            hist[i] -= c
        while hist and hist[-1] == 0:      # as the direct computation gives them
            hist.pop()
