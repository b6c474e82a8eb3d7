"""Hourly and daily rollups, computed incrementally behind a watermark.

rollup_watermark.done_until (per level) says: every bucket starting before it
has been computed from complete data. A run computes the buckets between the
watermark and the point where data is complete, writes them and moves the
watermark in ONE transaction: a crash or kill before the commit leaves both as
they were, and the next run does the same work again. Writes overwrite
(INSERT ... ON CONFLICT DO UPDATE SET x = EXCLUDED.x), never add, so computing
a bucket twice is harmless. The maintenance job's advisory lock keeps two
hosts from computing the same buckets at the same time.

"Complete" (queries.sql complete_before): no slot before that instant can
still get a result: older than every outstanding task (held by a consumer, or
in its memory while the database was away) and every URL's next slot, and at
least the grace window in the past. Late results inside that window are
therefore absorbed, not lost to the rollups.
"""

import datetime

from ..db.store import load_queries
from . import histogram
from .pacing import Pace, time_slices, url_chunks

QUERIES = {name: sql.replace("{bucket}", histogram.BUCKET_SQL.format(rt="response_time_ms"))
           for name, sql in load_queries("sitewatch.history", "queries.sql").items()}

HOUR = datetime.timedelta(hours=1)
DAY = datetime.timedelta(days=1)
HOURS_PER_TRANSACTION = 24      # catching up on a long history: one day of hours per commit
DAYS_PER_TRANSACTION = 31
MIN_GRACE_S = 300.0
# URLs per partition of the staging table: a merge of a range of URLs reads whole partitions,
# so they stay small (a fraction of the merge's own work); a cap on their number bounds the
# catalogue churn of creating them every hour at a million URLs.
STAGE_URLS_PER_PARTITION = 2_000
MAX_STAGE_PARTITIONS = 128


def grace_seconds(longest_timeout: float, max_attempts: int, lease_margin: float) -> float:
    """How long to wait for late results: a slot may take max_attempts leases to be recorded.

    Always at least twice the longest timeout (and five minutes).
    """
    return max(MIN_GRACE_S, 2 * longest_timeout, max_attempts * (longest_timeout + lease_margin))


def recompute_hours(cur, start, end, pace: Pace | None = None, down_when: str = "majority",
                    regional: list | None = None) -> tuple[int, int]:
    """Overwrite the hourly rollups of [start, end) from raw rows; returns (written, deleted).

    In short statements (pacing.py): the raw rows a time slice at a time into a staging
    table, then the staged groups into rollup_hour a range of URLs at a time. Once any host
    has had a region, the rows with a region also go, slice by slice, into rollup_region_hour
    (per region, and the URL's slots by the quorum rule with `down_when`, alerts.down_when);
    an install that never had one pays one probe of an empty table for it. `regional`, a list,
    gets whether it had.
    """
    pace = pace or Pace(duty=1.0)
    cur.execute(QUERIES["regions_in_use"])
    regional_now = cur.fetchone()[0]
    if regional is not None:
        regional.append(regional_now)
    if regional_now:
        pace.execute(cur, QUERIES["rollup_region_clear"], {"from": start, "to": end})
    partitions = _create_stage(cur)
    for lo, hi in time_slices(cur, start, end, pace):
        pace.execute(cur, QUERIES["rollup_stage_slice"], {"from": lo, "to": hi})
        if regional_now:
            pace.execute(cur, QUERIES["rollup_region_slice"], {"from": lo, "to": hi, "down_when": down_when})
    for name in partitions:     # the merges' plans (hash or sort, the anti-join) need their sizes
        pace.execute(cur, f"ANALYZE pg_temp.{name}")
    written = deleted = 0
    for lo, hi, _ in url_chunks(cur, pace):
        pace.execute(cur, QUERIES["rollup_hours_merge"], {"from": start, "to": end, "lo": lo, "hi": hi})
        w, d = cur.fetchone()
        written, deleted = written + w, deleted + d
    cur.execute(QUERIES["rollup_stage_drop"])
    return written, deleted


def _create_stage(cur) -> list[str]:
    """The staging table, partitioned by url_id into ranges of about STAGE_URLS_PER_PARTITION
    monitored URLs (the first and last open-ended, so removed URLs' ids fall in one too);
    returns the partitions' names."""
    cur.execute(QUERIES["rollup_stage_create"])
    cur.execute("SELECT count(*) FROM url")
    count = cur.fetchone()[0]
    parts = max(1, min(MAX_STAGE_PARTITIONS, -(-count // STAGE_URLS_PER_PARTITION)))
    bounds = []
    if parts > 1:
        # The ids at the quantiles: partitions of about equal numbers of URLs, however sparse the ids.
        cur.execute("SELECT percentile_disc(%s::float8[]) WITHIN GROUP (ORDER BY id) FROM url",
                    ([i / parts for i in range(1, parts)],))
        bounds = sorted(set(cur.fetchone()[0]))
    edges = ["MINVALUE", *map(str, bounds), "MAXVALUE"]
    names = []
    for i, (lo, hi) in enumerate(zip(edges, edges[1:], strict=False)):
        names.append(f"rollup_stage_{i}")
        cur.execute(f"CREATE TEMP TABLE rollup_stage_{i} PARTITION OF rollup_stage FOR VALUES FROM ({lo}) TO ({hi})")
    return names


def recompute_days(cur, start, end, pace: Pace | None = None, regional: list | None = None) -> tuple[int, int]:
    """Overwrite the daily rollups of [start, end) from the hourly ones, a range of URLs at a
    time; returns (written, deleted) of rollup_day.

    Once any host has had a region, the same ranges' rollup_region_day too, from
    rollup_region_hour (an install that never had one pays one probe of an empty table per
    call, as recompute_hours). `regional`, a list, gets whether it had.
    """
    pace = pace or Pace(duty=1.0)
    cur.execute(QUERIES["regions_in_use"])
    regional_now = cur.fetchone()[0]
    if regional is not None:
        regional.append(regional_now)
    written = deleted = 0
    for lo, hi, _ in url_chunks(cur, pace):
        pace.execute(cur, QUERIES["rollup_days"], {"from": start, "to": end, "lo": lo, "hi": hi})
        w, d = cur.fetchone()
        written, deleted = written + w, deleted + d
        if regional_now:
            pace.execute(cur, QUERIES["rollup_region_days"], {"from": start, "to": end, "lo": lo, "hi": hi})
    return written, deleted


def watermark(cur, level: str):
    cur.execute("SELECT done_until FROM rollup_watermark WHERE level = %s", (level,))
    row = cur.fetchone()
    return row[0] if row else None


def _advance(cur, level: str, until) -> None:
    # Forward only, whatever happens: a stale run can never move it back.
    cur.execute("UPDATE rollup_watermark SET done_until = %s, updated_at = now()"
                " WHERE level = %s AND (done_until IS NULL OR done_until < %s)", (until, level, until))


def catch_up_hours(conn, grace_s: float, heartbeat=lambda: None, pace: Pace | None = None,
                   down_when: str = "majority") -> dict:
    """Compute every complete hour after the watermark; returns {"hours": n, "rows": n, "until": ts,
    "regional": whether rollup_region_hour was written (expire() then has some to expire)}.

    The caller holds the maintenance lock. The completeness bound is read in a REPEATABLE
    READ snapshot; the raw rows it vouches for no longer change, so each statement of the
    rollup commits on its own.
    """
    pace = pace or Pace(duty=1.0)
    hours = rows = 0
    until = None
    regional: list[bool] = []
    while True:
        heartbeat()
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur.execute(QUERIES["complete_before"], {"grace_s": grace_s})
            complete = cur.fetchone()[0]
            cur.execute("SELECT date_trunc('hour', %s::timestamptz, 'UTC')", (complete,))
            target = cur.fetchone()[0]
            start = watermark(cur, "hour")
            if start is None:
                cur.execute(QUERIES["oldest_result"])
                oldest = cur.fetchone()[0]
                if oldest is None:
                    _advance(cur, "hour", target)     # nothing recorded yet: nothing to roll up
                    conn.commit()
                    return {"hours": hours, "rows": rows, "until": target, "regional": any(regional)}
                cur.execute("SELECT date_trunc('hour', %s::timestamptz, 'UTC')", (oldest,))
                start = cur.fetchone()[0]
            until = start
            if target <= start:
                _advance(cur, "hour", min(start, target))   # remember where to start: scan for it once
                conn.commit()
                return {"hours": hours, "rows": rows, "until": until, "regional": any(regional)}
            end = min(target, start + HOURS_PER_TRANSACTION * HOUR)
            # [start, end) is complete in this snapshot: no result can still land in it, so the
            # statements that roll it up need not share the snapshot, and each commits before
            # its rest (pacing.py). Readers take rollup_hour only before the watermark, which
            # moves last: until then they read these hours from raw rows, as before.
            with pace.committing(conn):
                written, _ = recompute_hours(cur, start, end, pace, down_when, regional)
            _advance(cur, "hour", end)
        conn.commit()
        hours += int((end - start) / HOUR)
        rows += written
        until = end


def catch_up_days(conn, heartbeat=lambda: None, pace: Pace | None = None) -> dict:
    """Compute every day whose hours are all final; returns {"days": n, "rows": n, "until": ts,
    "regional": whether rollup_region_day was written (expire() then has some to expire)}."""
    pace = pace or Pace(duty=1.0)
    days = rows = 0
    regional: list[bool] = []
    while True:
        heartbeat()
        with conn.cursor() as cur:
            hours_until = watermark(cur, "hour")
            if hours_until is None:
                conn.commit()
                return {"days": days, "rows": rows, "until": None, "regional": any(regional)}
            cur.execute("SELECT date_trunc('day', %s::timestamptz, 'UTC')", (hours_until,))
            target = cur.fetchone()[0]
            start = watermark(cur, "day")
            if start is None:
                cur.execute("SELECT date_trunc('day', min(bucket), 'UTC') FROM rollup_hour")
                start = cur.fetchone()[0] or target
            if target <= start:
                _advance(cur, "day", start)
                conn.commit()
                return {"days": days, "rows": rows, "until": start, "regional": any(regional)}
            end = min(target, start + DAYS_PER_TRANSACTION * DAY)
            with pace.committing(conn):     # the day rollups are read only before their watermark
                written, _ = recompute_days(cur, start, end, pace, regional)
            _advance(cur, "day", end)
        conn.commit()
        days += (end - start).days
        rows += written


def expire(conn, hourly_days: int, daily_days: int, batch: int = 50_000, regions: bool = True) -> dict:
    """Delete rollups past their retention (hourly ones only once their day is rolled up).

    In batches, each its own transaction, so no long lock and no huge transaction.
    regions=False leaves rollup_region_hour and rollup_region_day alone: the job passes
    whether its run wrote any (an install without regions has none: no statement for them).
    """
    deleted = {"rollup_hour": 0, "rollup_day": 0, "rollup_region_hour": 0, "rollup_region_day": 0}
    with conn.cursor() as cur:
        cur.execute("SELECT least(date_trunc('day', now(), 'UTC') - make_interval(days => %s),"
                    " (SELECT done_until FROM rollup_watermark WHERE level = 'day')),"
                    " date_trunc('day', now(), 'UTC') - make_interval(days => %s)", (hourly_days, daily_days))
        cutoffs = dict(zip(("rollup_hour", "rollup_day"), cur.fetchone(), strict=True))
        # the region rollups are kept as long as the URLs' of their level (hours only once
        # their day is rolled up: rollup_region_day is written with rollup_day)
        cutoffs["rollup_region_hour"] = cutoffs["rollup_hour"] if regions else None
        cutoffs["rollup_region_day"] = cutoffs["rollup_day"] if regions else None
    conn.commit()
    for table, cutoff in cutoffs.items():
        if cutoff is None:
            continue
        while True:
            with conn.cursor() as cur:
                cur.execute(f"DELETE FROM {table} WHERE ctid = ANY (ARRAY("
                            f"SELECT ctid FROM {table} WHERE bucket < %s LIMIT %s))", (cutoff, batch))
                count = cur.rowcount
            conn.commit()
            deleted[table] += count
            if count < batch:
                break
    return deleted
