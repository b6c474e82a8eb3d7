"""Fresh planner statistics for the tables the job and the readers scan.

A plan is only as good as the statistics behind it. Autovacuum analyses a table once a
tenth of it changed, but it may be off (it is on some managed and tuned servers) and is
always late for a table that was just created or filled in bulk: a new day's partition, a
freshly built summary, 100,000 URLs imported at once. Without statistics the planner
guesses: the raw rows of a few minutes read with a parallel sequential scan of the whole
day instead of the BRIN index (0.8 s instead of 0.01 s, issue 18), or a nested loop over a
table it believes empty. So the job analyses, each run, every table it relies on whose
statistics are missing or stale by autovacuum's own rule, whether or not autovacuum runs.
ANALYZE reads a sample (30,000 rows at most), so this costs a fraction of a second.
"""

from . import partitions

# Autovacuum's defaults: analyse once this share of the table plus this many rows changed.
SCALE_FACTOR = 0.1
THRESHOLD = 50

# The job's and the readers' tables (task_result's partitions are added: the recent ones).
TABLES = ("url", "rollup_hour", "rollup_day", "uptime_summary")


def stale(cur, partitions: list[str]) -> list[str]:
    """The tables among TABLES and `partitions` never analysed or changed enough since."""
    cur.execute("""
        SELECT relname FROM pg_stat_user_tables
        WHERE schemaname = current_schema() AND relname = ANY (%(names)s)
          AND (coalesce(last_analyze, last_autoanalyze) IS NULL
               OR n_mod_since_analyze > %(threshold)s + %(scale)s * greatest(n_live_tup, 0))
        ORDER BY relname""", {"names": [*TABLES, *partitions], "threshold": THRESHOLD, "scale": SCALE_FACTOR})
    return [name for (name,) in cur.fetchall()]


def refresh(conn) -> list[str]:
    """ANALYZE the stale tables, today's and yesterday's partitions of task_result among them
    (each its own short statement); returns their names."""
    with conn.cursor() as cur:
        # This backend's own row counts (the rollups it just wrote) reach pg_stat_user_tables
        # only when it goes idle, at most once a second: without a forced flush the second
        # refresh of a run missed the new hour of rollups, which the summary build then read
        # without statistics, and their counts arrived after the ANALYZE (a CI failure).
        cur.execute("SELECT pg_stat_force_next_flush()")   # PostgreSQL 15+
        conn.commit()                                       # flushed as the backend goes idle
        cur.execute("SELECT date_trunc('day', now(), 'UTC')")
        today = cur.fetchone()[0]
        names = stale(cur, [partitions.partition_name(today - partitions.DAY), partitions.partition_name(today)])
        for name in names:
            cur.execute(f'ANALYZE "{name}"')
    conn.commit()
    return names
