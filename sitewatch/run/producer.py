"""The producer: turns due URLs into tasks, one per (URL, slot).

All scheduling decisions are made by one SQL statement (store.enqueue_due)
using the database clock, so any number of producers on any number of hosts
can run against one database without double-enqueuing. Push monitors are not enqueued (they
are never checked): the producer records their missed slots instead (pushstore.record_missed),
just as safely across hosts.

Backpressure: while a batch or more of tasks waits that this host's consumers could claim,
the producer enqueues nothing and looks again shortly. The due URLs keep their cursors, so
when they are enqueued their missed slots are skipped and counted once (enqueue_due's
periods_late), and the task is for the latest slot, not one that waited in the queue. Without
it an overloaded run rewrote every due URL's row once a period to count a skip (its task
still waiting): most of the database's time at saturation (docs/benchmarks.md).
"""

import os
import socket
import time

from .. import logs
from ..alerts.settings import alert_defaults
from ..db import pushstore, schema, store
from ..db.database import Reconnecting, is_connection_error

MIN_SLEEP = 0.02          # floor between loops when work is due continuously: batch, don't spin
HOLD_SLEEP = 0.05         # between looks while the consumers are a batch behind: short, so they never
                          # run dry (a batch lasts 0.4 s at 5,000 checks/s)


class Producer:
    def __init__(self, ctx):
        self.ctx = ctx
        self.cfg = ctx.cfg
        self.log = logs.get()
        self.db = Reconnecting(ctx.dsn, self.cfg.database.timeout, ctx.role, self.log,
                               on_connect=schema.check_version)
        self.enqueued = 0
        self.skipped = 0
        self.missed = 0
        self.held = 0             # steps that enqueued nothing because the consumers were behind
        self.owner = f"{socket.gethostname()}:{ctx.role}:{os.getpid()}"   # checked_by of missed slots
        self.alert_defaults = alert_defaults(self.cfg)
        self._last_stats = time.monotonic()

    def run(self) -> None:
        self.log.info("producer started", batch_size=self.cfg.producer.batch_size)
        while not self.ctx.should_stop():
            self.ctx.heartbeat()
            conn = self.db.get()
            if conn is None:
                self.ctx.sleep(min(1.0, self.db.seconds_until_retry()))
                continue
            try:
                pause = self.step(conn)
                self.report(conn)
            except Exception as e:
                if not is_connection_error(e):
                    raise
                self.db.broken(e)
                continue
            self.ctx.sleep(pause)
        self.db.close()
        self.log.info("producer stopped")

    def step(self, conn) -> float:
        """Enqueue everything due now; return how long to sleep."""
        batch = self.cfg.producer.batch_size
        while True:
            # Missed push slots first: they are due by the same index, and enqueue_due passes over them.
            # Recorded while holding too: they are results, not work for the consumers.
            missed_due, missed = pushstore.record_missed(conn, batch, self.owner, self.alert_defaults)
            self.missed += missed
            holding = store.tasks_ready(conn, self.cfg.region, batch) >= batch
            due = 0
            if not holding:
                due, enqueued, skipped = store.enqueue_due(conn, batch)
                self.enqueued += enqueued
                self.skipped += skipped
            if (due < batch and missed_due < batch) or self.ctx.should_stop():
                break
            self.ctx.heartbeat()
        if holding:
            self.held += 1
            return HOLD_SLEEP
        until_due = store.seconds_until_due(conn)
        if until_due is None:
            return self.cfg.producer.poll_interval
        if until_due <= 0 and due == 0 and missed_due == 0:
            # Rows are due but we could lock none of them: another producer or a `url import`
            # holds them. They are its work (or free again soon); poll, don't spin.
            return self.cfg.producer.poll_interval
        return min(self.cfg.producer.poll_interval, max(MIN_SLEEP, until_due))

    def report(self, conn) -> None:
        now = time.monotonic()
        if now - self._last_stats < self.ctx.stats_interval:
            return
        self._last_stats = now
        waiting, leased = store.queue_depth(conn)
        if self.skipped:
            # One line per interval, not per statement: skips come in bursts after an outage.
            self.log.info("slots skipped", skipped=self.skipped, interval_s=self.ctx.stats_interval,
                          reason="site still being checked, or a period or more behind")
        if self.missed:
            self.log.info("push slots missed", missed=self.missed, interval_s=self.ctx.stats_interval)
        if self.held:
            # The event is the name alone, as for the skips above (bench/soak.py counts it by name).
            self.log.info("producer holding", held_s=round(self.held * HOLD_SLEEP, 1),
                          interval_s=self.ctx.stats_interval, batch_size=self.cfg.producer.batch_size,
                          reason="a batch of tasks already waits for the consumers; due URLs wait, and "
                                 "slots a period or more late are skipped and counted when enqueued")
        self.ctx.send_stats({"enqueued": self.enqueued, "skipped": self.skipped,
                             "queue_waiting": waiting, "queue_leased": leased,
                             "db_errors": self.db.take_errors()})
        self.enqueued = self.skipped = self.missed = self.held = 0
