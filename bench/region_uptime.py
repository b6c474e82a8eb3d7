"""What uptime per region and by the quorum rule cost (issue 21, migration 0017). Exclusive lock:

    flock /work/bench.lock python bench/region_uptime.py --urls 1000 --repeat 3

A fresh database. First, an install without regions: the statements the change adds to its
maintenance job (the probe of region_host, once per hour rolled up; none in idle runs) and
the one it takes out of each notifier's sweep every 5 s (announce_absent_regions, skipped
until any host has a region), each timed over many runs. Then N URLs with regions a, b, c
and 30 days of rollup_region_hour (one row per URL, region or '' and hour) and times
regionuptime.for_urls of all of them: what `status` adds for URLs with regions. Prints one
JSON object.
"""

import argparse
import json
import os
import statistics
import sys
import time

import psycopg2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from history import DEFAULT_DSN, cli, env_for  # noqa: E402
from throughput import create_database, drop_database  # noqa: E402


def per_call_us(cur, sql, params=None, n=3000) -> float:
    for _ in range(200):
        cur.execute(sql, params)
    t0 = time.perf_counter()
    for _ in range(n):
        cur.execute(sql, params)
    return round(1e6 * (time.perf_counter() - t0) / n, 1)


def measure(args, dsn) -> dict:
    from sitewatch.alerts.store import QUERIES as ALERTS
    from sitewatch.history import regionuptime
    from sitewatch.history.rollup import QUERIES
    cli(env_for(dsn), "db", "migrate")
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    cur = conn.cursor()
    report = {"without_regions_us": {
        "regions_in_use (job: once per hour rolled up)": per_call_us(cur, QUERIES["regions_in_use"]),
        "announce_absent_regions (notifier, every 5 s before; skipped now)": per_call_us(
            cur, ALERTS["announce_absent_regions"], {"after": 120, "channels": ["ops"]}),
    }}
    cur.execute("INSERT INTO url (url, period, timeout, next_check_at, regions) SELECT 'http://s' || g"
                " || '.example/', 60, 5, now() + interval '1 hour', '{a,b,c}' FROM generate_series(1, %s) g",
                (args.urls,))
    cur.execute("UPDATE rollup_watermark SET done_until = date_trunc('hour', now()) WHERE level = 'hour'")
    cur.execute("""INSERT INTO rollup_region_hour SELECT u, r, b, 60, 59, 1 FROM generate_series(1, %s) u,
                   unnest('{"",a,b,c}'::text[]) r, generate_series(date_trunc('hour', now()) - interval '30 days',
                   date_trunc('hour', now()) - interval '1 hour', interval '1 hour') b""", (args.urls,))
    cur.execute("VACUUM ANALYZE rollup_region_hour")
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        found = regionuptime.for_urls(conn, None, "majority")
        times.append(time.perf_counter() - t0)
    assert len(found) == args.urls and found[1][""]["30d"].uptime == 0.98333
    report["with_regions"] = {"urls": args.urls, "rollup_region_hour_rows": args.urls * 4 * 720,
                              "for_urls_s_median": round(statistics.median(times), 3),
                              "for_urls_s": [round(t, 3) for t in times]}
    conn.close()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--urls", type=int, default=1000, help="URLs with regions a, b, c")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    dsn = create_database(args.dsn, f"sitewatch_rubench_{os.getpid()}")
    try:
        print(json.dumps(measure(args, dsn), indent=2))
    finally:
        drop_database(args.dsn, dsn)


if __name__ == "__main__":
    main()
