"""What one result costs PostgreSQL in complete_tasks, three ways, interleaved batch by batch
on one fresh database so a loaded machine slows them alike:

* `off`: the statement without its alert part (task, task_result only);
* `v8`: the alert part through version 8's whole statement (alert_apply_changes, as before
  migration 0018);
* `new`: through alert_apply_results, whose steady rows skip version 8's statement;
* `null_timings`: as `new`, with the four phase timings null (urllib3-like rows).

    python bench/result_write_cost.py --dsn postgresql://postgres@127.0.0.1:5432/postgres

URLS URLs, batches of BATCH all-ok results (the saturated bench's rows: a URL up, nothing to
announce), ROUNDS rounds over every URL; the first 3 rounds (URLs going from unknown to up)
are not counted. Each batch always takes the same way, so each way's URLs have their own
state. Prints the median microseconds per result of each way, and the functions' call
counts (track_functions) to show which path ran.
"""

import argparse
import datetime
import json
import re
import statistics
import time

import psycopg2
import psycopg2.extensions

from sitewatch.db import schema, store

OWNER = "bench:c:1"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--urls", type=int, default=12000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    name = f"sitewatch_result_cost_{int(time.time())}"
    admin = psycopg2.connect(args.dsn)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    try:
        conn = psycopg2.connect(psycopg2.extensions.make_dsn(args.dsn, dbname=name))
        schema.migrate(conn)
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("SET track_functions = 'all'")
        cur.execute("INSERT INTO url (url, period, timeout, next_check_at) SELECT 'http://h' || i || '.example/',"
                    " 60, 5, now() + interval '1 day' FROM generate_series(1, %s) i", (args.urls,))
        new_sql = store.QUERIES["complete_tasks"]
        v8_sql = new_sql.replace("FROM alert_apply_results(", "FROM alert_apply_changes(")
        off_sql = re.sub(r"\n    RETURNING url_id, scheduled_at.*?\n\), alerted AS \(.*?\n\)\nSELECT", "\n)\nSELECT",
                         new_sql, flags=re.S)
        assert v8_sql != new_sql and "alert" not in off_sql
        ways = {"off": off_sql, "v8": v8_sql, "new": new_sql, "null_timings": new_sql}
        times = {way: [] for way in ways}
        defaults = dict(store.NO_ALERT_CHANNELS, channels=["ops"])
        # task_result is partitioned by day from yesterday on: slots of the last hour
        t0 = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) - datetime.timedelta(hours=1)
        k = 0
        for rnd in range(args.rounds):
            slot = t0 + datetime.timedelta(minutes=rnd)
            for first in range(1, args.urls + 1, args.batch):
                ids = list(range(first, min(first + args.batch, args.urls + 1)))
                cur.execute("INSERT INTO task (url_id, scheduled_at, available_at, status, attempts, lease_owner)"
                            " SELECT id, %s, now(), 1, 1, %s FROM unnest(%s::bigint[]) id RETURNING id",
                            (slot, OWNER, ids))
                task_ids = [r[0] for r in cur.fetchall()]
                way = list(ways)[k % len(ways)]
                k += 1
                timing = None if way == "null_timings" else 1.5
                rows = [(t, 1, OWNER, slot, 5.0, 200, None, True, None, None, None,
                         timing, timing, timing, timing, False) for t in task_ids]
                columns = {field: store._array_text(column, store._ARRAY_TEXT[field])
                           if field in store._ARRAY_TEXT else list(column)
                           for field, column in zip(store.RESULT_FIELDS, zip(*rows, strict=True), strict=True)}
                columns.update(defaults)
                started = time.perf_counter()
                cur.execute(ways[way], columns)
                if rnd >= 3:
                    times[way].append((time.perf_counter() - started) / len(ids) * 1e6)
        time.sleep(1)   # function statistics are flushed when the session goes idle
        cur.execute("SELECT funcname, calls FROM pg_stat_user_functions"
                    " WHERE funcname IN ('alert_apply_results', 'alert_apply_changes') ORDER BY 1")
        calls = dict(cur.fetchall())
        print(json.dumps({"urls": args.urls, "batch": args.batch, "rounds": args.rounds,
                          "us_per_result_median": {way: round(statistics.median(v), 1) for way, v in times.items()},
                          "calls_so_far": calls}))
        conn.close()
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
