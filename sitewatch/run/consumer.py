"""A consumer: claims tasks in batches, checks URLs on a thread pool, writes results in batches.

The main thread owns the one database connection (LISTEN, claims, writes);
worker threads only run probe.check(). No transaction is open while a check
runs: a claim commits its lease at once, and a result batch is written later
in one statement fenced by the lease.
"""

import datetime
import os
import queue
import random
import socket
import threading
import time
from collections import deque

from .. import logs
from ..alerts.settings import alert_defaults
from ..check import probe
from ..db import schema, store
from ..db.database import Reconnecting, is_connection_error
from .child import STATS_INTERVAL

STUCK_MARGIN = 30.0      # seconds past its deadline after which a running check counts as stuck
LAG_SAMPLE = 200         # lags per stats message: a uniform sample, small enough for one pipe write


class CheckThreads:
    """A fixed set of daemon threads running one function on items from a queue.

    Not ThreadPoolExecutor: its Future and lock per item showed in profiles at a few
    thousand checks a second, and its threads are joined at exit, so one hanging check
    would hold up a stop. A SimpleQueue hand-off is a single C call.
    """

    def __init__(self, size: int, work):
        self._queue = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._loop, args=(work,), name=f"check-{i}", daemon=True)
                         for i in range(size)]
        for thread in self._threads:
            thread.start()

    def _loop(self, work) -> None:
        while (item := self._queue.get()) is not None:
            work(*item)

    def submit(self, *item) -> None:
        self._queue.put(item)

    def take_unstarted(self) -> list:
        """Remove and return the items no thread has picked up yet."""
        items = []
        try:
            while True:
                items.append(self._queue.get_nowait())
        except queue.Empty:
            return items

    def stop(self) -> None:
        for _ in self._threads:
            self._queue.put(None)


class Consumer:
    def __init__(self, ctx):
        self.ctx = ctx
        self.cfg = ctx.cfg
        self.log = logs.get()
        self.owner = f"{socket.gethostname()}:{ctx.role}:{os.getpid()}"
        self.db = Reconnecting(ctx.dsn, self.cfg.database.timeout, ctx.role, self.log,
                               on_connect=self._on_connect)
        self.concurrency = self.cfg.consumer.concurrency
        self.wake_every = max(1, self.concurrency // 10)   # also the smallest claim under load
        self.threads = CheckThreads(self.concurrency, self._check)
        self.in_flight = {}          # task id -> task row: claimed, not yet finished
        self.started = {}            # task id -> monotonic start, for stuck detection
        self.next_stuck_check = 0.0
        self.finished = deque()      # (task, outcome) from worker threads; deque appends are atomic
        self.pending = []            # result rows waiting to be written
        self.pending_since = None
        self.maybe_more = True       # tasks may be waiting: claim when there is room
        self.next_poll = 0.0
        self.clock_offset = datetime.timedelta(0)   # database clock minus ours
        self.stopping = False
        self.stats = {"checks": 0, "ok": 0, "failed": 0, "refused": 0, "lags": []}
        self._last_stats = time.monotonic()
        self.alert_defaults = alert_defaults(self.cfg)   # thresholds and channels for URLs without overrides

    # --- connection --------------------------------------------------------

    def _on_connect(self, conn) -> None:
        schema.check_version(conn)
        store.listen(conn)      # re-LISTEN after every reconnect: NOTIFY is the fast path
        before = datetime.datetime.now(datetime.timezone.utc)
        db_now = store.now(conn)
        after = datetime.datetime.now(datetime.timezone.utc)
        # Results carry started_at on the database's clock, like scheduled_at.
        self.clock_offset = db_now - (before + (after - before) / 2)
        self.maybe_more = True

    # --- main loop ---------------------------------------------------------

    def run(self) -> None:
        self.log.info("consumer started", concurrency=self.concurrency, owner=self.owner, cpu=self.ctx.cpu)
        while True:
            if not self.stopping and self.ctx.should_stop():
                self.begin_stop()
            self.collect_finished()
            self.heartbeat()
            conn = self.db.get()
            if conn is not None:
                try:
                    self.flush(conn)
                    if not self.stopping:
                        self.claim(conn)
                except Exception as e:
                    if not is_connection_error(e):
                        raise
                    self.db.broken(e)
                    conn = None
            if self.stopping and not self.in_flight and not self.pending:
                break
            self.report()
            self.wait(conn)
        self.finish()

    def wait(self, conn) -> None:
        now = time.monotonic()
        timeouts = [max(0.0, self.next_poll - now)]
        if self.pending:
            timeouts.append(max(0.0, self.pending_since + self.cfg.consumer.flush_interval - now))
        if conn is None:
            timeouts.append(max(0.05, self.db.seconds_until_retry()))
        if self.finished:
            timeouts.append(0.0)
        elif self.in_flight:
            timeouts.append(self.cfg.consumer.flush_interval)
        if conn is not None and conn.notifies:
            # A NOTIFY that arrived during a claim or a write is already read off the socket
            # into conn.notifies: select() would not see it, and we would wait for the poll.
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
        """Beat unless every worker thread is stuck: then let the supervisor restart us."""
        now = time.monotonic()
        if now >= self.next_stuck_check and len(self.started) >= self.concurrency:
            self.next_stuck_check = now + 1.0     # a scan per second is plenty, and cheap
            stuck = sum(1 for task_id, t0 in list(self.started.items())
                        if task_id in self.in_flight
                        and now - t0 > self.in_flight[task_id]["timeout"] + STUCK_MARGIN)
            if stuck >= self.concurrency:
                self.log.error("every check thread is stuck; no heartbeat", stuck=stuck)
                return
        self.ctx.heartbeat()

    # --- claiming and checking ----------------------------------------------

    def claim(self, conn) -> None:
        room = self.concurrency - len(self.in_flight)
        if not self.maybe_more or room <= 0:
            return
        # Under load, wait for a few free threads rather than claim one task per round trip.
        if self.in_flight and room < self.wake_every:
            return
        tasks = store.claim_tasks(conn, self.owner, room, self.cfg.consumer.lease_margin,
                                  self.cfg.consumer.max_attempts)
        self.maybe_more = len(tasks) == room
        for task in tasks:
            target = probe.target_for(task, self.cfg.check.max_body_bytes)
            self.in_flight[task["id"]] = task
            self.threads.submit(task, target)

    def _check(self, task, target) -> None:
        """Runs in a worker thread."""
        self.started[task["id"]] = time.monotonic()
        outcome = probe.check(target)
        self.finished.append((task, outcome))
        # Wake the main loop once per handful of finished checks, not per check: it only
        # needs to act when there is room for a worthwhile claim; otherwise its flush
        # timer collects results (see wait()).
        if len(self.finished) == self.wake_every:
            self.ctx.wake()

    def collect_finished(self) -> None:
        while self.finished:
            task, outcome = self.finished.popleft()
            self.in_flight.pop(task["id"], None)
            self.started.pop(task["id"], None)
            started_at = outcome.started_at + self.clock_offset
            if not self.pending:
                self.pending_since = time.monotonic()
            self.pending.append((
                task["id"], task["attempts"], self.owner, started_at, outcome.response_time_ms,
                outcome.status_code, outcome.regex_matched, outcome.ok, outcome.error_kind,
                # PostgreSQL text cannot hold NUL; one would fail the whole batch.
                outcome.error.replace("\x00", "\\0") if outcome.error else None, outcome.cert_days_left))
            self.stats["checks"] += 1
            self.stats["ok" if outcome.ok else "failed"] += 1
            self._sample_lag((started_at - task["scheduled_at"]).total_seconds())

    def _sample_lag(self, lag: float) -> None:
        """Reservoir sampling: every check of the interval equally likely to be in the sample."""
        lags = self.stats["lags"]
        if len(lags) < LAG_SAMPLE:
            lags.append(round(lag, 4))
        else:
            index = random.randrange(self.stats["checks"])
            if index < LAG_SAMPLE:
                lags[index] = round(lag, 4)

    def flush(self, conn) -> None:
        """Write pending results when the batch is full, old enough, or we are stopping."""
        while self.pending:
            full = len(self.pending) >= self.cfg.consumer.write_batch
            due = time.monotonic() - self.pending_since >= self.cfg.consumer.flush_interval
            if not (full or due or self.stopping):
                return
            batch = self.pending[:self.cfg.consumer.write_batch]
            refused = store.complete_tasks(conn, batch, self.alert_defaults)
            # Only drop what is written: a failure above keeps the batch for the next attempt.
            del self.pending[:len(batch)]
            self.pending_since = time.monotonic()
            if refused:
                self.stats["refused"] += len(refused)
                self.log.warning("results refused by the lease fence (lease lost: checked by another "
                                 "consumer, or the URL was removed)", count=len(refused))

    # --- stopping --------------------------------------------------------------

    def begin_stop(self) -> None:
        """Stop claiming; hand back tasks not started yet; let running checks finish."""
        self.stopping = True
        unstarted = [task["id"] for task, _ in self.threads.take_unstarted()]
        for task_id in unstarted:
            del self.in_flight[task_id]
        self.log.info("stopping", running=len(self.in_flight), handed_back=len(unstarted),
                      pending_results=len(self.pending))
        conn = self.db.get()
        if conn is not None and unstarted:
            # If this fails, the leases simply expire and the claim path takes the tasks back.
            try:
                store.release_tasks(conn, self.owner, unstarted)
            except Exception as e:
                if not is_connection_error(e):
                    raise
                self.db.broken(e)

    def finish(self) -> None:
        self.threads.stop()
        self.send_stats()
        self.db.close()
        self.log.info("consumer stopped")

    # --- stats -------------------------------------------------------------------

    def report(self) -> None:
        if time.monotonic() - self._last_stats >= STATS_INTERVAL:
            self.send_stats()

    def send_stats(self) -> None:
        self._last_stats = time.monotonic()
        self.ctx.send_stats(self.stats)
        self.stats = {"checks": 0, "ok": 0, "failed": 0, "refused": 0, "lags": []}
