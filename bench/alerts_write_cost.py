"""What alerting adds to the result write, measured inside PostgreSQL: complete_tasks with
the alert state update (this tree) against the same statement without it, interleaved batch
by batch on one database, so a loaded machine slows both alike.

    python bench/alerts_write_cost.py --dsn postgresql://postgres@127.0.0.1:5432/postgres

Creates (and drops) a fresh database on that server, URLS URLs, and writes results in
batches of BATCH for ROUNDS rounds over every URL (so url_state rows are rewritten as in a
steady run), FAIL_EVERY-th result failed. Prints microseconds per result, each way.
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--urls", type=int, default=12000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--fail-every", type=int, default=20)
    args = parser.parse_args()
    name = f"sitewatch_alerts_cost_{int(time.time())}"
    admin = psycopg2.connect(args.dsn)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    try:
        conn = psycopg2.connect(psycopg2.extensions.make_dsn(args.dsn, dbname=name))
        schema.migrate(conn)
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("INSERT INTO url (url, period, timeout, next_check_at) SELECT 'http://h' || i || '.example/',"
                    " 60, 5, now() + interval '1 day' FROM generate_series(1, %s) i", (args.urls,))
        on_sql = store.QUERIES["complete_tasks"]
        off_sql = re.sub(r"\n    RETURNING url_id, scheduled_at.*?\n\), alerted AS \(.*?\n\)\nSELECT", "\n)\nSELECT",
                         on_sql, flags=re.S)
        assert off_sql != on_sql and "alert" not in off_sql
        defaults = {"failure_threshold": 3, "success_threshold": 2, "channels": ["ops"]}
        t0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
        times = {"off": [], "on": []}
        for rnd in range(args.rounds):
            slot = t0 + datetime.timedelta(minutes=rnd)
            for n, first in enumerate(range(1, args.urls + 1, args.batch)):
                ids = list(range(first, min(first + args.batch, args.urls + 1)))
                cur.execute("INSERT INTO task (url_id, scheduled_at, available_at, status, attempts, lease_owner)"
                            " SELECT id, %s, now(), 1, 1, 'bench:c:1' FROM unnest(%s::bigint[]) id RETURNING id",
                            (slot, ids))
                task_ids = [r[0] for r in cur.fetchall()]
                oks = [(i + rnd) % args.fail_every != 0 for i in ids]
                columns = {"task_id": task_ids, "attempt": [1] * len(ids), "owner": ["bench:c:1"] * len(ids),
                           "started_at": [slot] * len(ids), "response_time_ms": [5.0] * len(ids),
                           "status_code": [200 if ok else 503 for ok in oks], "regex_matched": [None] * len(ids),
                           "ok": oks, "error_kind": [None if ok else "status" for ok in oks],
                           "error": [None if ok else "HTTP 503" for ok in oks], "cert_days_left": [None] * len(ids),
                           **dict.fromkeys(("dns_ms", "connect_ms", "tls_ms", "first_byte_ms"), [None] * len(ids)),
                           **defaults}
                mode = "on" if (n + rnd) % 2 else "off"
                started = time.perf_counter()
                cur.execute(on_sql if mode == "on" else off_sql, columns)
                times[mode].append((time.perf_counter() - started) / len(ids) * 1e6)
        off, on = statistics.median(times["off"]), statistics.median(times["on"])
        print(json.dumps({"urls": args.urls, "batch": args.batch, "rounds": args.rounds,
                          "batches_each": len(times["off"]), "us_per_result_off_median": round(off, 1),
                          "us_per_result_on_median": round(on, 1), "added_us_per_result": round(on - off, 1)}))
        conn.close()
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
