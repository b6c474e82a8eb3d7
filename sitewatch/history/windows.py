"""Uptime windows: where each source of counts (daily rollups, hourly rollups, raw rows)
applies for a window ending now, the SQL that sums them, and whole-unit UTC time arithmetic.
Used by uptime.py (figures computed directly) and summary.py (the job's summary).
"""

import datetime

from .rollup import QUERIES

HOUR = datetime.timedelta(hours=1)
DAY = datetime.timedelta(days=1)
WINDOWS = {"24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY, "90d": 90 * DAY, "365d": 365 * DAY}
LONG_WINDOW = 30 * DAY      # longer windows start on a whole UTC day (window_bounds)


def window_bounds(now, name: str, hour_until, day_until) -> dict:
    """Where each source applies for one window (see window_counts in queries.sql).

    A window starts at the first whole UTC hour inside it; a long one (LONG_WINDOW: 90d, 365d)
    at the first whole UTC day, so that it never reads hourly rollups past retention
    (history.hourly_days, 90 by default: the first partial day of a 365-day window is long
    expired, and its hours would count as expected slots without results).
    """
    length = WINDOWS[name]
    start = ceil_time(now - length, DAY if length > LONG_WINDOW else HOUR)
    hour_to = hour_until or start                      # nothing rolled up yet: all raw
    hour_to = max(start, min(hour_to, floor_time(now, HOUR)))
    day_from = ceil_time(start, DAY)
    day_to = min(day_until or day_from, hour_to)
    day_to = max(day_from, floor_time(day_to, DAY))
    return {"start": start, "day_from": day_from, "day_to": day_to, "hour_to": hour_to}


def window_counts_sql(bounds: list[dict]) -> tuple[str, dict]:
    """queries.sql window_counts with one pair of FILTERed sums per window and source."""
    params, day_sums, hour_sums, raw_sums, hour_ranges, totals = {}, [], [], [], [], []
    for k, b in enumerate(bounds):
        for key, value in b.items():
            params[f"w{k}_{key}"] = value
        in_days = f"bucket >= %(w{k}_day_from)s AND bucket < %(w{k}_day_to)s"
        in_hours = (f"bucket >= %(w{k}_start)s AND bucket < %(w{k}_hour_to)s"
                    f" AND NOT (bucket >= %(w{k}_day_from)s AND bucket < %(w{k}_day_to)s)")
        in_raw = f"scheduled_at >= greatest(%(w{k}_start)s, %(w{k}_hour_to)s)"
        # The first branch of the UNION names the columns for the outer sums.
        day_sums.append(f"sum(ok) FILTER (WHERE {in_days}) AS ok{k}, sum(failed) FILTER (WHERE {in_days}) AS failed{k}")
        hour_sums.append(f"sum(ok) FILTER (WHERE {in_hours}), sum(failed) FILTER (WHERE {in_hours})")
        # A lost slot is the monitor's failure, not the site's: neither ok nor failed (as in the rollups).
        # outside_maintenance: maintenance windows' slots count neither way (migration 0014)
        counted = f"{in_raw} AND outside_maintenance(ranges, scheduled_at)"
        raw_sums.append(f"count(*) FILTER (WHERE ok AND {counted}), "
                        f"count(*) FILTER (WHERE NOT ok AND error_kind IS DISTINCT FROM 'lost' AND {counted})")
        hour_ranges.append(f"({in_hours})")
        # bigint, not the numeric of sum(bigint): psycopg2 makes Decimals of those, slowly
        totals.append(f"coalesce(sum(ok{k}), 0)::bigint, coalesce(sum(failed{k}), 0)::bigint")
    params["day_min"] = min(b["day_from"] for b in bounds)
    params["day_max"] = max(b["day_to"] for b in bounds)
    params["raw_from"] = min(b["hour_to"] for b in bounds)
    sql = QUERIES["window_counts"].format(
        totals=", ".join(totals), day_sums=", ".join(day_sums), hour_sums=", ".join(hour_sums),
        raw_sums=", ".join(raw_sums), hour_ranges=" OR ".join(hour_ranges))
    return sql, params


def cells_to_histograms(cells) -> dict[int, list[int]]:
    """{url_id: histogram} from (url_id, bucket index, count) cells."""
    hists: dict[int, list[int]] = {}
    for url_id, index, count in cells:
        hist = hists.setdefault(url_id, [])
        if index >= len(hist):
            hist.extend([0] * (index + 1 - len(hist)))
        hist[index] += count
    return hists


def floor_time(t: datetime.datetime, unit: datetime.timedelta) -> datetime.datetime:
    utc = t.astimezone(datetime.timezone.utc)
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    return epoch + ((utc - epoch) // unit) * unit


def ceil_time(t: datetime.datetime, unit: datetime.timedelta) -> datetime.datetime:
    floor = floor_time(t, unit)
    return floor if floor == t else floor + unit
