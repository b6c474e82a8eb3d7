"""The notifier child: delivers the alert outbox, at least once, never in the way of checks.

One per `sitewatch run` (so every host has one). It claims due outbox rows with a lease
(SKIP LOCKED: notifiers on other hosts take others), sends each outside any transaction in
its own thread with a hard deadline, and marks the row sent with a compare-and-swap on the
lease. A failed send is retried with exponential backoff and jitter up to
alerts.max_attempts, then marked dead and logged. A notifier killed between claiming and
marking loses nothing: the lease expires and the claim path hands the row out again (the
repeat carries the same idempotency key).

Also here, because they are periodic and per host: the connectivity check
(alerts.connectivity_url), reminders while a URL stays down, and the notices owed when a
silence ends.
"""

import os
import random
import socket
import threading
import time
from collections import Counter

from .. import logs
from ..check import probe
from ..db import schema
from ..db.database import Reconnecting, is_connection_error
from ..maintenance_windows import store as maintenance_windows
from ..redact import redact_text, redact_url
from . import store
from .channels import Channels
from .messages import render
from .settings import default_channels, parse_duration

POLL_INTERVAL = 0.5         # seconds between looks at the outbox (notices are not latency-critical)
SWEEP_INTERVAL = 1.0        # seconds between reminder / silence sweeps
PLAN_INTERVAL = 60.0        # seconds between writing maintenance windows' occurrences ahead (a day)
CONNECTIVITY_INTERVAL = 5.0  # seconds between checks of alerts.connectivity_url
CONNECTIVITY_TIMEOUT = 5.0
REGION_INTERVAL = 5.0       # seconds between region heartbeats, at most (see region_interval)
# How often a host without a region asks whether any host has one (region_host not empty):
# until one has, there is no absence to announce, and its notifier skips that statement.
REGIONS_RECHECK = 60.0
LEASE_MARGIN = 5.0          # a lease outlives the send deadline by this much
MAX_IN_FLIGHT = 50          # sends at once per channel (and for all unknown channels together)
# A notice for a channel this host does not know (another host's alerts.channels) is left this
# long to a notifier that has it; then it fails here, so it is never held forever by nobody.
FOREIGN_CHANNEL_WAIT = 600.0
MAX_BACKOFF = 3600.0


def retry_delay(base: float, attempt: int) -> float:
    """Exponential backoff with jitter: base * 2^(attempt-1), plus up to a quarter more, capped."""
    delay = base * 2 ** (attempt - 1)
    return min(MAX_BACKOFF, delay * (1 + random.uniform(0, 0.25)))


def region_interval(min_period: float) -> float:
    """Seconds between this host's region heartbeats: a region is absent after two
    check.default_period without a sign of life (a heartbeat or one of its consumers' claims),
    so a host beats well within that: at most every half check.min_period (never more than
    check.default_period), or its region would be absent between beats (and left out of the
    quorum) while its hosts run."""
    return max(POLL_INTERVAL, min(REGION_INTERVAL, min_period / 2))


class Notifier:
    def __init__(self, ctx):
        self.ctx = ctx
        self.cfg = ctx.cfg.alerts
        self.source_address = ctx.cfg.check.source_address or None
        self.log = logs.get()
        self.host = socket.gethostname()
        self.owner = f"{self.host}:{ctx.role}:{os.getpid()}"
        self.db = Reconnecting(ctx.dsn, ctx.cfg.database.timeout, ctx.role, self.log,
                               on_connect=schema.check_version)
        self.channels = Channels(self.cfg.channels)
        self.defaults = default_channels(ctx.cfg)
        self.repeat_interval = parse_duration(self.cfg.repeat_interval)
        self.lease = self.cfg.send_timeout + LEASE_MARGIN
        self.in_flight = {}          # outbox id -> (row, SendResult, deadline)
        self.next_sweep = 0.0
        self.next_plan = 0.0
        self.next_connectivity = 0.0
        self.next_region = 0.0       # this host's region heartbeat (region_host)
        self.region_interval = region_interval(ctx.cfg.check.min_period)
        self.regions_seen = bool(ctx.cfg.region)     # whether any host has a region (see REGIONS_RECHECK)
        self.next_regions_check = 0.0
        self.connectivity = None     # the last check's verdict, waiting to be recorded
        self.connectivity_thread = None
        self.outcomes = Counter()    # (channel, sent|failed|dead) since the last stats message: /metrics
        self.last_stats = time.monotonic()

    def run(self) -> None:
        self.log.info("notifier started", owner=self.owner, channels=self.channels.names(),
                      connectivity_url=bool(self.cfg.connectivity_url))
        stopping = False
        while True:
            if not stopping and self.ctx.should_stop():
                stopping = True
                self.log.info("stopping", sending=len(self.in_flight))
            self.ctx.heartbeat()
            conn = self.db.get()
            if conn is not None:
                try:
                    self.finish_sends(conn, force=stopping and self._overdue_all())
                    if not stopping:
                        self.periodic(conn)
                        self.claim(conn)
                    self.report()
                except Exception as e:
                    if not is_connection_error(e):
                        raise
                    self.db.broken(e)
            if stopping and (not self.in_flight or conn is None):
                break     # sends cut short are not lost: their leases expire and they go out again
            self.ctx.sleep(self._sleep_for(conn))
        self.report(force=True)
        self.db.close()
        self.log.info("notifier stopped")

    def report(self, force: bool = False) -> None:
        """Send the supervisor the notices' outcomes by channel (sitewatch_notifications_total)."""
        now = time.monotonic()
        if self.outcomes and (force or now - self.last_stats >= self.ctx.stats_interval):
            self.ctx.send_stats({"notifications": dict(self.outcomes)})
            self.outcomes.clear()
            self.last_stats = now

    def _overdue_all(self) -> bool:
        return all(time.monotonic() >= deadline for _, _, deadline in self.in_flight.values())

    def _sleep_for(self, conn) -> float:
        timeout = POLL_INTERVAL
        if conn is None:
            timeout = max(0.05, self.db.seconds_until_retry())
        now = time.monotonic()
        for _, result, deadline in self.in_flight.values():
            if result.done.is_set():
                return 0.0
            timeout = min(timeout, max(0.0, deadline - now))
        return timeout

    # --- the outbox -----------------------------------------------------------------------

    def claim(self, conn) -> None:
        """Claim and start due notices, each channel within its own budget of sends in flight."""
        busy = Counter(row["channel"] for row, _, _ in self.in_flight.values())
        rooms = {name: MAX_IN_FLIGHT - busy.pop(name, 0) for name in self.channels.names()}
        other_room = MAX_IN_FLIGHT - sum(busy.values())
        if max(rooms.values(), default=0) <= 0 and other_room <= 0:
            return
        for row in store.claim_outbox(conn, self.owner, rooms, other_room, self.lease, self.cfg.max_attempts,
                                      FOREIGN_CHANNEL_WAIT):
            markdown = self.channels.markdown(row["channel"])
            try:
                title, body, level = render(row["kind"], row["detail"], row["key"], markdown)
            except Exception as e:  # one unreadable notice fails alone, never the batch or the loop
                self._unrenderable(conn, row, e)
                continue
            result = self.channels.start(row["channel"], title, body, level, markdown)
            threading.Thread(target=self._wake_when_done, args=(result,), daemon=True).start()
            self.in_flight[row["id"]] = (row, result, time.monotonic() + self.cfg.send_timeout)

    def _unrenderable(self, conn, row, error: Exception) -> None:
        """A notice whose stored detail cannot be rendered: failed (retried, then dead) alone."""
        why = redact_text(f"cannot render the notice: {type(error).__name__}: {error}")[:500]
        status = store.mark_failed(conn, row, self.owner, why, retry_delay(self.cfg.retry_backoff, row["attempts"]),
                                   self.cfg.max_attempts)
        self.outcomes[(row["channel"], "dead" if status == "dead" else "failed")] += 1
        self.log.error("notice failed: cannot render it", error=why, key=row["key"], channel=row["channel"],
                       kind=row["kind"], attempt=row["attempts"], status=status)

    def _wake_when_done(self, result) -> None:
        if result.done.wait(self.cfg.send_timeout + 1):
            self.ctx.wake()

    def finish_sends(self, conn, force: bool = False) -> None:
        now = time.monotonic()
        for outbox_id, (row, result, deadline) in list(self.in_flight.items()):
            if result.done.is_set():
                ok, error = result.ok, result.error
            elif now >= deadline or force:
                ok, error = False, f"no answer within {self.cfg.send_timeout:g} s"
            else:
                continue
            fields = {"key": row["key"], "channel": row["channel"], "kind": row["kind"], "attempt": row["attempts"]}
            if ok:
                self.outcomes[(row["channel"], "sent")] += 1
                if store.mark_sent(conn, row, self.owner):
                    self.log.info("notice sent", **fields)
                else:
                    self.log.warning("notice sent, but its lease was lost: it may be sent again "
                                     "(same key)", **fields)
            else:
                retry_in = retry_delay(self.cfg.retry_backoff, row["attempts"])
                status = store.mark_failed(conn, row, self.owner, error, retry_in, self.cfg.max_attempts)
                self.outcomes[(row["channel"], "dead" if status == "dead" else "failed")] += 1
                if status == "dead":
                    self.log.error("notice dead: giving up after max_attempts", error=error,
                                   max_attempts=self.cfg.max_attempts, **fields)
                elif status == "pending":
                    self.log.warning("notice failed, will retry", error=error, retry_in_s=round(retry_in, 2),
                                     **fields)
                else:
                    self.log.warning("notice failed, and its lease was lost", error=error, **fields)
            del self.in_flight[outbox_id]

    # --- periodic work ----------------------------------------------------------------------

    def periodic(self, conn) -> None:
        now = time.monotonic()
        if now >= self.next_connectivity:
            self.next_connectivity = now + CONNECTIVITY_INTERVAL
            self._check_connectivity(conn)
        if self.connectivity is not None:
            ok, self.connectivity = self.connectivity, None
            store.record_connectivity(conn, self.host, ok, CONNECTIVITY_INTERVAL + CONNECTIVITY_TIMEOUT)
            if not ok:
                self.log.warning("connectivity check failed: this host's failed checks count toward "
                                 "no incident", connectivity_url=redact_url(self.cfg.connectivity_url))
        if now >= self.next_plan:
            self.next_plan = now + PLAN_INTERVAL
            # before the sweep: an occurrence must be a silence row before it starts
            planned = maintenance_windows.plan(conn)
            if planned:
                self.log.info("maintenance occurrences planned", occurrences=planned)
        if now >= self.next_region:
            self.next_region = now + self.region_interval
            if self.ctx.cfg.region:
                store.region_heartbeat(conn, self.owner, self.ctx.cfg.region)
            if not self.regions_seen and now >= self.next_regions_check:
                self.next_regions_check = now + REGIONS_RECHECK
                self.regions_seen = store.regions_in_use(conn)
            if self.regions_seen:
                # absent: no sign of life from the region for two check.default_period; the one
                # definition the quorum and the page use too (region_absence, migration 0017).
                # Any host may notice, one announces.
                store.announce_absent_regions(conn, 2 * self.ctx.cfg.check.default_period, self.defaults)
        if now >= self.next_sweep:
            self.next_sweep = now + SWEEP_INTERVAL
            if self.repeat_interval > 0:
                store.queue_reminders(conn, self.repeat_interval, self.defaults)
            store.settle_silences(conn, self.defaults, self.cfg.notify_degraded)

    def _check_connectivity(self, conn) -> None:
        url = self.cfg.connectivity_url
        if not url:
            store.record_connectivity(conn, self.host, None)
            return
        if self.connectivity_thread is not None and self.connectivity_thread.is_alive():
            return

        def check():
            # From the checks' own source address: it is their network this check vouches for.
            self.connectivity = probe.check(probe.Target(url=url, timeout=CONNECTIVITY_TIMEOUT,
                                                         source_address=self.source_address)).ok
            self.ctx.wake()
        self.connectivity_thread = threading.Thread(target=check, name="connectivity", daemon=True)
        self.connectivity_thread.start()
