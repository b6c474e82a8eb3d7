"""A consumer: claims tasks in batches, checks them on the engine's transfers (run/dispatch.py:
a CurlMulti loop, or threads), writes results in batches.

The main thread owns the one database connection (LISTEN, claims, writes); the checks never
touch it. No transaction is open while a check runs: a claim commits its lease at once, and
a result batch is written later in one statement fenced by the lease.

How many checks run at once adapts: `consumer.concurrency` is a ceiling, and
run/concurrency.py's limit decides within it.
"""

import datetime
import os
import random
import socket
import threading
import time
from collections import deque

from .. import __version__, logs
from ..alerts.settings import alert_defaults
from ..check import definition, kinds, probe
from ..check.choice import engine_named
from ..db import schema, store
from ..db.database import Reconnecting, is_connection_error, is_missing_partition, is_transient
from ..operations.metrics import CheckCounts
from ..redact import redact_text
from .concurrency import (
    CEILING_LOG_EVERY,
    CONTROL_INTERVAL,
    LOOP_LATE_SHRINK,
    THREAD_STACK_BYTES,
    CheckThreads,
    ConcurrencyLimit,
    CpuMeter,
)
from .starvation import Starvation

WRITE_RETRY = 5.0        # seconds between attempts to write results that found no task_result partition
TRANSIENT_RETRY = 1.0    # seconds before retrying after a deadlock, lock timeout or cancelled statement
LAG_SAMPLE = 200         # lags per stats message: a uniform sample, small enough for one pipe write
CLOCK_RESYNC = 60.0      # seconds between measurements of the database clock's offset from ours
MONITOR_RETRY_DELAY = 2.0  # a task handed back after a monitor failure is claimable again after this
MISSING_VARIABLE_RETRY_DELAY = 30.0  # a ${VAR} unset here: handed back, never recorded down, retried
STOP_MARGIN = 1.0        # seconds before the grace period ends at which running checks are handed back
MAX_CLAIM_WAIT = 50      # under load, claim once this many threads are free (or at the flush timer)



class Consumer:
    def __init__(self, ctx):
        self.ctx = ctx
        self.cfg = ctx.cfg
        self.log = logs.get()
        self.owner = f"{socket.gethostname()}:{ctx.role}:{os.getpid()}"
        self.db = Reconnecting(ctx.dsn, self.cfg.database.timeout, ctx.role, self.log,
                               on_connect=self._on_connect)
        self.engine = engine_named(self.cfg.check.engine)   # check.engine; made in this process
        self.source_address = self.cfg.check.source_address or None   # every check binds to it
        self.limit = ConcurrencyLimit(self.cfg.consumer.concurrency)
        self.starvation = Starvation(self.log)   # when this process was starved of CPU
        self.cpu = CpuMeter(ctx.cpu)
        self.next_control = time.monotonic() + CONTROL_INTERVAL
        self.work_waiting = False    # a claim filled all the room it had since the last decision
        self.last_ceiling_log = self.last_unreadable_log = self.last_missing_log = -CEILING_LOG_EVERY
        threading.stack_size(THREAD_STACK_BYTES)
        if self.engine.name == "curl":   # one CurlMulti loop drives every HTTP check: no thread per check
            from .dispatch import CurlAndThreads  # the kinds that could block it on threads beside it
            from .transfers import CurlTransfers
            self.threads = CurlAndThreads(CurlTransfers(self._check_started, self._check_done), self._check)
        else:
            self.threads = CheckThreads(self._check)
        # Keyed by (task id, attempt): a consumer can re-claim its own task whose lease expired
        # while the first attempt still runs; both are tracked, and the fence refuses the stale one.
        self.in_flight = {}          # (task id, attempt) -> task row: claimed, not yet finished
        self.started = {}            # (task id, attempt) -> monotonic start, for stuck detection
        self.next_stuck_check = 0.0
        self.stuck = 0               # checks found stuck by the last scan, when they are all it holds
        self.finished = deque()      # (task, outcome, seconds) from worker threads; deque appends are atomic
        self.pending = []            # result rows waiting to be written
        self.pending_since = None
        self.to_release = []         # (task id, attempt) to hand back after a monitor failure
        self.to_release_missing = []  # (task id, attempt) whose ${VAR} is not set on this host
        self.write_retry_at = 0.0    # writes failed for want of a partition: wait until then
        self.maybe_more = True       # tasks may be waiting: claim when there is room
        self.next_poll = 0.0
        self.clock_offset = datetime.timedelta(0)   # database clock minus ours
        self.next_clock_sync = 0.0
        self.stopping = False
        self.stop_deadline = None
        self.stats = self._new_stats()
        self.counts = CheckCounts.create(enabled=bool(self.cfg.metrics.listen.strip()))  # for /metrics
        self._last_stats = time.monotonic()
        self.alert_defaults = alert_defaults(self.cfg)   # thresholds and channels for URLs without overrides

    @staticmethod
    def _new_stats() -> dict:
        return {"checks": 0, "ok": 0, "failed": 0, "refused": 0, "monitor_failures": 0, "unreadable": 0,
                "lags": []}

    @property
    def wake_every(self) -> int:
        """Finished checks per wake-up of the main loop, and the smallest claim under load."""
        return max(1, min(MAX_CLAIM_WAIT, self.limit.value // 10))

    # --- connection --------------------------------------------------------

    def _on_connect(self, conn) -> None:
        schema.check_version(conn)
        store.listen(conn)      # re-LISTEN after every reconnect: NOTIFY is the fast path
        self.sync_clock(conn)
        self.maybe_more = True

    def sync_clock(self, conn) -> None:
        """Measure the database clock's offset from ours (results carry started_at on its clock,
        like scheduled_at). Repeated every CLOCK_RESYNC: either clock may be stepped or slewed
        while a consumer runs for months."""
        before = datetime.datetime.now(datetime.timezone.utc)
        db_now = store.now(conn)
        after = datetime.datetime.now(datetime.timezone.utc)
        self.clock_offset = db_now - (before + (after - before) / 2)
        self.next_clock_sync = time.monotonic() + CLOCK_RESYNC

    # --- main loop ---------------------------------------------------------

    def run(self) -> None:
        self.log.info("consumer started", concurrency=self.limit.ceiling, limit=self.limit.value,
                      owner=self.owner, cpu=self.ctx.cpu, engine=self.engine.name)
        self.next_control = time.monotonic() + CONTROL_INTERVAL     # the loop's clock starts now
        self.starvation.start()
        while True:
            if not self.stopping and self.ctx.should_stop():
                self.begin_stop()
            self.collect_finished()
            self.heartbeat()
            conn = self.db.get()
            if conn is not None and time.monotonic() >= self.write_retry_at:
                try:
                    self.release_handed_back(conn)
                    if self.stopping and time.monotonic() >= self.stop_deadline:
                        self.hand_back_running(conn)
                    self.flush(conn)
                    if not self.stopping:
                        if time.monotonic() >= self.next_clock_sync:
                            self.sync_clock(conn)
                        self.claim(conn)
                except Exception as e:
                    if is_missing_partition(e):
                        self.write_failed(e)
                    elif is_transient(e):
                        self.retry_soon(e)
                    elif not is_connection_error(e):
                        raise
                    else:
                        self.db.broken(e)
                        conn = None
            if self.stopping and not self.in_flight and not self.pending and not self.to_release \
                    and not self.to_release_missing:
                break
            if self.stopping and time.monotonic() >= self.stop_deadline + self.cfg.database.timeout:
                # The database stayed away through the grace period (or the supervisor is gone
                # and nobody will kill us): give up rather than loop forever. The leases expire
                # and the claim path checks these slots again.
                self.log.error("stopping without writing results: database unavailable",
                               unwritten_results=len(self.pending), running=len(self.in_flight))
                break
            self.control()
            self.report()
            self.wait(conn)
        self.finish()

    def wait(self, conn) -> None:
        now = time.monotonic()
        timeouts = [max(0.0, self.next_poll - now), max(0.0, self.next_control - now)]
        if self.pending:
            timeouts.append(max(0.0, self.pending_since + self.cfg.consumer.flush_interval - now,
                                self.write_retry_at - now))
        if self.stopping:     # wake for the hand-back, then for giving up on the database
            give_up = self.stop_deadline + self.cfg.database.timeout
            timeouts.append(self.stop_deadline - now if now < self.stop_deadline else max(0.0, give_up - now))
        if conn is None:
            timeouts.append(max(0.05, self.db.seconds_until_retry()))
        if self.finished:
            timeouts.append(0.0)
        elif self.in_flight:
            timeouts.append(self.cfg.consumer.flush_interval)
        if conn is not None and conn.notifies:
            # A NOTIFY that arrived during a claim or a write is already read off the socket
            # into conn.notifies: poll() would not see it, and we would wait for the poll.
            conn.notifies.clear()
            self.maybe_more = True
            timeouts.append(0.0)
        fds = [conn] if conn is not None else []
        if self.ctx.sleep(min(timeouts), fds) and conn is not None:
            try:
                conn.poll()
                if conn.notifies:
                    conn.notifies.clear()
                    self.maybe_more = True
            except Exception as e:
                if not is_connection_error(e):
                    raise
                self.db.broken(e)
        if time.monotonic() >= self.next_poll:
            # Polling is the guarantee, NOTIFY only the hint.
            self.next_poll = time.monotonic() + self.cfg.consumer.poll_interval
            self.maybe_more = True

    def heartbeat(self) -> None:
        """Beat unless every worker thread is stuck: then let the supervisor restart us. A scan's
        verdict holds until the next scan: a beat in between would undo it."""
        now = time.monotonic()
        if now >= self.next_stuck_check:
            self.next_stuck_check = now + 1.0     # a scan per second is plenty, and cheap
            stuck = self._all_stuck(now)
            if stuck and not self.stuck:
                self.log.error("every check thread is stuck; no heartbeat", stuck=stuck)
            died = getattr(self.threads, "died", None)     # the curl engine's one loop thread
            if died and not self.stuck:
                self.log.error("the check loop died; no heartbeat", error=died, in_flight=len(self.in_flight))
            self.stuck = stuck or bool(died)
        if not self.stuck:
            self.ctx.heartbeat()

    def _all_stuck(self, now: float) -> int:
        """The checks running consumer.stuck_margin past their deadline when that is every check
        this consumer may hold; 0 otherwise."""
        if not self.started or len(self.started) < len(self.in_flight):
            return 0
        margin = self.cfg.consumer.stuck_margin
        stuck = sum(1 for key, t0 in list(self.started.items())
                    if key in self.in_flight and now - t0 > self.in_flight[key]["timeout"] + margin)
        return stuck if stuck >= max(1, len(self.in_flight)) and stuck >= self.limit.value else 0

    # --- how many checks at once -----------------------------------------------

    def control(self) -> None:
        """Once per CONTROL_INTERVAL: adapt the limit; say so when it is held at the ceiling."""
        now = time.monotonic()
        if now < self.next_control:
            return
        late = now - self.next_control      # how long the loop took to come round: its own starvation
        self.next_control = now + CONTROL_INTERVAL
        waiting, self.work_waiting = self.work_waiting, False
        own_cpu, core_busy = self.cpu.read()
        before = self.limit.value
        self.limit.update(work_waiting=waiting, in_flight=len(self.in_flight), own_cpu=own_cpu,
                          core_busy=core_busy, loop_late=late)
        if self.limit.value < before and late >= LOOP_LATE_SHRINK:
            self.log.warning("consumer loop starved: holding fewer checks", late_s=round(late, 2),
                             limit=self.limit.value, in_flight=len(self.in_flight))
        if waiting and self.limit.at_ceiling and len(self.in_flight) >= self.limit.value * 0.9 \
                and now - self.last_ceiling_log >= CEILING_LOG_EVERY:
            self.last_ceiling_log = now
            self.log.warning("consumer at its concurrency ceiling with tasks waiting: add a host or raise "
                             "consumer.concurrency", ceiling=self.limit.ceiling, in_flight=len(self.in_flight))

    # --- claiming and checking ----------------------------------------------

    def claim(self, conn) -> None:
        room = self.limit.value - len(self.in_flight)
        if not self.maybe_more or room <= 0:
            if room <= 0 and self.maybe_more:
                self.work_waiting = True
            return
        # Under load, wait for a few free threads rather than claim one task per round trip.
        if self.in_flight and room < self.wake_every:
            return
        tasks, lost = store.claim_tasks(conn, self.owner, room, self.cfg.consumer.lease_margin,
                                        self.cfg.consumer.max_attempts, self.cfg.region)
        for _ in range(lost):          # recorded by the claim itself: counted like any result
            self.counts.result(False, "lost", None)
        self.maybe_more = len(tasks) + lost == room
        if self.maybe_more:
            self.work_waiting = True
        for task in tasks:
            key = (task["id"], task["attempts"])
            if not kinds.is_http(task["url"]) and (why := kinds.unavailable(task["url"])):
                self._not_here(task, key, why)     # icmp:// where this host may not open ICMP sockets
                continue
            try:
                target = definition.target_for(task, self.cfg.check.max_body_bytes, self.source_address)
            except definition.MissingVariable as missing:
                self._not_here(task, key, str(missing))
                continue
            except Exception as e:   # a stored value this version cannot read (a newer version wrote it)
                self.in_flight[key] = task
                self.finished.append((task, self._unreadable(task, e), 0.0))
                continue
            self.in_flight[key] = task
            self.threads.submit(task, target)
        if not self.threads.ensure(len(self.in_flight)):
            self.limit.back_off(self.threads.size)
            self.log.error("monitor failure: cannot start check threads; holding fewer checks",
                           threads=self.threads.size, limit=self.limit.value)

    def _not_here(self, task, key, why: str) -> None:
        """This host cannot check the URL (a ${VAR} of its definition is not set here, or its
        kind is forbidden here): the monitor's failure here, not the site's. Handed back
        unchecked (never recorded down; another host may have it), counted, logged once a
        minute; and, unlike running out of descriptors, no reason to hold fewer checks."""
        self.stats["monitor_failures"] += 1
        self.to_release_missing.append(key)
        now = time.monotonic()
        if now - self.last_missing_log >= CEILING_LOG_EVERY:
            self.last_missing_log = now
            self.log.error("monitor failure: this host cannot check the URL; its slot is handed back unchecked",
                           url_id=task["url_id"], error=why)

    def _unreadable(self, task, error: Exception) -> probe.Outcome:
        """The slot's result when this version cannot read the URL's stored settings: recorded as
        `lost` (the monitor's failure, not the site's), so no consumer crashes on it and no
        incident opens."""
        self.stats["unreadable"] += 1
        now = time.monotonic()
        if now - self.last_unreadable_log >= CEILING_LOG_EVERY:   # one line a minute, not one per slot
            self.last_unreadable_log = now
            self.log.warning("URL settings unreadable by this version; its slots are recorded as lost",
                             url_id=task["url_id"], error=type(error).__name__)
        return probe.Outcome(
            started_at=datetime.datetime.now(datetime.timezone.utc), response_time_ms=None,
            status_code=None, regex_matched=None, ok=False, error_kind="lost",
            error=f"not checked: sitewatch {__version__} cannot read this URL's stored settings "
                  f"({type(error).__name__}); was it written by a newer version?",
            cert_days_left=None)

    def _check(self, task, target) -> None:
        """Runs in a worker thread (the urllib3 engine; other kinds than HTTP on the curl engine)."""
        t0 = self._check_started(task)
        self._check_done(task, probe.check(target, self.engine), t0)

    def _check_started(self, task) -> float:
        self.started[(task["id"], task["attempts"])] = t0 = time.monotonic()
        return t0

    def _check_done(self, task, outcome, t0: float) -> None:
        """In a worker thread, or the CurlMulti loop's thread (run/transfers.py)."""
        self.finished.append((task, outcome, time.monotonic() - t0))
        # Wake the main loop once per handful of finished checks, not per check: it only
        # needs to act when there is room for a worthwhile claim; otherwise its flush
        # timer collects results (see wait()).
        if len(self.finished) == self.wake_every:
            self.ctx.wake()

    def collect_finished(self) -> None:
        monitor_failures, reason = 0, None
        while self.finished:
            task, outcome, duration = self.finished.popleft()
            key = (task["id"], task["attempts"])
            start = self.started.pop(key, None)
            if self.in_flight.pop(key, None) is None:
                continue          # handed back already (stop): its lease is gone
            if outcome.error_kind == "timeout":     # the site's fault, or this host's overload?
                now = time.monotonic()
                start = now - duration if start is None else start
                outcome = self.starvation.judge(outcome, start, start + duration, now)
            if outcome.error_kind == "monitor":
                # The monitor failed (out of descriptors, threads, ...), not the site: never a
                # site result. Hand the task back with the attempt not counted.
                monitor_failures += 1
                self.to_release.append(key)
                reason = outcome.error      # what ran out, or what this host may not do (icmp://)
                continue
            started_at = outcome.started_at + self.clock_offset
            timings = outcome.timings
            if not self.pending:
                self.pending_since = time.monotonic()
            self.pending.append((
                task["id"], task["attempts"], self.owner, started_at, outcome.response_time_ms,
                outcome.status_code, outcome.regex_matched, outcome.ok, outcome.error_kind,
                # PostgreSQL text cannot hold NUL; one would fail the whole batch.
                outcome.error.replace("\x00", "\\0") if outcome.error else None, outcome.cert_days_left,
                timings.dns_ms, timings.connect_ms, timings.tls_ms, timings.first_byte_ms, outcome.degraded))
            self.stats["checks"] += 1
            self.stats["ok" if outcome.ok else "failed"] += 1
            lag = (started_at - task["scheduled_at"]).total_seconds()
            self._sample_lag(lag)
            self.counts.observe(duration, lag)
        if monitor_failures:
            self.stats["monitor_failures"] += monitor_failures
            self.limit.back_off(len(self.in_flight))
            self.log.error("monitor failure: checks could not run (out of file descriptors or threads?); "
                           "tasks handed back, not recorded as site failures", count=monitor_failures,
                           in_flight=len(self.in_flight), limit=self.limit.value, error=reason)

    def _sample_lag(self, lag: float) -> None:
        """Reservoir sampling: every check of the interval equally likely to be in the sample."""
        lags = self.stats["lags"]
        if len(lags) < LAG_SAMPLE:
            lags.append(round(lag, 4))
        else:
            index = random.randrange(self.stats["checks"])
            if index < LAG_SAMPLE:
                lags[index] = round(lag, 4)

    def release_handed_back(self, conn) -> None:
        """Hand back tasks a monitor failure kept from being checked: claimable again shortly
        (not at once: the shortage may last a moment), the attempt not counted."""
        for waiting, delay in ((self.to_release, MONITOR_RETRY_DELAY),
                               (self.to_release_missing, MISSING_VARIABLE_RETRY_DELAY)):
            if waiting:
                batch = list(waiting)
                store.release_tasks(conn, self.owner, [k[0] for k in batch], [k[1] for k in batch],
                                    delay=delay)
                del waiting[:len(batch)]

    def flush(self, conn) -> None:
        """Write pending results when the batch is full, old enough, or we are stopping."""
        while self.pending:
            full = len(self.pending) >= self.cfg.consumer.write_batch
            due = time.monotonic() - self.pending_since >= self.cfg.consumer.flush_interval
            if not (full or due or self.stopping):
                return
            batch = self.pending[:self.cfg.consumer.write_batch]
            refused = store.complete_tasks(conn, batch, self.alert_defaults)
            self.counts.recorded(batch, refused)
            # Only drop what is written: a failure above keeps the batch for the next attempt.
            del self.pending[:len(batch)]
            self.pending_since = time.monotonic()
            if refused:
                self.stats["refused"] += len(refused)
                self.log.warning("results refused by the lease fence (lease lost: checked by another "
                                 "consumer, or the URL was removed)", count=len(refused))

    def retry_soon(self, error) -> None:
        """A statement lost a lock race or was cancelled: nothing was written (autocommit, one
        statement), so keep the results and retry shortly instead of crashing with them."""
        self.write_retry_at = time.monotonic() + TRANSIENT_RETRY
        self.log.warning("database statement failed, results kept, retrying", pgcode=error.pgcode,
                         pending_results=len(self.pending), retry_in_s=TRANSIENT_RETRY,
                         error=redact_text(" ".join(str(error).split()))[:300])

    def write_failed(self, error) -> None:
        """No partition for a result's slot: keep everything, stop claiming, retry in a while."""
        self.write_retry_at = time.monotonic() + WRITE_RETRY
        self.log.error("RESULTS NOT WRITTEN: task_result has no partition for their slots (is the "
                       "maintenance job running? `sitewatch db maintain` creates partitions); kept in "
                       "memory, not claiming, retrying", pending_results=len(self.pending),
                       retry_in_s=WRITE_RETRY, error=" ".join(str(error).split()))

    # --- stopping --------------------------------------------------------------

    def begin_stop(self) -> None:
        """Stop claiming; hand back tasks not started yet; let running checks finish.

        Running checks get the grace period less STOP_MARGIN; those still running then are
        handed back too (hand_back_running), so a slow but healthy check cut short by a stop
        or a reload costs no attempt and can never turn into `lost`.
        """
        self.stopping = True
        self.stop_deadline = time.monotonic() + max(0.0, self.cfg.supervisor.grace_period - STOP_MARGIN)
        unstarted = [(task["id"], task["attempts"]) for task, _ in self.threads.take_unstarted()]
        for key in unstarted:
            self.in_flight.pop(key, None)
        self.log.info("stopping", running=len(self.in_flight), handed_back=len(unstarted),
                      pending_results=len(self.pending))
        conn = self.db.get()
        if conn is not None and unstarted:
            # If this fails, the leases simply expire and the claim path takes the tasks back.
            try:
                store.release_tasks(conn, self.owner, [k[0] for k in unstarted], [k[1] for k in unstarted])
            except Exception as e:
                if not is_connection_error(e):
                    raise
                self.db.broken(e)

    def hand_back_running(self, conn) -> None:
        """The grace period is ending: hand back checks still running, the attempt not counted."""
        self.collect_finished()
        running = list(self.in_flight)
        if not running:
            return
        store.release_tasks(conn, self.owner, [k[0] for k in running], [k[1] for k in running])
        for key in running:
            self.in_flight.pop(key, None)
        self.log.info("grace period ending: running checks handed back", count=len(running))

    def finish(self) -> None:
        self.threads.stop()
        self.send_stats()
        self.db.close()
        self.log.info("consumer stopped")

    # --- stats -------------------------------------------------------------------

    def report(self) -> None:
        if time.monotonic() - self._last_stats >= self.ctx.stats_interval:
            self.send_stats()

    def send_stats(self) -> None:
        self._last_stats = time.monotonic()
        self.stats.update(threads=self.threads.size, in_flight=len(self.in_flight), limit=self.limit.value,
                          starved_timeouts=self.starvation.take(),
                          ceiling=self.limit.ceiling,
                          at_ceiling=self.limit.at_ceiling and len(self.in_flight) >= self.limit.value * 0.9)
        # Two messages: each must fit one atomic pipe write, and the lag sample plus the metrics'
        # histograms together do not.
        self.ctx.send_stats(self.stats)
        self.ctx.send_stats({**self.counts.take(), "db_errors": self.db.take_errors()})
        self.stats = self._new_stats()
