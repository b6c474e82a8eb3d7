"""Regions on one machine (issue 21): three `sitewatch run`, regions a, b and c, each checking
from its own source address (127.0.0.2, .3, .4), against one PostgreSQL, 30,000 URLs every
60 s each listing `regions: [a, b, c]`; and, for the comparison, --no-regions: one
`sitewatch run`, no region, the same URLs without `regions`.

Reported per minute (by the slots' scheduled_at, from the runs' start):

* per region: checks recorded and lag p99 (started_at - scheduled_at), over every URL;
* the database's CPU per result: the CPU of the backends connected to the bench's database
  (pg_stat_activity, read from /proc/PID/stat every second, as bench/history.py reads the
  job's backend), and with the embedded server also the whole server's (postmaster, WAL
  writer, checkpointer, autovacuum...), in ms per recorded result.

The target is nginx with the echo module's echo_sleep (bench/targets.py DelayTarget), answering
after the soak's latency mix (0.1 s to 3 s). Only 127.0.0.x is contacted.

    python bench/regions.py                                   # 3 regions, embedded PostgreSQL 18
    python bench/regions.py --no-regions                      # the comparison: one host, no regions
    python bench/regions.py --dsn postgresql://postgres@127.0.0.1:5432/postgres   # PostgreSQL 15
    python bench/regions.py --no-regions --urls 2000 --duration 120   # the mechanics, quickly
    python bench/regions.py --outage-at 150 --duration 360    # region a cut off from every site at 150 s

--outage-at S: from S seconds on, the target answers 403 to region a's source address (nginx
reloaded with `deny 127.0.0.2`): every URL fails in a, and each first failure asks the present
regions for a confirmation check (regions/confirm.py). The report then also gives, per minute
and region, the checks off the URLs' slot grid (the confirmations) and the notices queued:
what the confirmations cost b and c (their lag), and that nobody is told the sites are down.

A result's region is read from task_result.region when the column exists (the regions
issue's migration); without it every result counts under region ''.
"""

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import psycopg2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from targets import DelayTarget  # noqa: E402
from throughput import LATENCY_MIX, SITEWATCH, create_database, drop_database, sitewatch, tree  # noqa: E402

from sitewatch.db import embedded  # noqa: E402

REGIONS = ("a", "b", "c")
SOURCES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
SAMPLE_S = 1.0
STOP_TIMEOUT = 60.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def run_env(dsn: str, region: str | None, source: str | None, args) -> dict:
    """One run's environment: nothing inherited that configures sitewatch; JSON logs, no web
    child, the period's bounds, a small consumer; its region and source address."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SITEWATCH_")
           and k not in ("DB_DSN", "MIN_PERIOD", "MAX_PERIOD", "HTTP_REQUEST_TIMEOUT")}
    env.update({
        "DB_DSN": dsn,
        "SITEWATCH_LOG__FORMAT": "json",
        "SITEWATCH_WEB__LISTEN": "",
        "SITEWATCH_METRICS__LISTEN": "127.0.0.1:0",      # three runs: a port each
        "SITEWATCH_CONSUMER__PROCESSES": str(args.consumers),
    })
    if region is not None:
        env["SITEWATCH_REGION"] = region
    if source is not None:
        env["SITEWATCH_CHECK__SOURCE_ADDRESS"] = source
    env.update(dict(setting.split("=", 1) for setting in args.set))
    return env


def write_import(path: str, delay: DelayTarget, urls: int, period: int, regions) -> None:
    """The `url import` file: one entry per URL, the latency mix's delays, `regions` when given."""
    parts = sum(p for _, p in LATENCY_MIX)
    counts = [urls * p // parts for _, p in LATENCY_MIX]
    counts[0] += urls - sum(counts)
    listed = json.dumps(list(regions)) if regions else None
    with open(path, "w") as f:
        for (seconds, _), count in zip(LATENCY_MIX, counts, strict=True):
            for i in range(count):
                f.write(f"- url: {json.dumps(delay.url(seconds, f'r{i}'))}\n  period: {period}\n")
                if listed:
                    f.write(f"  regions: {listed}\n")


def proc_cpu(pid: int) -> float | None:
    """utime + stime of a process, in seconds, from /proc/PID/stat; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class CpuMeter:
    """CPU per minute of a changing set of processes, by sampling each one's cumulative CPU: a
    process seen at the first sample counts from there, one that appears later from its start
    (it began after the previous sample). A process's last second before it exits is lost."""

    def __init__(self) -> None:
        self.last: dict[int, float] = {}
        self.per_minute = collections.defaultdict(float)
        self.first = True

    def sample(self, pids, minute: int) -> None:
        for pid in pids:
            now = proc_cpu(pid)
            if now is None:
                continue
            before = self.last.get(pid, now if self.first else 0.0)
            self.per_minute[minute] += max(0.0, now - before)
            self.last[pid] = now
        self.first = False


def backend_pids(conn) -> list[int]:
    """The server processes of the bench's database, but the bench's own connection."""
    with conn.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid()")
        return [pid for (pid,) in cur.fetchall()]


def server_pids(held) -> list[int]:
    """Every process of the embedded server (its postmaster and children)."""
    try:
        with open(os.path.join(held.data_dir, "postmaster.pid")) as f:
            postmaster = int(f.readline())
    except (OSError, ValueError, AttributeError):
        return []
    return [p.pid for p in tree(postmaster)]


def per_region_minute(cur, started: float, minutes: int) -> list[tuple]:
    """(minute from 1, region, checks, lag p99 s, failed) by the slots' scheduled_at."""
    cur.execute("SELECT 1 FROM information_schema.columns WHERE table_name = 'task_result'"
                " AND column_name = 'region'")
    region = "r.region" if cur.fetchone() else "''"
    cur.execute(f"""
        SELECT floor(extract(epoch FROM r.scheduled_at - to_timestamp(%(t0)s)) / 60)::int + 1 AS minute,
               {region} AS region, count(*),
               percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM r.started_at - r.scheduled_at)),
               count(*) FILTER (WHERE NOT r.ok)
        FROM task_result r
        WHERE r.scheduled_at >= to_timestamp(%(t0)s)
          AND r.scheduled_at < to_timestamp(%(t0)s) + make_interval(mins => %(n)s)
        GROUP BY 1, 2 ORDER BY 1, 2""", {"t0": started, "n": minutes})
    return cur.fetchall()


def results_per_minute(cur, started: float, minutes: int) -> dict:
    """Results recorded per minute of wall time (what the database did that minute)."""
    cur.execute("""
        SELECT floor(extract(epoch FROM recorded_at - to_timestamp(%(t0)s)) / 60)::int + 1, count(*)
        FROM task_result WHERE recorded_at >= to_timestamp(%(t0)s)
          AND recorded_at < to_timestamp(%(t0)s) + make_interval(mins => %(n)s)
        GROUP BY 1""", {"t0": started, "n": minutes})
    return dict(cur.fetchall())


def off_grid_checks(cur, started: float, minutes: int) -> list:
    """[minute, region, checks] of results whose scheduled_at is off the URL's slot grid
    (t0 + kP): confirmation checks, which are keyed by when they were asked."""
    cur.execute("""
        SELECT floor(extract(epoch FROM r.scheduled_at - to_timestamp(%(t0)s)) / 60)::int + 1, r.region, count(*)
        FROM task_result r JOIN url u ON u.id = r.url_id
        WHERE r.scheduled_at >= to_timestamp(%(t0)s)
          AND r.scheduled_at < to_timestamp(%(t0)s) + make_interval(mins => %(n)s)
          AND mod(floor(extract(epoch FROM r.scheduled_at - u.next_check_at) * 1000000)::bigint,
                  u.period::bigint * 1000000) <> 0
        GROUP BY 1, 2 ORDER BY 1, 2""", {"t0": started, "n": minutes})
    return [list(row) for row in cur.fetchall()]


def notices(cur) -> dict:
    """Incidents opened, and the notices queued in the alerts' outbox by kind (none when the
    run has no channel: the incidents still say whether anyone would have been told)."""
    cur.execute("SELECT kind, count(*) FROM alert_outbox GROUP BY 1 ORDER BY 1")
    found = dict(cur.fetchall())
    cur.execute("SELECT count(*) FROM incident")
    incidents = cur.fetchone()[0]
    cur.execute("SELECT state, count(*) FROM url_state GROUP BY 1 ORDER BY 1")
    return {"incidents": incidents, "outbox": found, "url_states": dict(cur.fetchall())}


def stop(runs) -> list:
    """SIGTERM to every run at once, then wait; SIGKILL to a group still there after STOP_TIMEOUT."""
    for proc in runs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    codes = []
    deadline = time.monotonic() + STOP_TIMEOUT
    for proc in runs:
        try:
            codes.append(proc.wait(max(0.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            codes.append(None)
        try:
            os.killpg(proc.pid, signal.SIGKILL)     # whatever is left of its group
        except (ProcessLookupError, PermissionError):
            pass
    return codes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--urls", type=int, default=30_000)
    parser.add_argument("--period", type=int, default=60)
    parser.add_argument("--duration", type=float, default=360, help="seconds of the runs")
    parser.add_argument("--no-regions", action="store_true", help="one sitewatch run, no region, no `regions`")
    parser.add_argument("--consumers", type=int, default=1, help="consumer processes per sitewatch run")
    parser.add_argument("--dsn", help="PostgreSQL server to create a fresh database on (default: embedded)")
    parser.add_argument("--set", action="append", default=[], metavar="VAR=VALUE",
                        help="extra environment for every run (repeatable)")
    parser.add_argument("--outage-at", type=float, default=None, metavar="S",
                        help="from S seconds on, region a's source address gets 403 from every site")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    if args.outage_at is not None and args.no_regions:
        parser.error("--outage-at needs regions")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))   # the cleanup below still runs
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(1))

    def say(*a):
        print(*a, file=sys.stderr, flush=True)

    workdir = tempfile.mkdtemp(prefix="sitewatch-regions-")
    delay = DelayTarget().start()
    held = meas = None
    runs = []
    finished = False        # the work directory (logs) is kept when the bench fails
    created = create_database(args.dsn, f"sitewatch_regions_{os.getpid()}") if args.dsn else None
    hosts = [(None, None)] if args.no_regions else list(zip(REGIONS, SOURCES, strict=True))
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
              "mode": "no regions (one host)" if args.no_regions else f"regions {', '.join(REGIONS)} "
              f"from {', '.join(SOURCES)}", "urls": args.urls, "period_s": args.period,
              "duration_s": args.duration, "consumers_per_run": args.consumers,
              "database": "given DSN" if args.dsn else "embedded", "target": delay.kind}
    try:
        if created:
            dsn = created
        else:
            held = embedded.start(os.path.join(workdir, "pg"))
            dsn = held.dsn
        admin_env = run_env(dsn, None, None, args)
        admin_env.update({"MIN_PERIOD": "1", "MAX_PERIOD": str(max(300, args.period))})
        import_file = os.path.join(workdir, "urls.yaml")
        write_import(import_file, delay, args.urls, args.period, None if args.no_regions else REGIONS)
        say(f"import: {args.urls} URLs{'' if args.no_regions else ' listing regions a, b, c'} ...")
        sitewatch(admin_env, "url", "import", import_file)
        meas = psycopg2.connect(dsn)
        meas.autocommit = True
        with meas.cursor() as cur:
            cur.execute("SELECT version()")
            report["postgres"] = cur.fetchone()[0].split(" on ")[0]

        say(f"run: {len(hosts)} sitewatch run for {args.duration:.0f} s ...")
        for region, source in hosts:
            log_path = os.path.join(workdir, f"run-{region or 'one'}.log")
            with open(log_path, "w") as log:
                runs.append(subprocess.Popen([*SITEWATCH, "run"], env=run_env(dsn, region, source, args),
                                             stdout=log, stderr=log, start_new_session=True))
        started = time.time()
        backends, server = CpuMeter(), CpuMeter()
        outage_pending = args.outage_at is not None
        while time.time() < started + args.duration:
            if outage_pending and time.time() >= started + args.outage_at:
                delay.deny(SOURCES[0])
                say(f"outage: region a gets 403 from every site from {args.outage_at:.0f} s on")
                outage_pending = False
            minute = int((time.time() - started) // 60) + 1
            try:
                backends.sample(backend_pids(meas), minute)
            except psycopg2.Error:
                pass
            if held is not None:
                server.sample(server_pids(held), minute)
            if any(proc.poll() is not None for proc in runs):
                raise SystemExit("a sitewatch run exited early")
            time.sleep(SAMPLE_S)
        report["exit_codes"] = stop(runs)

        minutes = int(args.duration // 60)
        with meas.cursor() as cur:
            rows = per_region_minute(cur, started, minutes)
            recorded = results_per_minute(cur, started, minutes)
            if args.outage_at is not None:
                report["outage_at_s"] = args.outage_at
                report["off_grid_checks"] = off_grid_checks(cur, started, minutes)
                report["notices"] = notices(cur)
        table = []
        for minute in range(1, minutes + 1):
            results = recorded.get(minute, 0)
            row = {"minute": minute, "results_recorded": results,
                   "db_backend_cpu_s": round(backends.per_minute.get(minute, 0.0), 2),
                   "db_backend_cpu_ms_per_result": round(1000 * backends.per_minute.get(minute, 0.0) / results, 3)
                   if results else None,
                   "regions": {region: {"checks": n, "lag_p99_s": None if p99 is None else round(float(p99), 3),
                                        "failed": failed}
                               for m, region, n, p99, failed in rows if m == minute}}
            if held is not None:
                row["db_server_cpu_ms_per_result"] = round(1000 * server.per_minute.get(minute, 0.0) / results, 3) \
                    if results else None
            table.append(row)
        report["minutes"] = table
        steady = table[1:] or table     # minute 1 holds the start (imports' first slots, connections)
        total = sum(r["results_recorded"] for r in steady)
        report["db_backend_cpu_ms_per_result_after_minute_1"] = \
            round(1000 * sum(backends.per_minute.get(r["minute"], 0.0) for r in steady) / total, 3) if total else None
        if held is not None:
            report["db_server_cpu_ms_per_result_after_minute_1"] = \
                round(1000 * sum(server.per_minute.get(r["minute"], 0.0) for r in steady) / total, 3) if total else None
        lags = [v["lag_p99_s"] for r in steady for v in r["regions"].values() if v["lag_p99_s"] is not None]
        report["worst_region_lag_p99_after_minute_1_s"] = max(lags) if lags else None
        finished = True
    finally:
        stop(runs)
        if meas is not None:
            meas.close()
        if held is not None:
            held.release()
        if created:
            drop_database(args.dsn, created)
        delay.stop()
        if finished:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            say(f"logs kept in {workdir}")

    if args.json:
        print(json.dumps(report, default=str))
        return 0
    for key, value in report.items():
        if key != "minutes":
            print(f"{key:46} {value}")
    print("\nminute  results  db_cpu_ms/result  region  checks  lag_p99_s  failed")
    for r in report["minutes"]:
        per_result = r["db_backend_cpu_ms_per_result"]
        shown = f"{per_result:.3f}" if per_result is not None else "-"
        regions = sorted(r["regions"].items()) or [("-", {"checks": 0, "lag_p99_s": None, "failed": 0})]
        for i, (region, v) in enumerate(regions):
            lead = f"{r['minute']:>6}  {r['results_recorded']:>7}  {shown:>16}" if i == 0 else " " * 33
            lag = f"{v['lag_p99_s']:.3f}" if v["lag_p99_s"] is not None else "-"
            print(f"{lead}  {region or '(none)':>6}  {v['checks']:>6}  {lag:>9}  {v['failed']:>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
