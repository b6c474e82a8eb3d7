"""The maintenance job: partitions ahead, rollups, the uptime summary, retention. One run = run_once().

`sitewatch run` runs it every history.interval seconds in its own supervised
child, `maintenance` (not in the producer: a rollup of a busy hour or a DETACH
... CONCURRENTLY waiting for old transactions takes seconds to minutes, and the
producer must never stall on it: every slot it enqueues late is lag).
`sitewatch db maintain` runs it once. Any number of hosts may run it: a
session-level advisory lock lets one run at a time; the others skip their turn.
"""

import threading
import time

import psycopg2

from .. import logs
from ..db.database import Reconnecting, connect, is_connection_error
from ..errors import DatabaseUnavailable
from ..manage import audit
from . import analyze, partitions, prune, rollup, summary
from .pacing import Pace

# "the maintenance job" (distinct from the migration lock).
MAINTENANCE_LOCK_KEY = 0x5173_7761_7463_69
STATEMENT_TIMEOUT_MS = 600_000   # a rollup of a busy day or a detach waiting for old snapshots
WORK_MEM = "64MB"                # per sort or hash of the job's one connection (hashes: x hash_mem_multiplier)


def grace_for(conn, cfg) -> float:
    with conn.cursor() as cur:
        cur.execute(rollup.QUERIES["longest_timeout"])
        longest = float(cur.fetchone()[0])
    conn.commit()
    return rollup.grace_seconds(longest, cfg.consumer.max_attempts, cfg.consumer.lease_margin)


def run_once(conn, cfg, log=None, heartbeat=lambda: None, behind=None) -> dict | None:
    """One maintenance run on `conn` (any mode; restored afterwards). None if another host is
    running it. `behind`: ChecksBehind, to wait while the checks are behind (pacing.py)."""
    log = log or logs.get()
    started = time.monotonic()
    old_autocommit = conn.autocommit
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s)", (MAINTENANCE_LOCK_KEY,))
        if not cur.fetchone()[0]:
            conn.autocommit = old_autocommit
            log.info("maintenance skipped: another process is running it")
            return None
        cur.execute("SET statement_timeout = %s", (STATEMENT_TIMEOUT_MS,))
        # The rollups and the summary aggregate thousands of URLs a statement (the summary
        # build's 24 h histogram: about a million (URL, bucket) groups at 100,000 URLs): with
        # the default 4 MB their hash tables and sorts spill to disk.
        cur.execute("SET work_mem = %s", (WORK_MEM,))
        # The job keeps to one core and rests (pacing.py): no parallel workers, which would
        # take the other core from the checks, and no JIT, whose compilation costs more than
        # a statement sized to half a second gains from it.
        cur.execute("SET max_parallel_workers_per_gather = 0")
        cur.execute("SET jit = off")
    try:
        conn.autocommit = False
        created = partitions.ensure_ahead(conn, cfg.history.partitions_ahead, log)
        pace = Pace(heartbeat, behind=behind)
        brin_ranges = partitions.summarize_brin(conn, pace)    # before the reads of recent rows below
        analysed = analyze.refresh(conn)      # likewise
        heartbeat()
        grace = grace_for(conn, cfg)
        hours = rollup.catch_up_hours(conn, grace, heartbeat, pace, cfg.alerts.down_when)
        days = rollup.catch_up_days(conn, heartbeat, pace)
        heartbeat()
        analysed += analyze.refresh(conn)   # a new hour of rollups: the summary build reads them
        uptime_summary = summary.refresh(conn, pace=pace)
        conn.autocommit = True          # VACUUM, DETACH ... CONCURRENTLY: no transaction block
        if uptime_summary["summary"] in ("built", "added"):
            summary.vacuum(conn)
        dropped = partitions.drop_expired(conn, cfg.history.raw_days, hours["until"], log)
        conn.autocommit = False
        expired = rollup.expire(conn, cfg.history.hourly_days, cfg.history.daily_days,
                                regions=hours["regional"] or days["regional"])
        pruned = prune.expire(conn, cfg.history.raw_days)       # the alerts' outbox, silences, hosts
        audit_expired = audit.expire(conn, cfg.history.raw_days)
        report = {"partitions_created": len(created), "partitions_dropped": len(dropped),
                   "hours_rolled_up": hours["hours"], "hour_rows": hours["rows"],
                   "hours_final_until": hours["until"].isoformat() if hours["until"] else None,
                   "days_rolled_up": days["days"], "day_rows": days["rows"],
                   "rollup_rows_expired": sum(expired.values()), "brin_ranges_summarized": brin_ranges,
                   "alert_rows_expired": sum(pruned.values()), "audit_rows_expired": audit_expired,
                   "tables_analyzed": len(analysed), **pace.report(),
                   "grace_s": grace, **uptime_summary,
                   "took_s": round(time.monotonic() - started, 3)}
        log.info("maintenance done", **report)
        return report
    finally:
        conn.rollback()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("RESET statement_timeout")
            cur.execute("RESET work_mem")
            cur.execute("RESET max_parallel_workers_per_gather")
            cur.execute("RESET jit")
            cur.execute("SELECT pg_advisory_unlock(%s)", (MAINTENANCE_LOCK_KEY,))
        conn.autocommit = old_autocommit


class ChecksBehind:
    """How long the oldest claimable task or due URL has waited, asked on a connection of its own (the
    job's own sits in long REPEATABLE READ transactions). A probe that fails says 0: it never
    holds the job up."""

    def __init__(self, dsn: str, timeout: float, region: str = ""):
        self.dsn, self.timeout, self.conn, self.region = dsn, timeout, None, region

    def __call__(self) -> float:
        try:
            if self.conn is None or self.conn.closed:
                self.conn = connect(self.dsn, self.timeout, "maintenance probe", autocommit=True)
            with self.conn.cursor() as cur:
                cur.execute(rollup.QUERIES["checks_behind"], {"region": self.region})
                return cur.fetchone()[0]
        except (psycopg2.Error, DatabaseUnavailable):
            self.close()
            return 0.0

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Maintenance:
    """The `maintenance` child of `sitewatch run`: run_once() every history.interval seconds."""

    def __init__(self, ctx):
        from ..db import schema
        self.ctx = ctx
        self.cfg = ctx.cfg
        self.log = logs.get()
        self.db = Reconnecting(ctx.dsn, self.cfg.database.timeout, ctx.role, self.log,
                               on_connect=schema.check_version)
        self.behind = ChecksBehind(ctx.dsn, self.cfg.database.timeout, self.cfg.region)

    def run(self) -> None:
        self.log.info("maintenance started", interval_s=self.cfg.history.interval)
        next_run = 0.0
        while not self.ctx.should_stop():
            self.ctx.heartbeat()
            if time.monotonic() < next_run:
                self.ctx.sleep(min(1.0, next_run - time.monotonic()))
                continue
            conn = self.db.get()
            if conn is None:
                self.ctx.sleep(min(1.0, self.db.seconds_until_retry()))
                continue
            try:
                self._run_beating(conn)
            except Exception as e:
                if not is_connection_error(e):
                    # A failed run (a lock timeout, a statement timeout) is retried next time;
                    # nothing it did is half-committed.
                    self.log.exception("maintenance run failed; retrying next interval")
                self.db.broken(e)
            next_run = time.monotonic() + self.cfg.history.interval
        self.db.close()
        self.behind.close()
        self.log.info("maintenance stopped")

    def _run_beating(self, conn) -> None:
        """run_once, with heartbeats during long statements (statement_timeout bounds them)."""
        done = threading.Event()

        def beat():
            while not done.wait(1.0):
                self.ctx.heartbeat()
        beater = threading.Thread(target=beat, name="heartbeat", daemon=True)
        beater.start()
        try:
            run_once(conn, self.cfg, self.log, behind=self.behind)
        finally:
            done.set()
            beater.join()
