"""Uptime of URLs with regions (DESIGN.md section 12, Regions): per region, and the URL's own by
the quorum rule per slot.

    found = regionuptime.for_urls(conn, [url_id, ...], "majority")   # alerts.down_when
    found[url_id]["eu"]["24h"].uptime      # region eu's uptime over 24 h (uptime.Window)
    found[url_id][""]["30d"].uptime        # the URL's: each slot once, by its down_when

A URL with regions has one result per slot and region. Its own figure counts each slot once:
failed when at least down_when of the regions that reported for that slot failed (regions
whose result is `lost` report nothing; a slot no region reported counts neither way), else
up. Each region's figure counts its own results by the rules of uptime.py. Whole UTC days
come from rollup_region_day (migration 0019), the other whole hours from rollup_region_hour
(migration 0017), the rest from raw rows, bounded as uptime.py bounds a URL's (windows.py
window_bounds): one statement (queries.sql region_window_counts) for any number of URLs;
URLs without regions are left out (an install without regions reads no row).

Windows: 24h, 7d and 30d (uptime.py's, starting at the first whole UTC hour inside the
window), the ones `status` shows. The daily region rollups are kept history.daily_days, the
hourly ones history.hourly_days: a 30d window needs hours 30 days back only for its first
partial day (as a URL's own 30d figure does).
"""

import datetime

from .rollup import QUERIES
from .uptime import Window
from .windows import window_bounds

WINDOWS = ("24h", "7d", "30d")
QUORUM = ""      # the key of the URL's own figures, by the quorum rule


def for_urls(conn, ids: list[int] | None, down_when: str,
             now: datetime.datetime | None = None) -> dict[int, dict[str, dict[str, Window]]]:
    """{url_id: {region or QUORUM: {window: Window}}} of the URLs with regions among `ids` (None:
    all). `down_when` is alerts.down_when (for URLs without their own). A region with no
    result in 30 days has no entry. Window.expected is None: coverage is not computed here."""
    with conn.cursor() as cur:
        # one cheap statement for URLs without regions (the web asks for every page)
        cur.execute("SELECT (SELECT done_until FROM rollup_watermark WHERE level = 'hour'),"
                    " (SELECT done_until FROM rollup_watermark WHERE level = 'day'), now(),"
                    " EXISTS (SELECT 1 FROM url WHERE cardinality(regions) > 0 AND (%(all)s OR id = ANY (%(ids)s)))",
                    {"ids": ids or [], "all": ids is None})
        hour_until, day_until, db_now, any_regions = cur.fetchone()
        if not any_regions:
            if not conn.autocommit:
                conn.rollback()
            return {}
        cur.execute(QUERIES["region_window_counts"],
                    counts_params(ids, down_when, now or db_now, hour_until, day_until))
        rows = cur.fetchall()
    if not conn.autocommit:
        conn.rollback()
    found: dict[int, dict[str, dict[str, Window]]] = {}
    for url_id, region, *counts in rows:
        found.setdefault(url_id, {})[region] = {
            name: Window(counts[2 * k], counts[2 * k + 1], None) for k, name in enumerate(WINDOWS)}
    return found


def counts_params(ids: list[int] | None, down_when: str, now, hour_until, day_until) -> dict:
    """queries.sql region_window_counts's parameters: each window's bounds (windows.py)."""
    bounds = {name: window_bounds(now, name, hour_until, day_until) for name in WINDOWS}
    return {"ids": ids or [], "all": ids is None, "down_when": down_when,
            **{f"{key}_{name}": value for name, b in bounds.items() for key, value in b.items()},
            "day_min": min(b["day_from"] for b in bounds.values()),
            "day_max": max(b["day_to"] for b in bounds.values()),
            "raw_from": min(b["hour_to"] for b in bounds.values())}


def uptimes(figures: dict[str, Window] | None) -> dict[str, float | None]:
    """{'uptime_24h': .., 'uptime_7d': .., 'uptime_30d': ..} of one region's (or the URL's)
    figures; None where there is no data (as uptime.py)."""
    return {f"uptime_{name}": figures[name].uptime if figures else None for name in WINDOWS}
