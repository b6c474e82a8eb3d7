"""What maintenance windows cost the uptime counts (issue 22). Run under the exclusive lock:

    flock /work/bench.lock python bench/maintenance_windows.py --urls 100000 --repeat 3

A fresh database with N URLs at a 60 s period and one complete hour of raw results (N x 60
rows, bench/history.py's layout). Times, alternating, with no window and with one window
covering every URL from the start of that hour for two hours (a glob `http://*`, the worst
case: every row read is joined to a multirange and tested, and every URL shows maintenance):

* rolling up that hour (history.rollup.recompute_hours: the rollup_stage_slice statements
  join maintenance_ranges);
* `sitewatch status --json` on all URLs (the raw rows after the summary join it; the state
  column looks up the windows in force once).

With --baseline-sql FILE (a history/queries.sql from before windows, e.g. `git show
0babb9b:sitewatch/history/queries.sql > /tmp/q.sql`), a third case, "before", rolls up with
that file's rollup_stage_slice and no window: what the join costs when no window exists.

Prints one JSON object. The result path (complete_tasks, alert_apply_results) is not
changed by windows and is not measured here.
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
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline-sql", help="a history/queries.sql from before windows (case \"before\")")
    args = parser.parse_args()
    dsn = create_database(args.dsn, f"sitewatch_mwbench_{os.getpid()}")
    try:
        print(json.dumps(measure(args, dsn), indent=2))
    finally:
        drop_database(args.dsn, dsn)


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
    cur.execute("VACUUM ANALYZE task_result")
    cli(env, "db", "maintain")          # the summary, so that status takes its usual path
    window_start = (final - _hours(1)).strftime("%Y-%m-%d %H:%M")

    from sitewatch.db.store import load_queries
    from sitewatch.history import histogram, rollup
    ours = rollup.QUERIES["rollup_stage_slice"]
    before = None
    if args.baseline_sql:
        import pathlib
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:      # the loader reads a package's file
            pkg = pathlib.Path(tmp, "baseline_sql")
            pkg.mkdir()
            (pkg / "__init__.py").write_text("")
            (pkg / "queries.sql").write_text(pathlib.Path(args.baseline_sql).read_text())
            sys.path.insert(0, tmp)
            before = load_queries("baseline_sql")["rollup_stage_slice"].replace(
                "{bucket}", histogram.BUCKET_SQL.format(rt="response_time_ms"))

    def rollup_s() -> float:
        t0 = time.monotonic()
        with conn.cursor() as c:
            rollup.recompute_hours(c, final - _hours(1), final)
        return time.monotonic() - t0

    def status_s() -> float:
        return cli(env, "status", "--json")[0]

    cases = ("none", "all_urls") + (("before",) if before else ())
    timings = {case: {"rollup_s": [], "status_s": []} for case in cases}
    for _ in range(args.repeat):
        for case in cases:
            rollup.QUERIES["rollup_stage_slice"] = before if case == "before" else ours
            cur.execute("DELETE FROM maintenance; DELETE FROM silence")
            if case == "all_urls":
                cli(env, "maintenance", "add", "http://*", "--start", window_start, "--duration", "2h")
            timings[case]["rollup_s"].append(round(rollup_s(), 3))
            timings[case]["status_s"].append(round(status_s(), 3))
    report = {"urls": args.urls, "raw_rows": scalar(cur, "SELECT count(*) FROM task_result"),
              **{case: {k: {"runs": v, "median": statistics.median(v)} for k, v in t.items()}
                 for case, t in timings.items()}}
    conn.close()
    return report


if __name__ == "__main__":
    main()
