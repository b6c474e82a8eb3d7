"""Schema version 3: task_result becomes partitioned by day, online and resumably.

Why Python and not one .sql file: on a big table every way of doing this in one
transaction holds a lock that stops the consumers' writes for as long as a full
scan takes. Instead no row is copied at all: the existing table becomes the
first partition of a new partitioned `task_result` (ATTACH needs only a CHECK
constraint that proves its rows fit), and every step below either takes a lock
that does not block writers or holds an exclusive one for a moment.

Steps (each commits; each checks the catalog first, so a run interrupted at any
point, by kill -9 or a lost connection, resumes where it stopped):

1. add `CHECK (scheduled_at < B) NOT VALID` to the old table, B = the start of
   the UTC day after tomorrow (remembered in task_result_migration). NOT VALID:
   no scan, a moment's lock. New slots are due now, so writes keep fitting.
2. VALIDATE that constraint and build a BRIN index on scheduled_at CONCURRENTLY:
   scans, but under locks that let inserts go on.
3. one short transaction (lock_timeout, retried): rename the old table to
   task_result_legacy, drop its surrogate `id` (a catalog change), create the
   partitioned task_result with PRIMARY KEY (url_id, scheduled_at), attach the
   old table FOR VALUES FROM (MINVALUE) TO (B) (the validated constraint spares
   the scan; its unique and BRIN indexes are adopted, not rebuilt), create the
   daily partitions from B, the rollup tables, and record the version.
   An empty old table is dropped instead of attached.

Hosts running the previous version keep writing throughout: their statements
name `task_result` and its columns, never `id`, and ON CONFLICT (url_id,
scheduled_at) matches the new primary key. (Being older than the schema, they
refuse to start again once restarted: upgrade them.) If step 3 waits out its
lock_timeout behind long transactions, it retries with backoff.

Retention later drops task_result_legacy as a whole, once its newest rows are
older than history.raw_days and rolled up.
"""

import datetime
import time

import psycopg2.errors

from .. import logs
from ..errors import Failure
from . import partitions

LEGACY = "task_result_legacy"
CHECK_NAME = "task_result_legacy_range"
STATE_TABLE = "task_result_migration"
LOCK_TIMEOUT = "3s"        # longest time step 3 may hold up writers while it waits for its lock
LOCK_ATTEMPTS = 40         # step 3 retries; a retry waits 1..10 s
MIN_MARGIN = datetime.timedelta(days=1)   # B must stay this far ahead while steps 1-3 run

ROLLUP_TABLES = """
-- Hourly and daily summaries of task_result, per URL (history/rollup.py computes them).
-- rt_hist: counts of response times in fixed log-spaced buckets (history/histogram.py),
-- trailing empty buckets left out; merged by adding element-wise.
CREATE TABLE IF NOT EXISTS rollup_hour (
    url_id        bigint NOT NULL,
    bucket        timestamptz NOT NULL,       -- start of the UTC hour
    checks        bigint NOT NULL,            -- results in the bucket (ok + failed)
    ok            bigint NOT NULL,
    failed        bigint NOT NULL,
    non_2xx       bigint NOT NULL,            -- results without a 2xx status (none at all included)
    rt_count      bigint NOT NULL,            -- results with a response time
    rt_sum        float8,
    rt_min        float8,
    rt_max        float8,
    rt_hist       integer[] NOT NULL,
    cert_days_min integer,
    PRIMARY KEY (url_id, bucket)
);
CREATE TABLE IF NOT EXISTS rollup_day (LIKE rollup_hour INCLUDING ALL);
COMMENT ON COLUMN rollup_day.bucket IS 'start of the UTC day';
-- Time-ordered scans for retention and the job's own checks.
CREATE INDEX IF NOT EXISTS rollup_hour_bucket_idx ON rollup_hour USING brin (bucket);
CREATE INDEX IF NOT EXISTS rollup_day_bucket_idx ON rollup_day USING brin (bucket);
-- How far each level is final: every bucket starting before done_until is computed from
-- complete data; buckets after it are computed when the data is complete.
CREATE TABLE IF NOT EXISTS rollup_watermark (
    level       text PRIMARY KEY CHECK (level IN ('hour', 'day')),
    done_until  timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO rollup_watermark (level) VALUES ('hour'), ('day') ON CONFLICT DO NOTHING;
"""


class _Quiet:
    """A new database converts an empty table: its steps are no news to the user (debug, not info)."""

    def __init__(self, log):
        self._log = log

    def info(self, *args, **kwargs):
        self._log.debug(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._log, name)


def upgrade(conn, record_version) -> None:
    """Convert task_result (schema 1 or 2) to the partitioned layout; see the module docstring."""
    log = logs.get()
    with conn.cursor() as cur:
        cur.execute("SELECT NOT EXISTS (SELECT 1 FROM task_result)")
        if cur.fetchone()[0]:
            log = _Quiet(log)
    conn.commit()
    started = time.monotonic()
    with conn.cursor() as cur:
        cur.execute("SET statement_timeout = 0")   # steps 2 scans the whole table
    conn.commit()
    try:
        if _is_partitioned(conn):
            # Converted by hand or by an older run of this very step: just record it.
            with conn.cursor() as cur:
                cur.execute(ROLLUP_TABLES)
                record_version(cur)
            conn.commit()
            return
        bound = _step_constraint(conn, log)
        _step_validate(conn, log)
        _step_swap(conn, log, bound, record_version)
    finally:
        conn.rollback()
        with conn.cursor() as cur:
            cur.execute("RESET statement_timeout")
        conn.commit()
    log.info("task_result is now partitioned by day", took_s=round(time.monotonic() - started, 2))


def _is_partitioned(conn) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass('task_result')")
        row = cur.fetchone()
    conn.commit()
    return row is not None and row[0] == "p"


def _step_constraint(conn, log) -> datetime.datetime:
    """Step 1: the NOT VALID range constraint; returns its bound B."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (STATE_TABLE,))
        if cur.fetchone()[0]:
            cur.execute(f"SELECT bound, bound - now() FROM {STATE_TABLE}")
            bound, margin = cur.fetchone()
            if margin >= MIN_MARGIN:
                conn.commit()
                log.info("resuming the task_result conversion", bound=bound.isoformat())
                return bound
            # Resumed long after: new slots would soon fall past B and fail. Start again with a new B.
            log.warning("restarting the task_result conversion with a later bound", old_bound=bound.isoformat())
            cur.execute(f"ALTER TABLE task_result DROP CONSTRAINT IF EXISTS {CHECK_NAME}")
            cur.execute(f"DROP TABLE {STATE_TABLE}")
    conn.commit()

    def add(cur):
        cur.execute(f"CREATE TABLE {STATE_TABLE} (bound timestamptz NOT NULL)")
        cur.execute(f"INSERT INTO {STATE_TABLE} SELECT date_trunc('day', now(), 'UTC') + interval '2 days'"
                    f" RETURNING bound")
        bound = cur.fetchone()[0]
        cur.execute(f"ALTER TABLE task_result ADD CONSTRAINT {CHECK_NAME}"
                    f" CHECK (scheduled_at < %s) NOT VALID", (bound,))
        return bound
    bound = _with_lock_retries(conn, log, "add the range constraint", add)
    log.info("task_result conversion: range constraint added", bound=bound.isoformat())
    return bound


def _step_validate(conn, log) -> None:
    """Step 2: validate the constraint and build the BRIN index, without blocking writers."""
    t0 = time.monotonic()
    with conn.cursor() as cur:
        cur.execute(f"ALTER TABLE task_result VALIDATE CONSTRAINT {CHECK_NAME}")
    conn.commit()
    with conn.cursor() as cur:
        # An interrupted CREATE INDEX CONCURRENTLY leaves an invalid index: drop it and build again.
        cur.execute("SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass(%s)",
                    (partitions.LEGACY_BRIN,))
        row = cur.fetchone()
    conn.commit()
    if row is None or not row[0]:
        old = conn.autocommit
        conn.autocommit = True   # CONCURRENTLY cannot run in a transaction block
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP INDEX IF EXISTS {partitions.LEGACY_BRIN}")
                cur.execute(f"CREATE INDEX CONCURRENTLY {partitions.LEGACY_BRIN} ON task_result"
                            f" USING brin (scheduled_at) WITH (autosummarize = on)")
        finally:
            conn.autocommit = old
    log.info("task_result conversion: existing rows validated and indexed", took_s=round(time.monotonic() - t0, 2))


def _step_swap(conn, log, bound, record_version) -> None:
    """Step 3: the short exclusive transaction."""
    def swap(cur):
        cur.execute("LOCK TABLE task_result IN ACCESS EXCLUSIVE MODE")
        cur.execute(f"ALTER TABLE task_result RENAME TO {LEGACY}")
        cur.execute(f"ALTER TABLE {LEGACY} DROP COLUMN IF EXISTS id")
        # LIKE: the same columns (whatever other migrations added), NOT NULLs and defaults.
        cur.execute(f"CREATE TABLE task_result (LIKE {LEGACY} INCLUDING DEFAULTS)"
                    f" PARTITION BY RANGE (scheduled_at)")
        cur.execute("ALTER TABLE task_result ADD PRIMARY KEY (url_id, scheduled_at)")
        cur.execute(f"CREATE INDEX {partitions.PARENT_BRIN} ON task_result USING brin (scheduled_at)"
                    f" WITH (autosummarize = on)")
        cur.execute(f"SELECT EXISTS (SELECT 1 FROM {LEGACY})")
        if cur.fetchone()[0]:
            cur.execute(f"ALTER TABLE task_result ATTACH PARTITION {LEGACY} FOR VALUES FROM (MINVALUE) TO (%s)",
                        (bound,))
            cur.execute(f"ALTER TABLE {LEGACY} DROP CONSTRAINT {CHECK_NAME}")
            first_day = bound
            kept = True
        else:
            cur.execute(f"DROP TABLE {LEGACY}")
            cur.execute("SELECT date_trunc('day', now(), 'UTC') - interval '1 day'")
            first_day = cur.fetchone()[0]
            kept = False
        cur.execute(f"DROP TABLE {STATE_TABLE}")
        cur.execute("SELECT date_trunc('day', now(), 'UTC') + make_interval(days => %s)",
                    (partitions.DEFAULT_AHEAD_DAYS,))
        last_day = cur.fetchone()[0]
        day = first_day
        while day <= last_day:
            partitions.create_partition(cur, day)
            day += datetime.timedelta(days=1)
        cur.execute(ROLLUP_TABLES)
        record_version(cur)
        return kept
    kept = _with_lock_retries(conn, log, "swap in the partitioned table", swap)
    log.info("task_result conversion: partitioned table in place",
             existing_rows="kept as partition task_result_legacy" if kept else "none")


def _with_lock_retries(conn, log, what: str, step):
    """Run step(cur) in a transaction with a short lock_timeout, retrying while locks are busy."""
    for attempt in range(1, LOCK_ATTEMPTS + 1):
        try:
            with conn.cursor() as cur:
                cur.execute("SET LOCAL lock_timeout = %s", (LOCK_TIMEOUT,))
                result = step(cur)
            conn.commit()
            return result
        except psycopg2.errors.LockNotAvailable:
            conn.rollback()
            wait = min(10.0, float(attempt))
            log.warning("task_result conversion waiting for a lock (long transactions on task_result?)",
                        step=what, attempt=attempt, retry_in_s=wait)
            time.sleep(wait)
    raise Failure(f"could not {what}: task_result stayed locked; run `sitewatch db migrate` again to resume")
