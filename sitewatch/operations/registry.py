"""Prometheus metrics, the supervisor's side: one registry, fed by every child's stats.

See metrics.py for what the children send and why deltas over the pipes they already
have (and not prometheus_client's multiprocess mode) keep every counter monotonic.
"""

import threading
import time
from collections import Counter

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from .. import __version__
from ..redact import redact_url
from .metrics import (
    CODE_CLASSES,
    DURATION_BUCKETS,
    ERROR_KINDS,
    LAG_BUCKETS,
    PREFIX,
    QUEUE_STATES,
    URL_STATES,
    queries,
)


class _Histogram:
    """Cumulative bucket counts and sum, fed with per-bucket deltas."""

    def __init__(self, bounds):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def add(self, delta) -> None:
        if not (isinstance(delta, (list, tuple)) and len(delta) == len(self.counts) + 1
                and all(_int(n) == n for n in delta[:-1]) and isinstance(delta[-1], (int, float))
                and not isinstance(delta[-1], bool)):
            return   # from a child built with other buckets (mid-upgrade), or garbage: never crash
        for i, n in enumerate(delta[:-1]):
            self.counts[i] += n
        self.sum += delta[-1]

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        buckets, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=self.sum)


class ClusterGauges:
    """Queue depth and URLs by state, read from the database (cluster-wide), cached a few seconds.

    Read only when scraped, on the listener's thread, with its own connection: no load on
    the database when nobody scrapes, and at most one query set per `max_age` however often
    Prometheus asks. Every supervisor of a cluster reports the same values: aggregate them
    with max(), not sum().
    """

    def __init__(self, db, max_age: float = 5.0, clock=time.monotonic, per_url_limit: int | None = None):
        self._db = db                 # a db.database.Reconnecting: backoff and quiet logs while down
        self._per_url_limit = per_url_limit   # None: no per-URL metrics
        self._max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._at = None
        self.queue = None             # (waiting, leased); None while unknown
        self.behind = None            # seconds the oldest due URL has waited to be enqueued
        self.urls = None              # {state: count}
        self.last_results = None      # [(id, url, ok, response_time_ms, status_code, cert_days_left, started)]

    def refresh(self) -> None:
        """Re-read when older than max_age. Unreadable values are dropped, not served stale."""
        from ..db import store
        with self._lock:
            now = self._clock()
            if self._at is not None and now - self._at < self._max_age:
                return
            self._at = None
            conn = self._db.get()
            try:
                if conn is None:
                    raise ConnectionError("database unavailable")
                queue = tuple(store.queue_depth(conn))
                behind = _query(conn, "schedule_behind")[0][0]
                exists = _query(conn, "url_state_exists")[0][0]
                urls = {state: 0 for state in URL_STATES}
                urls.update(dict(_query(conn, "urls_by_state" if exists else "urls_total")))
                last = None
                if self._per_url_limit is not None:
                    last = _query(conn, "last_results", {"limit": self._per_url_limit})
            except Exception as e:
                if conn is not None:
                    self._db.broken(e)
                self.queue = self.behind = self.urls = self.last_results = None
                return
            self.queue, self.behind, self.urls, self.last_results, self._at = queue, behind, urls, last, now

    def ping(self) -> bool:
        """Is the database reachable right now? (A read in the last second counts; otherwise ask it.)"""
        with self._lock:
            if self._at is not None and self._clock() - self._at < 1.0:
                return True
            conn = self._db.get()
            if conn is None:
                return False
            try:
                _query(conn, "ping")
                return True
            except Exception as e:
                self._db.broken(e)
                return False

    def take_errors(self) -> int:
        with self._lock:
            return self._db.take_errors()

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _query(conn, name: str, params=None) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(queries()[name], params)
        return cur.fetchall()


class Metrics:
    """The supervisor's totals, folded from every child's stats; a prometheus_client collector."""

    def __init__(self, cluster: ClusterGauges | None = None):
        self._lock = threading.Lock()     # fold() runs on the main loop, collect() on the listener
        self.cluster = cluster
        self.results = Counter()          # (ok, error_kind) -> checks
        self.codes = [0] * len(CODE_CLASSES)
        self.duration = _Histogram(DURATION_BUCKETS)
        self.lag = _Histogram(LAG_BUCKETS)
        self.refused = 0
        self.skipped = 0
        self.db_errors = Counter()        # role -> errors
        self.restarts = Counter()         # role -> restarts
        self.notifications = Counter()    # (channel, result) -> notices

    # --- fed by the supervisor's main loop -------------------------------------------

    def fold(self, role: str, stats: dict) -> None:
        """Add one child's stats message (deltas) to the totals. Malformed parts are ignored."""
        with self._lock:
            for (ok, kind), n in _items(stats.get("results")):
                self.results[(bool(ok), kind if kind is None or kind in ERROR_KINDS else "other")] += n
            codes = stats.get("codes")
            if isinstance(codes, list) and len(codes) == len(self.codes) and all(_int(n) == n for n in codes):
                self.codes = [a + b for a, b in zip(self.codes, codes, strict=True)]
            if "duration" in stats:
                self.duration.add(stats["duration"])
            if "lag" in stats:
                self.lag.add(stats["lag"])
            self.refused += _int(stats.get("refused"))
            self.skipped += _int(stats.get("skipped"))
            self.db_errors[role] += _int(stats.get("db_errors"))
            # The notifier's hook (alerts): {(channel, result): n}.
            for (channel, result), n in _items(stats.get("notifications")):
                self.notifications[(str(channel), str(result))] += n

    def child_known(self, role: str) -> None:
        """Per-role series exist from the child's start, at 0: a series that appears only with
        the first error would be missed by rate() and alerting on absent series."""
        with self._lock:
            self.db_errors[role] += 0
            self.restarts[role] += 0

    def child_restarted(self, role: str) -> None:
        with self._lock:
            self.restarts[role] += 1

    # --- read by prometheus_client on the listener thread -------------------------------

    def collect(self):
        if self.cluster is not None:
            self.cluster.refresh()
            errors = self.cluster.take_errors()      # the metrics/readiness connection's own failures
            with self._lock:
                self.db_errors["supervisor"] += errors
        with self._lock:
            yield from self._families()

    def _families(self):
        build = GaugeMetricFamily(f"{PREFIX}_build_info", "sitewatch version; always 1.", labels=["version"])
        build.add_metric([__version__], 1)
        yield build

        checks = CounterMetricFamily(f"{PREFIX}_checks", "Checks recorded by this host's consumers, "
                                     "by verdict and error kind.", labels=["result", "error_kind"])
        for (ok, kind), n in sorted(self.results.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
            checks.add_metric(["ok" if ok else "failed", kind or ""], n)
        yield checks

        codes = CounterMetricFamily(f"{PREFIX}_http_responses", "Final HTTP responses received by checks, "
                                    "by status class.", labels=["code_class"])
        for code_class, n in zip(CODE_CLASSES, self.codes, strict=True):
            codes.add_metric([code_class], n)
        yield codes

        yield self.duration.family(f"{PREFIX}_check_duration_seconds",
                                   "Time one check took: DNS, connect, TLS, redirects, headers and body.")
        yield self.lag.family(f"{PREFIX}_schedule_lag_seconds",
                              "How late a check started after its slot was due (started_at - scheduled_at).")
        yield CounterMetricFamily(f"{PREFIX}_slots_skipped", "Slots not checked because the URL was still "
                                  "being checked, or the producer was a period or more behind or held "
                                  "back while the consumers were.",
                                  value=self.skipped)
        yield CounterMetricFamily(f"{PREFIX}_results_refused", "Results refused by the lease fence (the "
                                  "lease was lost, or the URL removed).", value=self.refused)

        db_errors = CounterMetricFamily(f"{PREFIX}_db_errors", "Database connection failures, by process "
                                        "role.", labels=["role"])
        for role, n in sorted(self.db_errors.items()):
            db_errors.add_metric([role], n)
        yield db_errors

        restarts = CounterMetricFamily(f"{PREFIX}_child_restarts", "Children that died unexpectedly and "
                                       "were restarted, by role.", labels=["role"])
        for role, n in sorted(self.restarts.items()):
            restarts.add_metric([role], n)
        yield restarts

        notifications = CounterMetricFamily(f"{PREFIX}_notifications", "Alert notifications, by channel "
                                            "and result.", labels=["channel", "result"])
        for (channel, result), n in sorted(self.notifications.items()):
            notifications.add_metric([channel, result], n)
        yield notifications

        if self.cluster is not None and self.cluster.queue is not None:
            queue = GaugeMetricFamily(f"{PREFIX}_queue_tasks", "Tasks in the queue, cluster-wide "
                                      "(from the database, cached a few seconds).", labels=["state"])
            for state, n in zip(QUEUE_STATES, self.cluster.queue, strict=True):
                queue.add_metric([state], n)
            yield queue
        if self.cluster is not None and self.cluster.behind is not None:
            yield GaugeMetricFamily(f"{PREFIX}_schedule_behind_seconds", "How long the oldest due URL has "
                                    "waited to be enqueued, cluster-wide (from the database, cached a few "
                                    "seconds): more than a moment while the producers hold due URLs back because "
                                    "the consumers cannot keep up, or while no producer runs.",
                                    value=self.cluster.behind)
        if self.cluster is not None and self.cluster.urls is not None:
            urls = GaugeMetricFamily(f"{PREFIX}_urls", "Monitored URLs by state, cluster-wide (from the "
                                     "database, cached a few seconds).", labels=["state"])
            for state, n in sorted(self.cluster.urls.items()):
                urls.add_metric([state], n)
            yield urls
        if self.cluster is not None and self.cluster.last_results is not None:
            yield from _per_url_families(self.cluster.last_results)


def _per_url_families(rows):
    """blackbox_exporter's names, one series per URL (redacted, with its id: redacted URLs may
    coincide), from each URL's last result. A URL not checked yet has no series."""
    labels = ["url", "url_id"]
    success = GaugeMetricFamily("probe_success", "Whether the URL's last check succeeded.", labels=labels)
    duration = GaugeMetricFamily("probe_duration_seconds", "Response time of the last check (absent "
                                 "when no complete response).", labels=labels)
    status = GaugeMetricFamily("probe_http_status_code", "Final HTTP status of the last check (0: no "
                               "response).", labels=labels)
    expiry = GaugeMetricFamily("probe_ssl_earliest_cert_expiry", "Earliest certificate expiry, unix time, "
                               "to the day (from cert_days_left at the last check).", labels=labels)
    for url_id, url, ok, response_ms, code, cert_days, started in rows:
        if ok is None:
            continue
        key = [redact_url(url), str(url_id)]
        success.add_metric(key, 1 if ok else 0)
        if response_ms is not None:
            duration.add_metric(key, response_ms / 1000)
        status.add_metric(key, code or 0)
        if cert_days is not None:
            expiry.add_metric(key, started + cert_days * 86400)
    return success, duration, status, expiry


def _int(value) -> int:
    """A count from a child: a non-negative int, anything else counts as 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _items(mapping):
    """(key, n) pairs of a {(a, b): n} mapping from a child, skipping anything malformed."""
    if not isinstance(mapping, dict):
        return
    for key, n in mapping.items():
        if isinstance(key, tuple) and len(key) == 2 and _int(n):
            yield key, n
