"""What uptime per region and by the quorum rule cost (issue 21, migrations 0017 and 0019). Exclusive lock:

    /work/bin/benchlock python bench/region_uptime.py --urls 1000 --repeat 3 --baseline-src /tmp/before

A fresh database. First, an install without regions: the statements regions add to its
maintenance job (the probe of region_host, once per hour and once per day rolled up; none
in idle runs) and the one they take out of each notifier's sweep every 5 s
(announce_absent_regions, skipped until any host has a region), each timed over many runs.
Then N URLs with regions a, b, c and 30 days of rollup_region_hour (one row per URL, region
or '' and hour), rolled up into rollup_region_day by migration 0019's backfill and timed,
the daily rollup of one day timed, and regionuptime.for_urls of all of them timed: what
`status` adds for them. Each timing of for_urls runs in a process of its own, alternating
this tree with --baseline-src (a tree from before the daily region rollups, which reads the
hours alone), on the same database; both must give the same figures. Prints one JSON object.
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

import psycopg2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from history import DEFAULT_DSN, cli, env_for  # noqa: E402
from throughput import create_database, drop_database  # noqa: E402

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Run in a process of its own with a tree's code (python -c puts the working directory, the
# tree, first on the path): for_urls of every URL at a given now (the windows of every run
# the same, whenever it runs), timed; the figures' digest.
TIMED_READ = """
import datetime, hashlib, json, sys, time
import psycopg2
from sitewatch.history import regionuptime
conn = psycopg2.connect(sys.argv[1])
conn.autocommit = True
t0 = time.perf_counter()
found = regionuptime.for_urls(conn, None, "majority", datetime.datetime.fromisoformat(sys.argv[2]))
took = time.perf_counter() - t0
figures = sorted((u, r, w, f.ok, f.failed) for u, regions in found.items()
                 for r, windows in regions.items() for w, f in windows.items())
print(json.dumps({"s": took, "urls": len(found), "digest": hashlib.sha256(repr(figures).encode()).hexdigest()}))
"""


def per_call_us(cur, sql, params=None, n=3000) -> float:
    for _ in range(200):
        cur.execute(sql, params)
    t0 = time.perf_counter()
    for _ in range(n):
        cur.execute(sql, params)
    return round(1e6 * (time.perf_counter() - t0) / n, 1)


def timed_read(tree: str, dsn: str, now: datetime.datetime) -> dict:
    out = subprocess.run([sys.executable, "-c", TIMED_READ, dsn, now.isoformat()], cwd=tree,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": tree})
    if out.returncode != 0:
        raise SystemExit(f"for_urls in {tree} failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout)


def seed(cur, urls: int) -> dict:
    """N URLs with regions, 30 days of hours, their days by migration 0019's backfill (timed)
    and one day by the daily rollup (timed)."""
    from sitewatch.history import rollup
    cur.execute("INSERT INTO url (url, period, timeout, next_check_at, regions) SELECT 'http://s' || g"
                " || '.example/', 60, 5, now() + interval '1 hour', '{a,b,c}' FROM generate_series(1, %s) g",
                (urls,))
    cur.execute("UPDATE rollup_watermark SET done_until = date_trunc('hour', now()) WHERE level = 'hour'")
    cur.execute("UPDATE rollup_watermark SET done_until = date_trunc('day', now()) WHERE level = 'day'")
    cur.execute("INSERT INTO region_host (owner, region, seen_at) VALUES ('h:notifier:1', 'a', now())")
    t0 = time.perf_counter()
    cur.execute("""INSERT INTO rollup_region_hour SELECT u, r, b, 60, 59, 1 FROM generate_series(1, %s) u,
                   unnest('{"",a,b,c}'::text[]) r, generate_series(date_trunc('hour', now()) - interval '30 days',
                   date_trunc('hour', now()) - interval '1 hour', interval '1 hour') b
                   ORDER BY b""", (urls,))     # in time order, as the hourly rollup writes them
    seeded_s = time.perf_counter() - t0
    with open(os.path.join(HERE, "sitewatch/db/migrations/0019_region_day.sql")) as f:
        backfill = f.read().split("INSERT INTO rollup_region_day", 1)[1]
    cur.execute("TRUNCATE rollup_region_day")
    t0 = time.perf_counter()
    cur.execute("INSERT INTO rollup_region_day" + backfill)
    backfill_s = time.perf_counter() - t0
    cur.execute("SELECT date_trunc('day', now(), 'UTC') - interval '1 day'")
    yesterday = cur.fetchone()[0]
    t0 = time.perf_counter()
    rollup.recompute_days(cur, yesterday, yesterday + datetime.timedelta(days=1))
    day_s = time.perf_counter() - t0
    cur.execute("VACUUM ANALYZE rollup_region_hour")
    cur.execute("VACUUM ANALYZE rollup_region_day")
    cur.execute("SELECT (SELECT count(*) FROM rollup_region_hour), (SELECT count(*) FROM rollup_region_day)")
    hours, days = cur.fetchone()
    return {"urls": urls, "rollup_region_hour_rows": hours, "rollup_region_day_rows": days,
            "seed_hours_s": round(seeded_s, 1), "migration_0019_backfill_s": round(backfill_s, 2),
            "daily_rollup_of_one_day_s (recompute_days, unpaced)": round(day_s, 2)}


def measure(args, dsn) -> dict:
    from sitewatch.alerts.store import QUERIES as ALERTS
    from sitewatch.history.rollup import QUERIES
    cli(env_for(dsn), "db", "migrate")
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    cur = conn.cursor()
    report = {"without_regions_us": {
        "regions_in_use (job: once per hour and once per day rolled up)": per_call_us(cur, QUERIES["regions_in_use"]),
        "announce_absent_regions (notifier, every 5 s before; skipped now)": per_call_us(
            cur, ALERTS["announce_absent_regions"], {"after": 120, "channels": ["ops"]}),
    }}
    report["with_regions"] = seed(cur, args.urls)
    cur.execute("SELECT now()")
    now = cur.fetchone()[0]
    trees = {"this": HERE, **({"baseline": os.path.abspath(args.baseline_src)} if args.baseline_src else {})}
    runs = {name: [] for name in trees}
    status: dict[str, list] = {"this": []}
    for _ in range(args.repeat):
        for name, tree in trees.items():
            runs[name].append(timed_read(tree, dsn, now))
            if name == "this":      # (the baseline refuses a database migrated past its version)
                status[name].append(round(cli(env_for(dsn), "status", "--json")[0], 3))
    digests = {run["digest"] for name in trees for run in runs[name]}
    assert len(digests) == 1, f"the trees' figures differ: {runs}"
    assert all(run["urls"] == args.urls for name in trees for run in runs[name])
    from sitewatch.history import regionuptime
    found = regionuptime.for_urls(conn, None, "majority", now)
    assert found[1][""]["30d"].uptime == 0.98333 and found[1]["a"]["24h"].uptime == 0.98333
    for name in trees:
        times = [run["s"] for run in runs[name]]
        report["with_regions"][f"for_urls_s_median_{name}"] = round(statistics.median(times), 3)
        report["with_regions"][f"for_urls_s_{name}"] = [round(t, 3) for t in times]
    report["with_regions"]["status_json_s_median_this"] = statistics.median(status["this"])
    report["with_regions"]["status_json_s_this"] = status["this"]
    report["where_the_time_goes_this"] = where_the_time_goes(cur, now)
    conn.close()
    return report


def where_the_time_goes(cur, now) -> dict:
    """This tree's statement alone (timed, and EXPLAIN ANALYZE: its scans and aggregates)."""
    from sitewatch.history import regionuptime
    from sitewatch.history.rollup import QUERIES
    cur.execute("SELECT (SELECT done_until FROM rollup_watermark WHERE level = 'hour'),"
                " (SELECT done_until FROM rollup_watermark WHERE level = 'day')")
    params = regionuptime.counts_params(None, "majority", now, *cur.fetchone())
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        cur.execute(QUERIES["region_window_counts"], params)
        rows = cur.fetchall()
        times.append(time.perf_counter() - t0)
    cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + QUERIES["region_window_counts"], params)
    plan = cur.fetchone()[0][0]
    nodes = []

    def walk(node, depth):
        if "Relation Name" in node or node["Node Type"] in ("Aggregate", "Hash Join", "Append"):
            nodes.append({"depth": depth, "node": node["Node Type"], "relation": node.get("Relation Name"),
                          "rows": node["Actual Rows"] * node["Actual Loops"],
                          "ms": round(node["Actual Total Time"] * node["Actual Loops"], 1)})
        for child in node.get("Plans", []):
            walk(child, depth + 1)
    walk(plan["Plan"], 0)
    return {"statement_s_median (execute + fetch)": round(statistics.median(times), 3), "rows_out": len(rows),
            "explain_execution_ms": round(plan["Execution Time"], 1), "plan_nodes": nodes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--urls", type=int, default=1000, help="URLs with regions a, b, c")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline-src", help="a source tree from before the daily region rollups, timed alternately")
    args = parser.parse_args()
    dsn = create_database(args.dsn, f"sitewatch_rubench_{os.getpid()}")
    try:
        print(json.dumps(measure(args, dsn), indent=2))
    finally:
        drop_database(args.dsn, dsn)


if __name__ == "__main__":
    main()
