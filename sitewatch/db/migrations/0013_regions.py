"""Schema version 13: regions (issue 21, DESIGN.md section 12), online and resumably.

What changes (the catalog part is regions.sql, beside this file):
* url.regions and url.down_when; task becomes one row per (url_id, region);
  url_region_state holds each (URL, region)'s state, url_state stays the URL's overall one.
* task_result.region (text NOT NULL DEFAULT '': existing rows read as '', and adding a column
  with a constant default is a catalog change, no rewrite), and the slot key becomes
  (url_id, scheduled_at, region). COLLATE "C": region names are plain ASCII, and the key's
  comparisons then cost a memcmp, not the database's locale rules.

Why Python and not one .sql file: the new key is a new unique index on every partition of
task_result. Swapping the primary key in one transaction (DROP CONSTRAINT, ADD PRIMARY KEY)
builds every partition's index under an ACCESS EXCLUSIVE lock: at 30,000 URLs a minute with
30 days of raw rows that is over a billion rows, and writers would wait for the whole build.
Instead (each step commits and checks the catalog first, so an interrupted run resumes):

1. add task_result.region (a moment's lock, no scan);
2. per partition, CREATE UNIQUE INDEX CONCURRENTLY on (url_id, scheduled_at, region): scans,
   but inserts go on; an invalid index left by an interrupted build is dropped and rebuilt;
3. one short transaction (lock_timeout, retried): the parent's index ON ONLY task_result, each
   partition's index attached to it (a partition created since step 2 is new and nearly
   empty: its index is built here), the old primary key dropped (a catalog change; its
   indexes are unlinked, not scanned), regions.sql, and the version recorded.

Hosts of version 12 keep writing until step 3 and fail their writes after it (their
ON CONFLICT (url_id, scheduled_at) and (url_id) no longer match a key): their consumers keep
the results and retry, and being older than the schema they refuse to start again. Upgrade
every host together.
"""

from importlib import resources

import psycopg2.errors

from sitewatch import logs
from sitewatch.history import migration as history_migration

KEY_COLUMNS = "(url_id, scheduled_at, region)"
PARENT_KEY = "task_result_slot_key"


def _key_name(partition: str) -> str:
    return f"{partition}_slot_key"


def upgrade(conn, record_version) -> None:
    log = logs.get()
    with conn.cursor() as cur:
        cur.execute("SET statement_timeout = 0")    # step 2 scans every partition
    conn.commit()
    try:
        history_migration._with_lock_retries(
            conn, log, "add task_result.region",
            lambda cur: cur.execute("ALTER TABLE task_result"
                                    " ADD COLUMN IF NOT EXISTS region text COLLATE \"C\" NOT NULL DEFAULT ''"))
        _build_partition_keys(conn, log)
        history_migration._with_lock_retries(conn, log, "swap task_result's key",
                                             lambda cur: _swap(cur, record_version))
    finally:
        conn.rollback()
        with conn.cursor() as cur:
            cur.execute("RESET statement_timeout")
        conn.commit()


def _partitions(cur) -> list[str]:
    cur.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = 'task_result'::regclass ORDER BY 1")
    return [name for (name,) in cur.fetchall()]


def _index_state(cur, name: str):
    """None when the index does not exist, else whether it is valid."""
    cur.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", (name,))
    row = cur.fetchone()
    return None if row is None else row[0]


def _build_partition_keys(conn, log) -> None:
    """Step 2: each partition's new unique index, built without blocking writers."""
    with conn.cursor() as cur:
        names = _partitions(cur)
    conn.commit()
    old = conn.autocommit
    conn.autocommit = True     # CONCURRENTLY cannot run in a transaction block
    try:
        for name in names:
            with conn.cursor() as cur:
                state = _index_state(cur, _key_name(name))
                if state:
                    continue
                if state is False:     # an interrupted build: start it again
                    cur.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {_key_name(name)}")
                try:
                    cur.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {_key_name(name)} ON {name} {KEY_COLUMNS}")
                except psycopg2.errors.UndefinedTable:
                    continue           # dropped by retention meanwhile
            log.debug("task_result key built", partition=name)
    finally:
        conn.autocommit = old


def _swap(cur, record_version) -> None:
    """Step 3: the short exclusive transaction."""
    cur.execute("LOCK TABLE task_result IN ACCESS EXCLUSIVE MODE")
    cur.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS {PARENT_KEY} ON ONLY task_result {KEY_COLUMNS}")
    for name in _partitions(cur):
        if not _index_state(cur, _key_name(name)):
            cur.execute(f"DROP INDEX IF EXISTS {_key_name(name)}")
            cur.execute(f"CREATE UNIQUE INDEX {_key_name(name)} ON {name} {KEY_COLUMNS}")
        cur.execute("SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass(%s))", (_key_name(name),))
        if not cur.fetchone()[0]:      # attached already: a database this step once converted
            cur.execute(f"ALTER INDEX {PARENT_KEY} ATTACH PARTITION {_key_name(name)}")
    cur.execute("ALTER TABLE task_result DROP CONSTRAINT IF EXISTS task_result_pkey")
    cur.execute(resources.files("sitewatch.db.migrations").joinpath("regions.sql").read_text(encoding="utf-8"))
    record_version(cur)
