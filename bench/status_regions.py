"""What per-region readings cost `sitewatch status --json` (issue 21). Exclusive lock:

    git archive 618c493 | tar -x -C /tmp/before      # main before the regions map
    flock /work/bench.lock python bench/status_regions.py --urls 100000 --repeat 3 --baseline-src /tmp/before

A fresh database with N URLs at a 60 s period, one hour and a few minutes of raw results
(bench/history.py's layout) and the uptime summary built. Times `status --json` of all URLs,
alternating this tree with --baseline-src (no URL has regions: the only new work is the one
statement that finds none), then gives REGIONED of the URLs regions a, b, c with a state row
each and times it again, and the region_states statement alone. Prints one JSON object.
"""

import argparse
import json
import os
import statistics
import sys
import time

import psycopg2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from history import DEFAULT_DSN, _hours, _insert_raw, cli, env_for, scalar  # noqa: E402
from throughput import create_database, drop_database  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--urls", type=int, default=100_000)
    parser.add_argument("--regioned", type=int, default=30_000, help="URLs given regions a, b, c afterwards")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline-src", help="a source tree from before the regions map, timed alternately")
    args = parser.parse_args()
    dsn = create_database(args.dsn, f"sitewatch_srbench_{os.getpid()}")
    try:
        print(json.dumps(measure(args, dsn), indent=2))
    finally:
        drop_database(args.dsn, dsn)


def _statement(dsn) -> float:
    from sitewatch.regions import state as regionstate
    conn = psycopg2.connect(dsn)
    try:
        t0 = time.monotonic()
        found = regionstate.region_states(conn, None)
        return round(time.monotonic() - t0, 4), len(found)
    finally:
        conn.close()


def measure(args, dsn) -> dict:
    env = env_for(dsn)
    cli(env, "db", "migrate")
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("INSERT INTO url (url, period, timeout, next_check_at, created_at)"
                " SELECT 'http://site' || g || '.example/', 60, 5, now() + interval '1 hour',"
                " now() - interval '31 days' FROM generate_series(1, %s) g", (args.urls,))
    final = scalar(cur, "SELECT date_trunc('hour', now() - interval '300 s', 'UTC')")
    _insert_raw(cur, args.urls, final - _hours(1), final)
    _insert_raw(cur, args.urls, final, scalar(cur, "SELECT now()"))
    cur.execute("VACUUM ANALYZE")
    cli(env, "db", "maintain")          # the summary, so that status takes its usual path
    report = {"urls": args.urls, "no_regions": {"ours_s": [], "baseline_s": [], "statement_s": []}}
    for _ in range(args.repeat):
        report["no_regions"]["ours_s"].append(round(cli(env, "status", "--json")[0], 3))
        if args.baseline_src:
            report["no_regions"]["baseline_s"].append(round(cli(env, "status", "--json", tree=args.baseline_src)[0], 3))
        report["no_regions"]["statement_s"].append(_statement(dsn)[0])
    cur.execute("UPDATE url SET regions = '{a,b,c}' WHERE id <= %s", (args.regioned,))
    cur.execute("""INSERT INTO url_region_state (url_id, region, state, since, fail_streak, last_error_kind, last_error)
                   SELECT id, r, CASE WHEN r = 'a' AND id %% 10 = 0 THEN 'down' ELSE 'up' END, now(),
                          CASE WHEN r = 'a' AND id %% 10 = 0 THEN 3 ELSE 0 END, 'connect', 'connection refused'
                   FROM url, unnest(regions) r WHERE id <= %s""", (args.regioned,))
    cur.execute("INSERT INTO region_host VALUES ('h:n:1', 'a', now()), ('h:n:2', 'b', now()), ('h:n:3', 'c', now())")
    cur.execute("VACUUM ANALYZE url, url_region_state")
    with_regions = {"regioned": args.regioned, "ours_s": [], "statement_s": []}
    for _ in range(args.repeat):
        with_regions["ours_s"].append(round(cli(env, "status", "--json")[0], 3))
        seconds, found = _statement(dsn)
        assert found == args.regioned, found
        with_regions["statement_s"].append(seconds)
    report["with_regions"] = with_regions
    for part in (report["no_regions"], with_regions):
        for key in [k for k in part if k.endswith("_s") and part[k]]:
            part[key.replace("_s", "_median_s")] = statistics.median(part[key])
    return report


if __name__ == "__main__":
    main()
