"""Uptime and response-time percentiles for many URLs at once: the API that the web page,
`sitewatch status` and metrics use.

    from sitewatch.history import uptime
    figures = uptime.for_urls(conn, [url_id, ...])          # one call for a whole page
    f = figures[url_id]
    f.windows["30d"].uptime      # 0.99997 (a fraction, truncated), or None when no data
    f.windows["30d"].coverage    # results / expected slots, 0..1, or None
    f.p95_ms_24h                 # 95th percentile response time over 24 h (ms), or None
    uptime.format_percent(f.windows["30d"].uptime)   # "99.997%", or "-" for None

Rules (README "Uptime"):
* uptime = ok / (ok + failed) over the window. Slots with no result (not checked: the
  monitor was down, slots skipped, the URL added later) count neither way; they lower the
  coverage instead.
* No result at all in the window gives None: neither 0% nor 100%.
* Truncated, never rounded up, to UPTIME_DIGITS decimals of the fraction (0.001 %):
  1 failure in 43,200 checks is 0.99997 (99.997%), not 1.0. Only no failure at all is 1.0.
* coverage = (ok + failed) / expected slots, where expected = whole periods of the URL's
  current period between the later of the window start and the URL's creation, and now
  (capped at 1.0; None for a URL no longer monitored).
* Windows (WINDOWS): 24h, 7d, 30d, 90d, 365d, ending now and starting at the first whole
  UTC hour inside the window (90d and 365d: the first whole UTC day, as hourly rollups
  are kept only history.hourly_days). Data comes from rollup_day for whole days, rollup_hour for
  the other whole hours, and raw task_result rows after the hourly watermark (the current
  hour, and any hour the job has not finalised yet): three disjoint parts, so nothing
  counts twice, and the figures include results written seconds ago.

Cost: two or three queries for any number of URLs (window_counts; window_histogram for
p95; url_periods), each driven by the (url_id, ...) primary keys: a page of 100 URLs
reads about 100 x (365 day rows + ~48 hour rows + the current hour's raw rows). For the
24h, 7d and 30d windows the maintenance job's summary (history/summary.py) replaces the
rollups and most raw rows: one summary row per URL plus the last few minutes of raw rows.
"""

import dataclasses
import datetime
from collections.abc import Sequence

from . import histogram
from .rollup import QUERIES
from .windows import WINDOWS, cells_to_histograms, window_bounds, window_counts_sql

UPTIME_DIGITS = 5
_SCALE = 10 ** UPTIME_DIGITS
_NO_HISTOGRAM = (0, ())


@dataclasses.dataclass(slots=True)      # not frozen: a frozen __init__ is 3x slower (x 300,000)
class Window:
    ok: int
    failed: int
    expected: int | None      # slots the URL should have had in the window (None: URL removed)

    @property
    def results(self) -> int:
        return self.ok + self.failed

    @property
    def uptime(self) -> float | None:
        return truncated_ratio(self.ok, self.results)

    @property
    def coverage(self) -> float | None:
        return _coverage(self.results, self.expected)


@dataclasses.dataclass
class Figures:
    url_id: int
    windows: dict[str, Window]
    p95_ms_24h: float | None = None
    hist_24h: list[int] = dataclasses.field(default_factory=list)


def truncated_ratio(part: int, whole: int) -> float | None:
    """part / whole truncated to UPTIME_DIGITS decimals (integer arithmetic: never rounds up)."""
    if whole <= 0:
        return None
    return (part * _SCALE // whole) / _SCALE


def format_percent(fraction: float | None) -> str:
    """0.99997 -> '99.997%'; None -> '-'. The fraction is already truncated; this only formats."""
    if fraction is None:
        return "-"
    units = round(fraction * _SCALE)       # exact: the fraction has UPTIME_DIGITS decimals
    whole, rest = divmod(units, _SCALE // 100)
    return f"{whole}.{rest:0{UPTIME_DIGITS - 2}d}%"


@dataclasses.dataclass(slots=True)
class Counts:
    """What read_counts found for a set of URLs, before the uptime rules apply."""
    now: datetime.datetime
    names: list[str]                    # the windows, in the order of each URL's counts
    starts: list[float]                 # each window's start (epoch seconds)
    counts: dict[int, Sequence[int]]    # url_id: ok, failed of each window in turn
    hists: dict[int, tuple[int, list[int]]]   # url_id: (offset, the 24 h latency histogram from bucket offset on)

    def plain_rows(self, urls):
        """For each (url_id, period, created_at epoch) of `urls`: (uptime of each window...,
        coverage of the first window, p95 over 24 h). The figures of for_urls as plain values
        for `sitewatch status` and its 100,000 URLs: one loop, the rules inline (the same as
        truncated_ratio, _expected and _coverage), no object per window. (While the summary
        is current, status computes the same in SQL: queries.sql status_lines.)"""
        now, first, scale = self.now.timestamp(), self.starts[0], _SCALE
        counts, hists, percentile = self.counts.get, self.hists.get, histogram.percentile
        nothing = (0,) * (2 * len(self.starts))
        for url_id, period, created_at in urls:
            values = counts(url_id, nothing)
            row = [(ok * scale // (ok + failed)) / scale if ok + failed > 0 else None
                   for ok, failed in zip(values[0::2], values[1::2], strict=True)]
            expected = int((now - (first if first > created_at else created_at)) // period) if period else 0
            results = values[0] + values[1]
            row.append((results / expected if results < expected else 1.0) if expected > 0 else None)
            offset, hist = hists(url_id, _NO_HISTOGRAM)
            row.append(percentile(hist, 0.95, offset))
            yield row


def read_counts(conn, url_ids, windows=tuple(WINDOWS), p95: bool = True, all_urls: bool = False,
                use_summary: bool = True) -> Counts:
    """ok and failed per window (and the 24 h histogram) of the URLs given, or of every URL
    with all_urls=True (the queries then read whole ranges instead of probing a list of ids).

    The counts of all windows come from one statement, so one snapshot: a rollup committed
    meanwhile can never count a result twice or not at all. For the windows the maintenance
    job's summary keeps (24h, 7d, 30d) they come from it plus the last raw rows
    (history/summary.py): the same counts, far fewer rows read. use_summary=False computes
    them from the rollups directly (tests compare the two). Leaves the transaction open.
    """
    from . import summary
    ids = [] if all_urls else sorted(set(int(i) for i in url_ids))
    with conn.cursor() as cur:
        cur.execute(QUERIES["frontier"])
        hour_until, day_until, now, anchor, until = cur.fetchone()
        bounds = {name: window_bounds(now, name, hour_until, day_until) for name in windows}
        if use_summary and summary.usable(anchor, hour_until, now, windows):
            counts, hists = summary.read(cur, bounds, anchor, until, ids, all_urls)
        else:
            sql, params = window_counts_sql(list(bounds.values()))
            params.update({"ids": ids, "all": all_urls, "raw_until": "infinity"})
            cur.execute(sql, params)
            counts = {url_id: values for url_id, *values in cur.fetchall()}
            hists = {}
            if p95:
                b = bounds["24h"] if "24h" in bounds else window_bounds(now, "24h", hour_until, day_until)
                cur.execute(QUERIES["window_histogram"], {"ids": ids, "all": all_urls, "start": b["start"],
                                                          "hour_to": b["hour_to"], "raw_until": "infinity"})
                hists = {url_id: (0, hist) for url_id, hist in cells_to_histograms(cur.fetchall()).items()}
    return Counts(now, list(bounds), [b["start"].timestamp() for b in bounds.values()], counts, hists)


def read_periods(conn, url_ids, all_urls: bool = False) -> dict[int, tuple[int, float]]:
    """{url_id: (period, created_at epoch)} of the URLs given that are still monitored."""
    with conn.cursor() as cur:
        cur.execute(QUERIES["url_periods"], {"ids": [] if all_urls else list(url_ids), "all": all_urls})
        return {url_id: (period, created_at) for url_id, period, created_at in cur.fetchall()}


def for_urls(conn, url_ids, windows=tuple(WINDOWS), p95: bool = True, all_urls: bool = False,
             use_summary: bool = True) -> dict[int, Figures]:
    """Uptime, coverage (and p95 over 24 h) per window for every URL id given.

    Every id gets a Figures, with None figures where there is no data. Read-only; `conn`
    may be in any transaction mode. all_urls=True says url_ids are every monitored URL
    (faster for 100,000 of them). The counts come from read_counts (which says how).
    """
    ids = sorted(set(int(i) for i in url_ids))
    if not ids:
        return {}
    read = read_counts(conn, ids, windows, p95, all_urls, use_summary)
    periods = read_periods(conn, ids, all_urls)
    if not conn.autocommit:
        conn.rollback()      # read-only: end the snapshot
    out = {}
    now_s = read.now.timestamp()
    nothing = (0,) * (2 * len(read.names))
    for url_id in ids:
        values = read.counts.get(url_id, nothing)     # ok, failed of each window in turn
        period_created = periods.get(url_id)
        figures = {name: Window(values[2 * k], values[2 * k + 1], _expected(period_created, read.starts[k], now_s))
                   for k, name in enumerate(read.names)}
        offset, hist = read.hists.get(url_id, _NO_HISTOGRAM)
        out[url_id] = Figures(url_id, figures, histogram.percentile(hist, 0.95, offset),
                              [0] * offset + list(hist) if hist else [])
    return out


def _coverage(results: int, expected: int | None) -> float | None:
    """results / expected slots, capped at 1.0; None when no slot was expected (or the URL is gone)."""
    if not expected:
        return None
    return min(1.0, results / expected)


def _expected(period_created, start: float, now: float) -> int | None:
    """Whole periods between the later of `start` and the URL's creation, and `now` (epoch seconds)."""
    if period_created is None:
        return None
    period, created_at = period_created
    return max(0, int((now - max(start, created_at)) // period))
