"""Benchmarks of the history subsystem (issue 9). Run under the shared lock:

    flock /work/bench.lock python bench/history.py synthetic --urls 100000
    flock /work/bench.lock python bench/history.py throughput --urls 5000 --duration 60 --rounds 2
    flock /work/bench.lock python bench/history.py synthetic --urls 100000 --keep   # then status/profile:
    flock /work/bench.lock python bench/history.py profile --existing postgresql://.../sitewatch_hbench_keep
    flock /work/bench.lock python bench/history.py status --existing postgresql://.../sitewatch_hbench_keep \
        --repeat 3 --python-path           # or --baseline-src DIR: e.g. `git archive ee2b596 | tar -x -C DIR`
    flock /work/bench.lock python bench/history.py adds --existing postgresql://.../sitewatch_hbench_keep --repeat 5 \
        [--baseline-src DIR]

synthetic: a fresh database with N URLs at a 60 s period, one complete hour of raw results
(N x 60 rows) plus the raw rows of the current hour, 30 days of daily and 24 h of hourly
rollups (synthetic, from generate_series). Measures the maintenance job rolling up that hour
(its share of one core at that rate), an idle job run, bytes per stored result and per
URL-day of rollups, and `sitewatch status` (all URLs, JSON and table).

throughput: saturated `sitewatch run` (N URLs at a 1 s period against a local nginx) on the
layout before this change (plain task_result with a surrogate id and a UNIQUE index, the job
off) and after it (partitioned, the job every 10 s), alternating, in one run; checks/s of each.
"""

import argparse
import datetime
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import psycopg2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from targets import FastTarget  # noqa: E402
from throughput import SITEWATCH, create_database, drop_database  # noqa: E402

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def env_for(dsn, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SITEWATCH_")
           and k not in ("DB_DSN", "MIN_PERIOD", "MAX_PERIOD", "HTTP_REQUEST_TIMEOUT")}
    env.update({"DB_DSN": dsn, "SITEWATCH_LOG__FORMAT": "json", "MIN_PERIOD": "1"})
    env.update({k: str(v) for k, v in extra.items()})
    return env


def cli(env, *argv, tree: str | None = None) -> tuple[float, str]:
    """Run `sitewatch ARGV`: (seconds, stdout). With `tree`, that source tree's code (run from
    it: `python -m` puts the working directory first on the path, before PYTHONPATH)."""
    if tree is not None:
        env = {**env, "PYTHONPATH": tree}
    t0 = time.monotonic()
    out = subprocess.run([*SITEWATCH, *argv], env=env, capture_output=True, text=True, cwd=tree)
    if out.returncode != 0:
        raise SystemExit(f"sitewatch {' '.join(argv)} failed: {out.stderr.strip()[-2000:]}")
    return time.monotonic() - t0, out.stdout


def scalar(cur, sql, params=None):
    cur.execute(sql, params)
    return cur.fetchone()[0]


def synthetic(args) -> dict:
    dsn = create_database(args.dsn, "sitewatch_hbench_keep" if args.keep else f"sitewatch_hbench_{os.getpid()}")
    report = {"urls": args.urls}
    try:
        env = env_for(dsn)
        cli(env, "db", "migrate")
        conn = psycopg2.connect(dsn)
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("INSERT INTO url (url, period, timeout, next_check_at, created_at)"
                    " SELECT 'http://site' || g || '.example/', 60, 5, now() + interval '1 hour',"
                    " now() - interval '31 days' FROM generate_series(1, %s) g", (args.urls,))
        final = scalar(cur, "SELECT date_trunc('hour', now() - interval '300 s', 'UTC')")
        now = scalar(cur, "SELECT now()")
        # One complete hour for the job, then the raw rows after it (what `status` reads raw).
        t0 = time.monotonic()
        for start, end in ((final - _hours(1), final), (final, now)):
            _insert_raw(cur, args.urls, start, end)
        report["raw_insert_s"] = round(time.monotonic() - t0, 1)
        raw_rows = scalar(cur, "SELECT count(*) FROM task_result")
        cur.execute("VACUUM ANALYZE task_result")
        raw_bytes = scalar(cur, "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits"
                                " WHERE inhparent = 'task_result'::regclass")
        report["raw_rows"] = raw_rows
        report["bytes_per_result"] = round(float(raw_bytes) / raw_rows, 1)

        # The job rolling up that hour (CPU of this process and of its PostgreSQL backend).
        from sitewatch import config
        from sitewatch.history import maintenance
        cfg = config.load({}, {}, None)
        job = psycopg2.connect(dsn)
        backend = job.get_backend_pid()
        runs = []
        for _ in range(2):
            c0, b0, w0 = time.process_time(), _backend_cpu(backend), time.monotonic()
            summary = maintenance.run_once(job, cfg)
            runs.append({"wall_s": round(time.monotonic() - w0, 3),
                         "cpu_s": round(time.process_time() - c0 + _backend_cpu(backend) - b0, 3),
                         "hours_rolled_up": summary["hours_rolled_up"], "hour_rows": summary["hour_rows"]})
        report["job_run_rolling_up_one_hour"] = runs[0]
        report["job_run_idle"] = runs[1]
        hourly = runs[0]["cpu_s"] + 59 * runs[1]["cpu_s"]
        report["job_cpu_percent_of_one_core"] = round(100 * hourly / 3600, 3)

        # 30 days of daily rollups and the 23 other hours of the last 24 h (synthetic histograms:
        # 8 busy buckets around 40-200 ms).
        t0 = time.monotonic()
        cur.execute("""
            INSERT INTO rollup_hour (url_id, bucket, checks, ok, failed, non_2xx, rt_count, rt_sum, rt_min, rt_max,
                                     rt_hist, cert_days_min)
            SELECT u, b, 60, 59, 1, 1, 60, 6000, 20, 320,
                   array_fill(0, ARRAY[38]) || ARRAY[2, 5, 12, 16, 12, 8, 3, 2], 60
            FROM generate_series(1, %s) u, generate_series(%s::timestamptz - interval '24 hours',
                                                           %s::timestamptz - interval '2 hours', interval '1 hour') b
            ON CONFLICT DO NOTHING""", (args.urls, final, final))
        cur.execute("""
            INSERT INTO rollup_day (url_id, bucket, checks, ok, failed, non_2xx, rt_count, rt_sum, rt_min, rt_max,
                                    rt_hist, cert_days_min)
            SELECT u, d, 1440, 1438, 2, 2, 1440, 144000, 20, 320,
                   array_fill(0, ARRAY[38]) || ARRAY[48, 120, 288, 384, 288, 192, 72, 48], 60
            FROM generate_series(1, %s) u,
                 generate_series(date_trunc('day', %s::timestamptz, 'UTC') - interval '30 days',
                                 date_trunc('day', %s::timestamptz, 'UTC') - interval '1 day', interval '1 day') d
            ON CONFLICT DO NOTHING""", (args.urls, final, final))
        cur.execute("UPDATE rollup_watermark SET done_until = date_trunc('day', %s::timestamptz, 'UTC')"
                    " WHERE level = 'day'", (final,))
        report["rollup_insert_s"] = round(time.monotonic() - t0, 1)
        cur.execute("VACUUM ANALYZE rollup_hour")
        cur.execute("VACUUM ANALYZE rollup_day")
        per_hour_row = scalar(cur, "SELECT pg_total_relation_size('rollup_hour')::float8 / count(*) FROM rollup_hour")
        per_day_row = scalar(cur, "SELECT pg_total_relation_size('rollup_day')::float8 / count(*) FROM rollup_day")
        report["bytes_per_rollup_hour_row"] = round(per_hour_row, 1)
        report["bytes_per_rollup_day_row"] = round(per_day_row, 1)
        report["bytes_per_url_day_of_rollups"] = round(24 * per_hour_row + per_day_row, 1)
        report["bytes_per_url_day_raw_at_60s"] = round(1440 * float(raw_bytes) / raw_rows, 1)

        # The uptime summary over those rollups: built once an hour (when the hourly watermark
        # moves), and between builds the job adds the raw rows that became complete, every
        # minutes_per_add() minutes (the job running every 60 s).
        cur.execute("DELETE FROM uptime_summary_state")
        grace = maintenance.grace_for(job, cfg)
        minutes = minutes_per_add()
        # Built far enough back that the three additions below stay behind the clock.
        report["summary_build"] = _summary_step(job, backend, cur, args.urls, grace + 3 * 60 * minutes)
        _clear_after_until(cur)
        adds = [_summary_step(job, backend, cur, args.urls, minutes=minutes) for _ in range(3)]
        report["summary_add"] = {"minutes_per_add": minutes, "adds_per_hour": 60 // minutes, "runs": adds}
        cur.execute("VACUUM ANALYZE uptime_summary")
        add_cpu = statistics.median(a["cpu_s"] for a in adds)
        hourly += report["summary_build"]["cpu_s"] + 60 // minutes * add_cpu
        report["job_cpu_percent_of_one_core_with_summary"] = round(100 * hourly / 3600, 3)

        if args.keep:
            return report
        timings = {"json": [], "table": []}
        for _ in range(args.repeat):
            timings["json"].append(cli(env, "status", "--json")[0])
            timings["table"].append(cli(env, "status")[0])
        _, out = cli(env, "status", "--json")
        report["status_rows"] = len(json.loads(out))
        report["status_s"] = {k: {"median": round(statistics.median(v), 2), "all": [round(x, 2) for x in v]}
                              for k, v in timings.items()}
        report["status_one_url_s"] = round(cli(env, "status", "http://site1.example/")[0], 2)
        job.close()
        conn.close()
    finally:
        if args.keep:
            print(f"kept: {dsn}", file=sys.stderr)
        else:
            drop_database(args.dsn, dsn)
    return report


def minutes_per_add(add_every_s: float | None = None) -> int:
    """Minutes of results each addition to the summary covers, the job running every 60 s:
    summary.ADD_EVERY (or add_every_s) rounded up to whole runs."""
    if add_every_s is None:
        from sitewatch.history import summary
        add_every_s = summary.ADD_EVERY.total_seconds()
    return max(1, math.ceil(add_every_s / 60))


def _summary_step(job, backend: int, cur, urls: int, grace_s: float | None = None, minutes: int = 1) -> dict:
    """CPU (this process and the job's backend) of a summary build (grace_s given) or of the
    addition of `minutes` minutes of results, each with the VACUUM that follows it in the job."""
    from sitewatch.history import maintenance
    from sitewatch.history import summary as uptime_summary
    if grace_s is None:
        # Minutes of results after the summary's `until`, and the bound placed just after
        # them, as the job adds them.
        _write_next_minutes(cur, urls, minutes)
        grace_s = (scalar(cur, "SELECT now()") - scalar(cur, "SELECT until FROM uptime_summary_state")
                   ).total_seconds() - 60 * minutes
    with job.cursor() as set_cur:       # as maintenance.run_once sets it for the whole run
        set_cur.execute("SET work_mem = %s", (maintenance.WORK_MEM,))
    job.commit()
    c0, b0, w0 = time.process_time(), _backend_cpu(backend), time.monotonic()
    done = uptime_summary.refresh(job, grace_s, datetime.timedelta(0))
    c1, b1 = time.process_time(), _backend_cpu(backend)
    job.autocommit = True           # and the VACUUM that follows it in the job
    uptime_summary.vacuum(job)
    job.autocommit = False
    done["vacuum_cpu_s"] = round(time.process_time() - c1 + _backend_cpu(backend) - b1, 3)
    return {"wall_s": round(time.monotonic() - w0, 3),
            "cpu_s": round(time.process_time() - c0 + _backend_cpu(backend) - b0, 3), **done}


def summary_adds(args) -> dict:
    """The job's addition to the summary (minutes_per_add() minutes of results each),
    --repeat times in a row, on an existing database (one kept by `synthetic --keep`, its
    summary built). With --baseline-src, each addition of this tree alternates with one of
    that tree (as many minutes as it adds at a time), each run in its own process (its CPU
    and its backend's, as _summary_step counts them), each on fresh minutes; compared per
    hour of the job (additions an hour x CPU each)."""
    conn = psycopg2.connect(args.existing)
    conn.autocommit = True
    urls = scalar(conn.cursor(), "SELECT count(*) FROM url")
    # Each addition moves `until` on by its minutes, past the clock after a while: keep the
    # URLs' next slots (which bound it) out of the way.
    conn.cursor().execute("UPDATE url SET next_check_at = now() + interval '1 day'")
    _clear_after_until(conn.cursor())
    if not args.baseline_src:
        job = psycopg2.connect(args.existing)
        backend = job.get_backend_pid()
        minutes = minutes_per_add()
        adds = [_summary_step(job, backend, conn.cursor(), urls, minutes=minutes) for _ in range(args.repeat)]
        median = statistics.median(a["cpu_s"] for a in adds)
        return {"urls": urls, "minutes_per_add": minutes, "summary_add": adds, "median_cpu_s": median,
                "cpu_s_per_hour": round(60 // minutes * median, 1)}
    trees = {"this": os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
             "baseline": os.path.abspath(args.baseline_src)}
    for tree in trees.values():
        _check_tree(tree)
    minutes = {name: _minutes_per_add_in(tree) for name, tree in trees.items()}
    adds = {name: [] for name in trees}
    for _ in range(args.repeat):
        for name, tree in trees.items():
            _write_next_minutes(conn.cursor(), urls, minutes[name])
            adds[name].append(_timed_add_in(tree, args.existing, minutes[name]))
    medians = {name: statistics.median(a["cpu_s"] for a in runs) for name, runs in adds.items()}
    per_hour = {name: round(60 // minutes[name] * medians[name], 1) for name in trees}
    return {"urls": urls, "minutes_per_add": minutes, "summary_add": adds, "median_cpu_s": medians,
            "cpu_s_per_hour": per_hour, "per_hour_vs_baseline": round(per_hour["this"] / per_hour["baseline"], 3)}


# One addition of sys.argv[2] minutes, timed in a process running the sitewatch of the tree
# on PYTHONPATH.
_TIMED_ADD = """
import datetime, json, sys, time
import psycopg2
from sitewatch.history import maintenance, summary

def backend_cpu(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100

job = psycopg2.connect(sys.argv[1])
pid = job.get_backend_pid()
with job.cursor() as cur:
    cur.execute("SET work_mem = %s", (getattr(maintenance, "WORK_MEM", "4MB"),))
    cur.execute("SELECT until FROM uptime_summary_state")
    until = cur.fetchone()[0]
    cur.execute("SELECT extract(epoch FROM now() - %s)", (until,))
    grace_s = float(cur.fetchone()[0]) - 60 * int(sys.argv[2])
job.commit()
c0, b0, w0 = time.process_time(), backend_cpu(pid), time.monotonic()
done = summary.refresh(job, grace_s, **({"add_every": datetime.timedelta(0)} if hasattr(summary, "ADD_EVERY") else {}))
job.autocommit = True
summary.vacuum(job)
done.update(wall_s=round(time.monotonic() - w0, 3),
            cpu_s=round(time.process_time() - c0 + backend_cpu(pid) - b0, 3))
print(json.dumps(done))
"""


def _minutes_per_add_in(tree: str) -> int:
    """minutes_per_add() of that tree's code (one that has no ADD_EVERY added every run)."""
    out = subprocess.run([sys.executable, "-c", "import datetime; from sitewatch.history import summary;"
                          " print(getattr(summary, 'ADD_EVERY', datetime.timedelta(0)).total_seconds())"],
                         env={**os.environ, "PYTHONPATH": tree}, cwd=tree, capture_output=True, text=True,
                         check=True)
    return minutes_per_add(float(out.stdout))


def _timed_add_in(tree: str, dsn: str, minutes: int) -> dict:
    env = {**os.environ, "PYTHONPATH": tree}
    # Run from the tree: `python -c` puts the working directory first on the path.
    out = subprocess.run([sys.executable, "-c", _TIMED_ADD, dsn, str(minutes)], env=env, cwd=tree,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"the addition from {tree} failed: {out.stderr.strip()[-2000:]}")
    done = json.loads(out.stdout)
    if done.get("summary") != "added":
        raise SystemExit(f"the addition from {tree} did not add: {done}")
    return done


def _clear_after_until(cur) -> None:
    """Delete the raw rows after the summary's `until` (`cur` in autocommit), so that each
    timed addition reads one result per URL a minute, the ones it writes: the synthetic
    rows are at other seconds of the minute and would double them."""
    cur.execute("DELETE FROM task_result WHERE scheduled_at >= (SELECT until FROM uptime_summary_state)")
    cur.execute("VACUUM task_result")


def _write_next_minutes(cur, urls: int, minutes: int) -> None:
    """One result a minute per URL in the minutes after the summary's `until`, as sitewatch
    writes them."""
    until = scalar(cur, "SELECT until FROM uptime_summary_state")
    _insert_raw(cur, urls, until, until + datetime.timedelta(seconds=60 * minutes + 1))


def _insert_raw(cur, urls: int, start, end) -> None:
    """One result a minute for URLs 1..urls in [start, end - 1 min]; 1 in 500 failed. In time
    order, as sitewatch writes them (the BRIN index on scheduled_at relies on it)."""
    cur.execute("""
        INSERT INTO task_result (url_id, scheduled_at, started_at, response_time_ms, status_code, ok,
                                 error_kind, error, cert_days_left, checked_by)
        SELECT u, t + (u %% 60) * interval '1 s', t, 20 + (u * 7 + extract(minute FROM t)::int) %% 300,
               CASE WHEN (u + extract(minute FROM t)::int) %% 500 = 0 THEN 503 ELSE 200 END,
               (u + extract(minute FROM t)::int) %% 500 <> 0,
               CASE WHEN (u + extract(minute FROM t)::int) %% 500 = 0 THEN 'status' END,
               CASE WHEN (u + extract(minute FROM t)::int) %% 500 = 0 THEN 'status 503' END,
               60, 'bench/host:consumer-1:12345'
        FROM generate_series(1, %s) u,
             generate_series(%s::timestamptz, %s::timestamptz - interval '61 s', interval '60 s') t
        ORDER BY t, u
        ON CONFLICT DO NOTHING""", (urls, start, end))


def status_timing(args) -> dict:
    """Time `sitewatch status` on an existing database (one kept by `synthetic --keep`)."""
    from sitewatch import config
    from sitewatch.history import maintenance
    from sitewatch.history import summary as uptime_summary
    env = env_for(args.existing)
    conn = psycopg2.connect(args.existing)
    if args.baseline_src:
        _check_tree(args.baseline_src)
    with conn.cursor() as cur:
        # The last minutes are written again below, one result per URL a minute: rows there
        # from earlier runs (at other seconds of the minute), or in the future (`adds` moves
        # the summary's `until` past the clock and writes rows there), would sit in every
        # reader's raw tail.
        cur.execute("DELETE FROM task_result WHERE scheduled_at >= now() - interval '3 minutes'")
        # No producer runs here: with the URLs' next slots in the past, the completeness bound
        # (and the summary's `until`) would stay there while raw rows pile up after it.
        cur.execute("UPDATE url SET next_check_at = now() + interval '1 day'")
        conn.commit()
        conn.autocommit = True
        cur.execute("VACUUM ANALYZE url")
        conn.autocommit = False
        # The synthetic rows stop when they were made: add results for the last minutes (so
        # that every URL's latest result is recent, as when sitewatch is running).
        now = scalar(cur, "SELECT now()")
        _insert_raw(cur, scalar(cur, "SELECT count(*) FROM url"), now - datetime.timedelta(minutes=3),
                    now + datetime.timedelta(seconds=1))
        conn.commit()
        # The job as it runs every minute: hours rolled up to the last complete one (else the
        # readers would subtract the hours the windows have left since: see summary.py).
        maintenance.run_once(conn, config.load({}, {}, None))
        cur.execute("DELETE FROM uptime_summary_state")
        conn.commit()
        t0 = time.monotonic()
        built = uptime_summary.refresh(conn)      # as the job builds it: `until` GRACE_S ago
        built["wall_s"] = round(time.monotonic() - t0, 1)
        urls = scalar(cur, "SELECT count(*) FROM url")
        raw = scalar(cur, "SELECT count(*) FROM task_result WHERE scheduled_at >="
                          " (SELECT done_until FROM rollup_watermark WHERE level = 'hour')")
        hours = scalar(cur, "SELECT count(*) FROM rollup_hour")
        days = scalar(cur, "SELECT count(*) FROM rollup_day")
    cur = conn.cursor()
    forms = ["json", "table"]
    if args.baseline_src:
        # The same command from another checkout (e.g. `git archive ee2b596 | tar -x -C DIR`),
        # on the same data at the same moment: a ratio measured in one run.
        forms.append("json_baseline")
    if args.python_path:
        # The figures computed in Python (status_rows: the code before status_lines, still
        # what status runs while the summary is not current), on the same data.
        forms.append("json_python_path")
    # As while sitewatch runs: every minute, one result per URL (status reads each URL's
    # latest one from the last few minutes), then the job. The forms are timed just before
    # the job's run, when the raw tail after the summary's `until` is longest: the job adds
    # every other run, so the iterations alternate between the tail left by an addition one
    # run ago (about GRACE_S + 1 minute) and by one two runs ago (GRACE_S + 2 minutes, the
    # most readers see). Each phase gets `repeat` iterations; the forms' order is reversed
    # every other pair, so no form always comes first.
    timed = {phase: {form: [] for form in forms} for phase in ("one_run_after_addition", "two_runs_after_addition")}
    tails = {phase: [] for phase in timed}
    written_until = now + datetime.timedelta(seconds=1)
    last = built["summary"]
    for i in range(2 * args.repeat):
        time.sleep(max(0.0, (written_until + datetime.timedelta(seconds=61) - scalar(cur, "SELECT now()"))
                       .total_seconds()))
        _insert_raw(cur, urls, written_until, written_until + datetime.timedelta(seconds=61))
        written_until += datetime.timedelta(seconds=60)
        conn.commit()
        phase = "one_run_after_addition" if last in ("built", "added") else "two_runs_after_addition"
        tails[phase].append(scalar(cur, "SELECT count(*) FROM task_result"
                                        " WHERE scheduled_at >= (SELECT until FROM uptime_summary_state)"))
        conn.commit()
        for form in (forms if (i // 2) % 2 == 0 else forms[::-1]):
            if form == "json_python_path":
                timed[phase][form].append(_timed_python_path(env))
                continue
            timed[phase][form].append(cli(env, "status", *([] if form == "table" else ["--json"]),
                                          tree=os.path.abspath(args.baseline_src) if form == "json_baseline"
                                          else None)[0])
        last = maintenance.run_once(conn, config.load({}, {}, None))["summary"]
    conn.close()
    everything = {form: [t for phase in timed.values() for t in phase[form]] for form in forms}
    return {"urls": urls, "raw_rows_after_hour_watermark": raw, "rollup_hour_rows": hours, "rollup_day_rows": days,
            "summary": built, "raw_rows_after_summary": tails,
            "status_s": {phase: {form: {"median": round(statistics.median(v), 2), "all": [round(x, 2) for x in v]}
                                 for form, v in by_form.items() if v}
                         for phase, by_form in timed.items()},
            "status_s_median_of_all": {form: round(statistics.median(v), 2) for form, v in everything.items()},
            "status_one_url_s": round(cli(env, "status", "http://site1.example/")[0], 2),
            **({"json_time_vs_baseline": round(statistics.median(everything["json"])
                                               / statistics.median(everything["json_baseline"]), 3)}
               if args.baseline_src else {}),
            **({"json_time_vs_python_path": round(statistics.median(everything["json"])
                                                  / statistics.median(everything["json_python_path"]), 3)}
               if args.python_path else {})}


def _check_tree(tree: str) -> None:
    """Refuse a tree whose code is not what a process started in it with it on PYTHONPATH
    runs (cli(..., tree=), _timed_add_in)."""
    out = subprocess.run([sys.executable, "-c", "import os, sitewatch; print(os.path.realpath(sitewatch.__file__))"],
                         env={**os.environ, "PYTHONPATH": tree}, cwd=tree, capture_output=True, text=True, check=True)
    if not out.stdout.strip().startswith(os.path.realpath(tree) + os.sep):
        raise SystemExit(f"--baseline-src {tree}: its sitewatch is not the one imported ({out.stdout.strip()})")


_PYTHON_PATH = """
import gc, os, psycopg2
from sitewatch.history import report
gc.disable()
conn = psycopg2.connect(os.environ["DB_DSN"])
report.configure_session(conn)
rows = report.status_rows(conn, None, lambda: psycopg2.connect(os.environ["DB_DSN"]))
report.print_status_lines(conn, report.lines_of(rows, True), True)
"""


def _timed_python_path(env) -> float:
    """`status --json` as the CLI runs it, with the figures computed in Python."""
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", _PYTHON_PATH], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"the Python path failed: {out.stderr.strip()[-2000:]}")
    return time.monotonic() - t0


def status_profile(args) -> dict:
    """Time each piece of `status` alone on an existing database (where the time goes)."""
    from sitewatch.history import uptime
    from sitewatch.history.rollup import QUERIES
    conn = psycopg2.connect(args.existing)
    cur = conn.cursor()
    cur.execute("SET statement_timeout = 0")
    out = {}

    def timed(name, fn):
        t0 = time.monotonic()
        value = fn()
        out[name] = round(time.monotonic() - t0, 2)
        return value
    def list_urls():
        cur.execute("SELECT id FROM url ORDER BY url")
        return [row[0] for row in cur.fetchall()]
    ids = timed("list_urls_s", list_urls)
    for source, use_summary in (("summary", True), ("direct", False)):
        timed(f"{source}_window_counts_24h_7d_30d_s",
              lambda u=use_summary: uptime.for_urls(conn, ids, ("24h", "7d", "30d"), p95=False, all_urls=True,
                                                    use_summary=u))
        timed(f"{source}_counts_24h_and_p95_s",
              lambda u=use_summary: uptime.for_urls(conn, ids, ("24h",), p95=True, all_urls=True, use_summary=u))

    def latest():
        cur.execute(QUERIES["latest_results"], {"ids": ids})
        return {row[0]: row[1:] for row in cur.fetchall()}
    timed("latest_result_s", latest)
    conn.close()
    return out


def _hours(n):
    import datetime
    return datetime.timedelta(hours=n)


def _backend_cpu(pid: int) -> float:
    import psutil
    try:
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except psutil.Error:
        return 0.0


PLAIN_TASK_RESULT = """
ALTER TABLE task_result RENAME TO task_result_partitioned;
CREATE TABLE task_result (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                          LIKE task_result_partitioned INCLUDING DEFAULTS,
                          UNIQUE (url_id, scheduled_at));
"""


def throughput(args) -> dict:
    target = FastTarget(workers=1).start()
    workdir = tempfile.mkdtemp(prefix="sitewatch-hbench-")
    urls_file = os.path.join(workdir, "urls.txt")
    with open(urls_file, "w") as f:
        for i in range(args.urls):
            f.write(f"http://127.0.0.1:{target.port}/u/{i}\n")
    results = {"plain (before)": [], "partitioned + job": []}
    try:
        for round_no in range(args.rounds):
            for variant in results:
                dsn = create_database(args.dsn, f"sitewatch_hbench_{os.getpid()}_{round_no}")
                try:
                    interval = 86400 if variant.startswith("plain") else 10
                    env = env_for(dsn, SITEWATCH_CHECK__DEFAULT_PERIOD=1, SITEWATCH_HISTORY__INTERVAL=interval)
                    cli(env, "db", "migrate")
                    if variant.startswith("plain"):
                        conn = psycopg2.connect(dsn)
                        with conn, conn.cursor() as cur:
                            cur.execute(PLAIN_TASK_RESULT)
                        conn.close()
                    cli(env, "url", "import", urls_file)
                    results[variant].append(_saturated_run(env, dsn, args))
                finally:
                    drop_database(args.dsn, dsn)
    finally:
        target.stop()
    report = {"urls": args.urls, "period_s": 1, "duration_s": args.duration, "rounds": args.rounds,
              "checks_per_s": results}
    means = {k: statistics.mean(v) for k, v in results.items()}
    report["ratio_partitioned_to_plain"] = round(means["partitioned + job"] / means["plain (before)"], 3)
    return report


def _saturated_run(env, dsn, args) -> float:
    log = open(os.devnull, "w")
    run = subprocess.Popen([*SITEWATCH, "run"], env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        time.sleep(args.warmup)
        conn = psycopg2.connect(dsn)
        conn.autocommit = True
        cur = conn.cursor()
        t0, n0 = scalar(cur, "SELECT now()"), scalar(cur, "SELECT count(*) FROM task_result")
        time.sleep(args.duration)
        t1, n1 = scalar(cur, "SELECT now()"), scalar(cur, "SELECT count(*) FROM task_result")
        conn.close()
        return round((n1 - n0) / (t1 - t0).total_seconds(), 1)
    finally:
        os.killpg(run.pid, signal.SIGTERM)
        try:
            run.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
        log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["synthetic", "throughput", "status", "profile", "adds"])
    parser.add_argument("--existing", help="status, profile, adds: DSN of a database kept by `synthetic --keep`")
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="PostgreSQL server to create fresh databases on")
    parser.add_argument("--urls", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true", help="synthetic: keep the database, skip `status`")
    parser.add_argument("--repeat", type=int, default=3,
                        help="synthetic: `status` runs timed; status: the same in each phase of the job;"
                             " adds: additions")
    parser.add_argument("--baseline-src", help="status: also time `status --json` from this source tree, alternating;"
                                               " adds: also time that tree's addition, alternating")
    parser.add_argument("--python-path", action="store_true",
                        help="status: also time `status --json` with the figures computed in Python, alternating")
    parser.add_argument("--duration", type=float, default=60, help="throughput: measured seconds per run")
    parser.add_argument("--warmup", type=float, default=15, help="throughput: seconds before measuring")
    parser.add_argument("--rounds", type=int, default=2, help="throughput: before/after pairs, alternating")
    args = parser.parse_args()
    modes = {"synthetic": synthetic, "throughput": throughput, "status": status_timing, "profile": status_profile,
             "adds": summary_adds}
    report = modes[args.mode](args)
    print(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
