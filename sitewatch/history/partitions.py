"""task_result's daily partitions: created ahead, dropped after retention.

Locks (why the statements look the way they do): a partition is created as a
plain table with a CHECK constraint matching its range and then ATTACHed, which
takes SHARE UPDATE EXCLUSIVE on task_result, a lock that inserts and reads do
not wait for (CREATE TABLE ... PARTITION OF would lock writers out). Retention
DETACHes ... CONCURRENTLY, again without blocking writers, and only then DROPs
the detached table, which nothing reads any more. Rows are never DELETEd.

A write whose slot has no partition fails (there is deliberately no DEFAULT
partition: it would make every later CREATE scan it, and hide the fault); the
consumer keeps the batch and retries it, logging loudly (run/consumer.py).
"""

import datetime
import re

import psycopg2

from ..db.database import describe_error, is_transient

PREFIX = "task_result_p"                 # task_result_pYYYYMMDD holds that UTC day
PARENT_BRIN = "task_result_scheduled_at_brin"
LEGACY_BRIN = "task_result_legacy_brin"
DEFAULT_AHEAD_DAYS = 7
MIN_AHEAD_DAYS = 3
_NAME = re.compile(r"^task_result_(p\d{8}|legacy)$")
DAY = datetime.timedelta(days=1)


def partition_name(day: datetime.datetime) -> str:
    return f"{PREFIX}{day.astimezone(datetime.timezone.utc):%Y%m%d}"


def create_partition(cur, day: datetime.datetime) -> bool:
    """Create and attach the partition of the UTC day starting at `day`; False if it exists."""
    name = partition_name(day)
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (name,))
    if cur.fetchone()[0]:
        return False
    upper = day + DAY
    cur.execute(f"CREATE TABLE {name} (LIKE task_result INCLUDING DEFAULTS)")
    # The constraint lets ATTACH skip its validation scan (the table is empty anyway) and
    # documents the range on the table itself.
    cur.execute(f"ALTER TABLE {name} ADD CONSTRAINT {name}_range"
                f" CHECK (scheduled_at >= %s AND scheduled_at < %s)", (day, upper))
    cur.execute(f"ALTER TABLE task_result ATTACH PARTITION {name} FOR VALUES FROM (%s) TO (%s)", (day, upper))
    return True


def attached(cur) -> list[dict]:
    """The partitions of task_result: name, lower and upper bound (None for MINVALUE), detach pending."""
    cur.execute("""
        SELECT c.relname, i.inhdetachpending,
               nullif(substring(pg_get_expr(c.relpartbound, c.oid) FROM 'FROM \\(''([^'']*)''\\)'), '')::timestamptz,
               substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \\(''([^'']*)''\\)')::timestamptz
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'task_result'::regclass
        ORDER BY 4""")
    return [{"name": name, "detach_pending": pending, "lower": lower, "upper": upper}
            for name, pending, lower, upper in cur.fetchall()]


def orphans(cur) -> list[str]:
    """Our partition tables that are not attached: a run stopped between DETACH and DROP."""
    cur.execute("""
        SELECT c.relname FROM pg_class c
        WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace
          AND c.relname ~ '^task_result_(p[0-9]{8}|legacy)$'
          AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)""")
    return [name for (name,) in cur.fetchall() if _NAME.match(name)]


def ensure_ahead(conn, days_ahead: int, log) -> list[str]:
    """Partitions from yesterday through today + days_ahead exist; returns the names created.

    Each partition in its own short transaction, with a lock_timeout: a long-running
    transaction holding a conflicting lock delays one partition, not the job.
    """
    created = []
    with conn.cursor() as cur:
        cur.execute("SELECT date_trunc('day', now(), 'UTC')")
        today = cur.fetchone()[0]
        existing = attached(cur)
    conn.commit()
    for offset in range(-1, days_ahead + 1):
        day = today + offset * DAY
        if any((p["lower"] is None or p["lower"] <= day) and day < p["upper"] for p in existing):
            continue   # a partition (task_result_legacy up to its bound, or the day's own) holds it
        try:
            with conn.cursor() as cur:
                cur.execute("SET LOCAL lock_timeout = '5s'")
                if create_partition(cur, day):
                    created.append(partition_name(day))
            conn.commit()
        except psycopg2.Error as e:
            if not is_transient(e):       # lock timeout, deadlock, cancel: the next run tries again
                raise
            conn.rollback()
            log.warning("partition creation delayed: the next run tries again", partition=partition_name(day),
                        error=describe_error(e))
    if created:
        log.info("partitions created", partitions=created)
    return created


BRIN_FIRST_RANGES = 8    # block ranges (128 pages each) in a paced run's first statement: 64 took 3.6 s


def summarize_brin(conn, pace=None) -> int:
    """Summarise the BRIN ranges of task_result's partitions filled since the last run; the
    number of ranges summarised. Commits.

    BRIN's autosummarize runs only where autovacuum does, and a range never summarised
    matches every query: with autovacuum off, each read of the last minutes (the uptime
    summary, `status`'s latest results) scanned every row written since the last VACUUM
    (3.2 million rows rechecked for 145,000 found, at 100,000 URLs). Summarised, a range
    stays so: later inserts widen its summary.

    With a `pace` (the job), the ranges are summarised a batch of block ranges a statement,
    each batch sized by how long the last took: summarising an hour's new rows at 100,000
    URLs in one statement held a core for 3 s (issue 18's soak). A range already
    summarised costs a revmap lookup.
    """
    with conn.cursor() as cur:
        cur.execute("""
            SELECT i.indexrelid::regclass::text,
                   pg_relation_size(i.indrelid) / current_setting('block_size')::int,
                   coalesce((SELECT split_part(o, '=', 2)::int FROM unnest(c.reloptions) o
                             WHERE o LIKE 'pages_per_range=%'), 128)
            FROM pg_inherits h
            JOIN pg_index i ON i.indrelid = h.inhrelid
            JOIN pg_class c ON c.oid = i.indexrelid
            JOIN pg_am a ON a.oid = c.relam AND a.amname = 'brin'
            WHERE h.inhparent = 'task_result'::regclass
            ORDER BY 1""")
        indexes = cur.fetchall()
        ranges = 0
        for index, blocks, pages_per_range in indexes:
            if pace is None:
                cur.execute("SELECT brin_summarize_new_values(%s::regclass)", (index,))
                ranges += cur.fetchone()[0]
                continue
            size, block = float(BRIN_FIRST_RANGES), 0
            while block < blocks:
                end = min(blocks, block + int(size) * pages_per_range)
                before = pace.work_s
                pace.execute(cur, """
                    SELECT coalesce(sum(brin_summarize_range(%s::regclass, b)), 0)::bigint
                    FROM generate_series(%s::bigint, %s::bigint - 1, %s) b""",
                             (index, block, end, pages_per_range))
                ranges += cur.fetchone()[0]
                conn.commit()
                block = end
                size = pace.resize(size, pace.work_s - before, 1, 1_000_000)
    conn.commit()
    return ranges


def drop_expired(conn, raw_days: int, rolled_up_until, log) -> list[str]:
    """Drop whole partitions older than raw_days whose hours are all rolled up.

    `conn` must be in autocommit mode: DETACH ... CONCURRENTLY cannot run in a
    transaction. A detach interrupted earlier (the partition is left "detach
    pending") is finished with FINALIZE first; a table detached but not dropped is
    dropped. Returns the names dropped.
    """
    dropped = []
    with conn.cursor() as cur:
        cur.execute("SELECT date_trunc('day', now(), 'UTC') - make_interval(days => %s)", (raw_days,))
        cutoff = cur.fetchone()[0]
        for p in attached(cur):
            if p["detach_pending"]:
                log.warning("finishing an interrupted partition detach", partition=p["name"])
                cur.execute(f"ALTER TABLE task_result DETACH PARTITION {p['name']} FINALIZE")
                cur.execute(f"DROP TABLE {p['name']}")
                dropped.append(p["name"])
                continue
            if p["upper"] > cutoff:
                continue
            if rolled_up_until is None or p["upper"] > rolled_up_until:
                log.info("partition past retention kept until its hours are rolled up", partition=p["name"],
                         rolled_up_until=rolled_up_until.isoformat() if rolled_up_until else None)
                continue
            cur.execute(f"ALTER TABLE task_result DETACH PARTITION {p['name']} CONCURRENTLY")
            cur.execute(f"DROP TABLE {p['name']}")
            dropped.append(p["name"])
        for name in orphans(cur):
            log.warning("dropping a partition left detached by an interrupted run", partition=name)
            cur.execute(f"DROP TABLE {name}")
            dropped.append(name)
    if dropped:
        log.info("partitions dropped", partitions=dropped, raw_days=raw_days)
    return dropped
