"""Prometheus metrics, the children's side: what they count, and the names and buckets.

The supervisor's side, which folds the counts into one registry, is registry.py; this
module imports no prometheus_client, so a child pays nothing for it.

Children already send a stats dict to the supervisor every few seconds over their own
pipe (run/child.py send_stats). They add the counts below to it, as deltas since their
last message; the supervisor adds each delta to totals it owns. So a counter never goes
backwards when a child dies or restarts (its next life starts sending deltas from zero),
there are no per-pid files to clean up (prometheus_client's multiprocess directory mode,
client_python issue 367), and the supervisor's own process metrics stay available.

A stats message must fit in one atomic pipe write (PIPE_BUF, 4 KiB on Linux), so
histograms travel as fixed-length lists of per-bucket counts, not as observations, and
every label value comes from a small closed set: no label ever takes a URL.

Keys a child may put in its stats dict (all optional, all deltas; unknown keys are ignored):

    "results":   {(ok: bool, error_kind: str | None): n}       consumers
    "codes":     [n_1xx, n_2xx, n_3xx, n_4xx, n_5xx]            consumers
    "duration":  [bucket counts..., sum]                        consumers (check_duration)
    "lag":       [bucket counts..., sum]                        consumers (schedule_lag)
    "refused":   n                                              consumers
    "skipped":   n                                              producer
    "db_errors": n                                              any role
    "notifications": {(channel: str, result: str): n}           the notifier (alerts)
"""

import bisect
import functools
from collections import Counter

PREFIX = "sitewatch"

# Bucket upper bounds in seconds (+Inf is implied). A check is bounded by its timeout
# (default 10 s, at most an hour); lag beyond a period shows as skipped slots instead.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

# The closed set of error_kind label values (DESIGN.md section 4, plus the monitor's own
# failures); anything else is counted as "other", so a new kind can never blow up the series.
ERROR_KINDS = frozenset({"dns", "connect", "timeout", "tls", "redirects", "body_too_large", "protocol",
                         "status", "regex", "lost", "monitor"})
CODE_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
URL_STATES = ("unknown", "up", "down")
QUEUE_STATES = ("waiting", "leased")


@functools.cache
def queries() -> dict[str, str]:
    from ..db import store
    return store.load_queries("sitewatch.operations")


@functools.cache
def _result_columns() -> tuple[int, int, int, int]:
    """Where task_id, ok, error_kind and status_code sit in a result row (store.RESULT_FIELDS)."""
    from ..db.store import RESULT_FIELDS
    return tuple(RESULT_FIELDS.index(f) for f in ("task_id", "ok", "error_kind", "status_code"))


class CheckCounts:
    """A consumer's counts since its last stats message (plain ints: no locks, no prometheus_client)."""

    @classmethod
    def create(cls, enabled: bool) -> "CheckCounts":
        """Counts, or (metrics.listen empty: nobody would read them) a stand-in that counts nothing."""
        return cls() if enabled else _NoCounts()

    def __init__(self):
        self._reset()

    def _reset(self) -> None:
        self.results = {}            # (ok, error_kind) -> results
        self.codes = [0] * len(CODE_CLASSES)
        self.duration = [0] * (len(DURATION_BUCKETS) + 1)
        self.duration_sum = 0.0
        self.lag = [0] * (len(LAG_BUCKETS) + 1)
        self.lag_sum = 0.0

    def recorded(self, rows, refused_ids) -> None:
        """Result rows just written (store.RESULT_FIELDS tuples), minus those the lease fence refused.

        Counted when written, not when checked, so that the counters add up to the rows in
        task_result. (On the consumer's hot path: plain dict and list updates, kinds checked
        once per message in take().)
        """
        task_id, ok, kind, code = _result_columns()
        refused = set(refused_ids)
        results, codes = self.results, self.codes
        for row in rows:
            if refused and row[task_id] in refused:
                continue
            key = (row[ok], row[kind])
            results[key] = results.get(key, 0) + 1
            status = row[code]
            if status is not None and 100 <= status <= 599:
                codes[status // 100 - 1] += 1

    def result(self, ok: bool, error_kind: str | None, status_code: int | None) -> None:
        """One recorded result (what recorded() does per row)."""
        key = (bool(ok), error_kind)
        self.results[key] = self.results.get(key, 0) + 1
        if status_code is not None and 100 <= status_code <= 599:
            self.codes[status_code // 100 - 1] += 1

    def observe(self, duration: float | None, lag: float) -> None:
        """One finished check: how long it took and how late it started."""
        if duration is not None:
            self.duration[bisect.bisect_left(DURATION_BUCKETS, duration)] += 1
            self.duration_sum += duration
        if lag < 0.0:
            lag = 0.0
        self.lag[bisect.bisect_left(LAG_BUCKETS, lag)] += 1
        self.lag_sum += lag

    def take(self) -> dict:
        """The counts for one stats message; starts counting afresh."""
        results = Counter()
        for (ok, kind), n in self.results.items():
            results[(bool(ok), kind if kind is None or kind in ERROR_KINDS else "other")] += n
        out = {"results": dict(results), "codes": self.codes,
               "duration": [*self.duration, round(self.duration_sum, 4)],
               "lag": [*self.lag, round(self.lag_sum, 4)]}
        self._reset()
        return out


class _NoCounts(CheckCounts):
    def recorded(self, rows, refused_ids) -> None:
        pass

    def observe(self, duration, lag) -> None:
        pass

    def take(self) -> dict:
        return {}
