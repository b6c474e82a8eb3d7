"""Soak: `sitewatch run` on defaults at 100,000 URLs for ten minutes or more, from a fresh
database holding one full past hour of results, at internet-like latency (issue 18).

A two-minute run hides minute three: the maintenance job's first heavy runs (the rollup of
the seeded hour, the first uptime-summary build, the first additions to a freshly built
table) happen only then. This bench reports every minute on its own:

* checks recorded, and the share of the minute's due slots that were checked;
* lag p99 (started_at - scheduled_at) of the fast URLs (those answering in 0.1 s);
* failed checks of URLs that always answer (a false "down" in the making);
* check threads (the consumers' summary lines), sitewatch's RSS (sampled every second);
* seconds the producer held due URLs back, its consumers a batch behind (its log lines);
* the maintenance job's longest statement (pg_stat_activity of its connection, sampled
  every 0.25 s) and the longest statement of any connection in the database.

With --busy-at S --busy-for D a busy loop pinned to one core (taskset) runs from second S
for D seconds: another program taking a core must not make the checks spiral (issue 18,
point 3).

    python bench/soak.py --duration 660                                 # embedded PostgreSQL 18
    python bench/soak.py --duration 600 --busy-at 120 --busy-for 180    # a core taken for 3 minutes
    python bench/soak.py --dsn postgresql://postgres@127.0.0.1:5432/postgres   # PostgreSQL 15

Only 127.0.0.1 is contacted; the targets are bench/targets.py's (nginx + echo_sleep).
"""

import argparse
import collections
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import psutil
import psycopg2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from targets import DelayTarget, HangingTarget  # noqa: E402
from throughput import LATENCY_MIX, SITEWATCH, connect_for, create_database, drop_database, sitewatch, tree  # noqa: E402

from sitewatch.db import embedded  # noqa: E402
from sitewatch.history import partitions  # noqa: E402

JOB_APP = "sitewatch maintenance"      # the job's application_name (db/database.py)
SAMPLE_S = 0.25


def env_for(data_dir, dsn, extra) -> dict:
    """Defaults, as a new user runs it, but for the logs (JSON, a summary line every 20 s, to
    read) and no web child."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SITEWATCH_")
           and k not in ("DB_DSN", "MIN_PERIOD", "MAX_PERIOD", "HTTP_REQUEST_TIMEOUT")}
    env["SITEWATCH_LOG__FORMAT"] = "json"
    env["SITEWATCH_WEB__LISTEN"] = ""            # no web child: the bench does not read pages
    env["SITEWATCH_SUPERVISOR__SUMMARY_INTERVAL"] = "20"   # threads per minute: a summary line every 20 s
    if dsn:
        env["DB_DSN"] = dsn
    else:
        env["SITEWATCH_DATABASE__DATA_DIR"] = data_dir
    env.update(dict(setting.split("=", 1) for setting in extra))
    return env


def write_urls(path, delay, hang, urls: int, hanging: float) -> None:
    n_hang = int(urls * hanging)
    answering, parts = urls - n_hang, sum(p for _, p in LATENCY_MIX)
    counts = [answering * p // parts for _, p in LATENCY_MIX]
    counts[0] += answering - sum(counts)
    with open(path, "w") as f:
        for (seconds, _), count in zip(LATENCY_MIX, counts, strict=True):
            for i in range(count):
                f.write(delay.url(seconds, f"u{i}") + "\n")
        for i in range(n_hang):
            f.write(f"http://127.0.0.1:{hang.port}/h/{i}\n")


def seed_past_hour(conn, minutes: int | None) -> int:
    """One result per URL per period over the last `minutes` (default: since the start of the
    previous UTC hour), as if sitewatch had run: a full past hour for the job's first rollup
    and summary build. In time order, as sitewatch writes them (the BRIN index relies on
    it). Returns the rows written."""
    with conn.cursor() as cur:
        if minutes is None:
            cur.execute("SELECT ceil(extract(epoch FROM now() - date_trunc('hour', now(), 'UTC')"
                        " + interval '1 hour') / 60)::int")
            minutes = cur.fetchone()[0]
        cur.execute("SELECT date_trunc('day', now() - make_interval(mins => %s), 'UTC'),"
                    " date_trunc('day', now(), 'UTC')", (minutes,))
        first_day, today = cur.fetchone()
        day = first_day
        while day <= today:
            partitions.create_partition(cur, day)
            day += partitions.DAY
        # Slots on each URL's own phase (next_check_at - k * period), before the run's first.
        cur.execute("UPDATE url SET created_at = now() - make_interval(mins => %s + 60)", (minutes,))
        cur.execute("""
            INSERT INTO task_result (url_id, scheduled_at, started_at, response_time_ms, status_code, ok,
                                     error_kind, error, checked_by)
            SELECT u.id, s.at, s.at + interval '2 ms',
                   CASE WHEN u.url LIKE '%%/h/%%' THEN NULL ELSE 1000 * split_part(u.url, '/', 5)::float8 + 2 END,
                   CASE WHEN u.url LIKE '%%/h/%%' THEN NULL ELSE 200 END,
                   u.url NOT LIKE '%%/h/%%',
                   CASE WHEN u.url LIKE '%%/h/%%' THEN 'timeout' END,
                   CASE WHEN u.url LIKE '%%/h/%%' THEN 'timed out after 10 s' END,
                   'bench/seed'
            FROM url u
            CROSS JOIN LATERAL (
                SELECT u.next_check_at - k * make_interval(secs => u.period) AS at
                FROM generate_series(1, (%s * 60) / u.period) AS k) AS s
            ORDER BY s.at""", (minutes,))
        rows = cur.rowcount
    return rows


class Sampler:
    """Every SAMPLE_S: sitewatch's RSS, the job's and any statement's running time."""

    def __init__(self, conn, pid):
        self.conn, self.pid = conn, pid
        self.rss = collections.defaultdict(int)          # minute -> max RSS (bytes)
        self.job_stmt = collections.defaultdict(float)   # minute -> longest job statement (s)
        self.any_stmt = collections.defaultdict(float)
        self.job_queries = {}                            # minute -> the longest job statement's text
        self.any_queries = {}                            # minute -> the longest statement's app and text
        self.oldest_xact = collections.defaultdict(float)  # minute -> oldest open transaction (s)
        self.oldest_xact_app = {}
        self.task_dead = collections.defaultdict(int)    # minute -> most dead tuples seen in `task`
        self.waits = collections.defaultdict(list)       # minute -> consumers' main-thread wait shares
        self._sched = {}                                 # consumer pid -> (on CPU, waiting) ns, last read

    def sample(self, minute: int) -> None:
        rss = 0
        for p in tree(self.pid):
            try:
                if p.name() not in ("postgres", "postmaster"):
                    rss += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        self.rss[minute] = max(self.rss[minute], rss)
        for p in tree(self.pid):
            try:
                if "consumer" not in " ".join(p.cmdline()):     # `sitewatch: consumer N` (setproctitle)
                    continue
                with open(f"/proc/{p.pid}/schedstat") as f:     # the main thread (pid = its tid)
                    running, waiting = (float(v) for v in f.read().split()[:2])
            except (psutil.NoSuchProcess, OSError, ValueError):
                continue
            last = self._sched.get(p.pid)
            self._sched[p.pid] = (running, waiting)
            if last and (running - last[0]) + (waiting - last[1]) > 0:
                self.waits[minute].append((waiting - last[1]) / ((running - last[0]) + (waiting - last[1])))
        with self.conn.cursor() as cur:
            cur.execute("SELECT application_name, extract(epoch FROM clock_timestamp() - query_start), query"
                        " FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid()"
                        " AND datname = current_database() AND query_start IS NOT NULL")
            for app, seconds, query in cur.fetchall():
                seconds = float(seconds)
                if app == JOB_APP and seconds > self.job_stmt[minute]:
                    self.job_stmt[minute] = seconds
                    self.job_queries[minute] = " ".join(query.split())[:120]
                # autovacuum's workers show as "autovacuum: VACUUM ...": not a client's statement
                skip = query.lstrip().upper().startswith(("LISTEN", "VACUUM", "AUTOVACUUM:"))
                if not skip and seconds > self.any_stmt[minute]:
                    self.any_stmt[minute] = seconds
                    self.any_queries[minute] = f"{app}: " + " ".join(query.split())[:100]
            # A long open transaction holds back the xmin horizon: the queue's dead rows stay.
            cur.execute("SELECT application_name, extract(epoch FROM clock_timestamp() - xact_start)"
                        " FROM pg_stat_activity WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid()"
                        " AND datname = current_database() ORDER BY xact_start LIMIT 1")
            row = cur.fetchone()
            if row and float(row[1]) > self.oldest_xact[minute]:
                self.oldest_xact[minute], self.oldest_xact_app[minute] = float(row[1]), row[0]
            cur.execute("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'task'")
            row = cur.fetchone()
            if row:
                self.task_dead[minute] = max(self.task_dead[minute], int(row[0]))


def per_minute(cur, started: float, minutes: int, fast_like: str, answering_like: str) -> list[dict]:
    cur.execute("""
        WITH m AS (
            SELECT floor(extract(epoch FROM r.scheduled_at - to_timestamp(%(t0)s)) / 60)::int AS minute,
                   r.*, u.url
            FROM task_result r JOIN url u ON u.id = r.url_id
            WHERE r.scheduled_at >= to_timestamp(%(t0)s)
              AND r.scheduled_at < to_timestamp(%(t0)s) + make_interval(mins => %(n)s))
        SELECT minute, count(*),
               percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - scheduled_at))
                   FILTER (WHERE url LIKE %(fast)s),
               count(*) FILTER (WHERE url LIKE %(answering)s AND NOT ok),
               count(*) FILTER (WHERE error_kind = 'lost')
        FROM m GROUP BY minute ORDER BY minute""",
                {"t0": started, "n": minutes, "fast": fast_like, "answering": answering_like})
    return [{"minute": m + 1, "checks": n, "lag_p99_fast_s": None if p99 is None else round(float(p99), 3),
             "answering_failed": failed, "lost": lost} for m, n, p99, failed, lost in cur.fetchall()]


def failures_by_kind(cur, started: float, minutes: int, answering_like: str) -> dict:
    """The answering URLs' failures by error kind, with one error text each: a false "down" is
    the site's fault only if the kind says so (a timeout of a site answering in 0.1 s is the
    monitor's)."""
    cur.execute("""
        SELECT coalesce(r.error_kind, '-'), count(*), min(r.error)
        FROM task_result r JOIN url u ON u.id = r.url_id
        WHERE r.scheduled_at >= to_timestamp(%(t0)s)
          AND r.scheduled_at < to_timestamp(%(t0)s) + make_interval(mins => %(n)s)
          AND u.url LIKE %(answering)s AND NOT r.ok
        GROUP BY 1 ORDER BY 2 DESC""", {"t0": started, "n": minutes, "answering": answering_like})
    return {kind: {"count": n, "example": (error or "")[:160]} for kind, n, error in cur.fetchall()}


def due_per_minute(cur, started: float, minutes: int) -> dict:
    """Due slots per minute: every URL's slots first + k * period inside the minute."""
    cur.execute("""
        SELECT floor(extract(epoch FROM s - to_timestamp(%(t0)s)) / 60)::int, count(*)
        FROM bench_first_slot u CROSS JOIN LATERAL generate_series(
            u.first_slot + ceil(greatest(0, extract(epoch FROM to_timestamp(%(t0)s) - u.first_slot)) / u.period)
                * make_interval(secs => u.period),
            to_timestamp(%(t0)s) + make_interval(mins => %(n)s) - interval '1 microsecond',
            make_interval(secs => u.period)) AS s
        GROUP BY 1""", {"t0": started, "n": minutes})
    return dict(cur.fetchall())


def log_events(log_path: str, event: str):
    """The run's JSON log lines whose event is `event`."""
    with open(log_path) as log:
        for line in log:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("event") == event:
                yield entry


def summary_threads(log_path: str, started: float) -> dict:
    """Per minute: the most check threads in a summary line."""
    threads = collections.defaultdict(int)
    for entry in log_events(log_path, "summary"):
        if "check_threads" in entry:
            at = datetime.datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()
            minute = int((at - started) // 60) + 1
            threads[minute] = max(threads[minute], entry["check_threads"])
    return threads


def producer_held(log_path: str, started: float) -> dict:
    """Per minute: seconds the producers held due URLs back (their `producer holding` lines:
    a batch of tasks already waited for the consumers, run/producer.py)."""
    held = collections.defaultdict(float)
    for entry in log_events(log_path, "producer holding"):
        at = datetime.datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()
        held[int((at - started) // 60) + 1] += entry.get("held_s", 0.0)
    return held


def job_runs(log_path: str) -> list[dict]:
    return [{k: entry.get(k) for k in ("timestamp", "took_s", "hours_rolled_up", "summary", "statements",
                                       "longest_statement_s", "work_s", "rest_s", "yield_s")}
            for entry in log_events(log_path, "maintenance done")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--urls", type=int, default=100_000)
    parser.add_argument("--duration", type=float, default=660, help="seconds of `sitewatch run` (>= 600)")
    parser.add_argument("--hanging", type=float, default=0.02, help="share of URLs that never answer")
    parser.add_argument("--seed-minutes", type=int,
                        help="minutes of past results seeded (default: since the start of the previous hour)")
    parser.add_argument("--dsn", help="PostgreSQL server to create a fresh database on (default: embedded)")
    parser.add_argument("--busy-at", type=float, help="start a busy loop pinned to CPU 0 at this second")
    parser.add_argument("--busy-for", type=float, default=180.0)
    parser.add_argument("--set", action="append", default=[], metavar="VAR=VALUE",
                        help="extra environment for sitewatch (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    # A stop (SIGTERM, SIGHUP) still runs the cleanup below: the run, its database, the targets.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(1))

    def say(*a):
        print(*a, file=sys.stderr, flush=True)

    workdir = tempfile.mkdtemp(prefix="sitewatch-soak-")
    data_dir = os.path.join(workdir, "pg")
    delay, hang = DelayTarget().start(), HangingTarget().start()
    dsn = create_database(args.dsn, f"sitewatch_soak_{os.getpid()}") if args.dsn else None
    env = env_for(data_dir, dsn, args.set)
    run = busy = held = meas = None
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
              "urls": args.urls, "hanging": args.hanging, "duration_s": args.duration,
              "database": "given DSN" if args.dsn else "embedded", "delay_target": delay.kind}
    try:
        urls_file = os.path.join(workdir, "urls.txt")
        write_urls(urls_file, delay, hang, args.urls, args.hanging)
        say(f"import: {args.urls} URLs ...")
        sitewatch(env, "url", "import", urls_file)
        if not args.dsn:
            held = embedded.start(data_dir)   # the bench's own handle: survives run's stop
        meas = connect_for(env, data_dir) if args.dsn else psycopg2.connect(held.dsn)
        meas.autocommit = True
        with meas.cursor() as cur:
            cur.execute("SELECT version()")
            report["postgres"] = cur.fetchone()[0].split(" on ")[0]
        say("seed: past results ...")
        t0 = time.monotonic()
        report["seeded_rows"] = seed_past_hour(meas, args.seed_minutes)
        report["seed_s"] = round(time.monotonic() - t0, 1)
        with meas.cursor() as cur:
            # Seeding took a while: each URL's first slot of the run is its next one on its
            # phase from now (the producer would otherwise skip the slots that passed).
            cur.execute("UPDATE url SET next_check_at = next_check_at + ceil(greatest(0, extract(epoch FROM"
                        " now() + interval '5 s' - next_check_at)) / period) * make_interval(secs => period)")
            cur.execute("CREATE TABLE bench_first_slot AS SELECT id, period, next_check_at AS first_slot FROM url")

        say(f"run: sitewatch run for {args.duration:.0f} s ...")
        log_path = os.path.join(workdir, "run.log")
        with open(log_path, "w") as log:
            run = subprocess.Popen([*SITEWATCH, "run"], env=env, stdout=log, stderr=log, start_new_session=True)
        started = time.time()
        sampler = Sampler(meas, run.pid)
        busy_window = None
        while time.time() < started + args.duration:
            elapsed = time.time() - started
            if args.busy_at is not None and busy is None and elapsed >= args.busy_at:
                busy = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", "while True: pass"])
                busy_window = (elapsed, elapsed + args.busy_for)
            if busy is not None and busy.poll() is None and elapsed >= busy_window[1]:
                busy.kill()
                busy.wait()
            try:
                sampler.sample(int(elapsed // 60) + 1)
            except psycopg2.Error:
                pass
            time.sleep(SAMPLE_S)
        run.send_signal(signal.SIGTERM)
        run.wait(120)
        report["exit_code"] = run.returncode

        minutes = int(args.duration // 60)
        with meas.cursor() as cur:
            rows = per_minute(cur, started, minutes, delay.url(0.1, "%"), f"http://127.0.0.1:{delay.port}/d/%")
            due = due_per_minute(cur, started, minutes)
        threads = summary_threads(log_path, started)
        holds = producer_held(log_path, started)
        for row in rows:
            m = row["minute"]
            row["due"] = due.get(m - 1, 0)
            row["checked_share"] = round(row["checks"] / row["due"], 4) if row["due"] else None
            row["check_threads"] = threads.get(m)
            row["producer_held_s"] = round(holds.get(m, 0.0), 1)
            waits = sorted(sampler.waits.get(m, ()))
            row["main_thread_wait_p50_p90"] = [round(waits[int(q * (len(waits) - 1))], 2) for q in (0.5, 0.9)] \
                if waits else None
            row["rss_mb"] = round(sampler.rss.get(m, 0) / 2**20)
            row["job_longest_stmt_s"] = round(sampler.job_stmt.get(m, 0.0), 2)
            row["any_longest_stmt_s"] = round(sampler.any_stmt.get(m, 0.0), 2)
            row["job_longest_stmt"] = sampler.job_queries.get(m)
            row["any_longest_stmt"] = sampler.any_queries.get(m)
            row["oldest_xact_s"] = round(sampler.oldest_xact.get(m, 0.0), 1)
            row["oldest_xact_app"] = sampler.oldest_xact_app.get(m)
            row["task_dead_tuples"] = sampler.task_dead.get(m, 0)
        report["minutes"] = rows
        after_first = rows[1:]
        report["worst_lag_p99_after_minute_1_s"] = max((r["lag_p99_fast_s"] or 0) for r in after_first)
        report["checked_share"] = round(sum(r["checks"] for r in rows) / max(1, sum(r["due"] for r in rows)), 4)
        report["answering_failed"] = sum(r["answering_failed"] for r in rows)
        with meas.cursor() as cur:
            report["answering_failed_by_kind"] = failures_by_kind(cur, started, minutes,
                                                                  f"http://127.0.0.1:{delay.port}/d/%")
        report["peak_rss_mb"] = max(r["rss_mb"] for r in rows)
        report["job_longest_stmt_s"] = max(r["job_longest_stmt_s"] for r in rows)
        report["job_runs"] = job_runs(log_path)
        if busy_window:
            report["busy_window_s"] = [round(t) for t in busy_window]
        with meas.cursor() as cur:
            cur.execute("SELECT coalesce(sum(skipped_slots), 0) FROM url")
            report["skipped_slots"] = int(cur.fetchone()[0])
        if os.environ.get("SOAK_KEEP_LOG"):
            shutil.copy(log_path, os.environ["SOAK_KEEP_LOG"])
    finally:
        if busy is not None and busy.poll() is None:
            busy.kill()
        if run is not None and run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        if meas is not None:
            meas.close()
        if held is not None:
            held.release()
        if dsn:
            drop_database(args.dsn, dsn)
        delay.stop()
        hang.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    if args.json:
        print(json.dumps(report, default=str))
        return 0
    for key, value in report.items():
        if key not in ("minutes", "job_runs"):
            print(f"{key:32} {value}")
    print("\nminute  checks   due     share   lag_p99  failed  threads  rss_mb  job_stmt_s  any_stmt_s"
          "  xact_s  task_dead")
    for r in report["minutes"]:
        print(f"{r['minute']:>6}  {r['checks']:>6}  {r['due']:>6}  {r['checked_share'] or 0:>6.3f}  "
              f"{r['lag_p99_fast_s'] or 0:>7.2f}  {r['answering_failed']:>6}  {r['check_threads'] or 0:>7}  "
              f"{r['rss_mb']:>6}  {r['job_longest_stmt_s']:>10.2f}  {r['any_longest_stmt_s']:>10.2f}  "
              f"{r['oldest_xact_s']:>6.0f}  {r['task_dead_tuples']:>9}")
    print("\njob runs:")
    for run_ in report["job_runs"]:
        print("  ", run_)
    return 0


if __name__ == "__main__":
    sys.exit(main())
