"""End-to-end benchmark of `sitewatch run`: throughput, lag, missed slots, CPU, memory.

In one run it starts a local target (nginx when installed), measures a bare urllib3
client against it (the baseline), imports N URLs into a fresh database, runs
`sitewatch run` for the duration, stops it with SIGTERM and measures from
task_result over the steady window. Only 127.0.0.1 is contacted.

    python bench/throughput.py --urls 100000 --period 60 --duration 300
    python bench/throughput.py --urls 5000 --period 1 --duration 60          # saturation
    python bench/throughput.py --urls 20000 --period 60 --slow-fraction 0.2  # hanging sites
    python bench/throughput.py --urls 100000 --period 60 --latency-mix --slow-fraction 0.02 \
        --timeout 10 --duration 150 --skip-baseline --skip-startup   # internet-like latency, defaults

With --latency-mix the answering URLs wait before answering, as sites on the internet do:
0.1 s (60 parts), 0.3 s (25), 1 s (10), 3 s (3), sharing what --slow-fraction leaves;
"fast" lag is then the lag of the 0.1 s URLs.
"""

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import psutil
import psycopg2
import psycopg2.extensions

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from baseline import measure as measure_baseline  # noqa: E402
from targets import DelayTarget, FastTarget, HangingTarget  # noqa: E402

from sitewatch.db import embedded  # noqa: E402

SITEWATCH = [sys.executable, "-m", "sitewatch"]
LATENCY_MIX = ((0.1, 60), (0.3, 25), (1.0, 10), (3.0, 3))   # (seconds before the answer, parts)


def base_env(args, data_dir, dsn) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SITEWATCH_")
           and k not in ("DB_DSN", "MIN_PERIOD", "MAX_PERIOD", "HTTP_REQUEST_TIMEOUT")}
    env.update({
        "SITEWATCH_LOG__FORMAT": "json",
        "MIN_PERIOD": "1",
        "MAX_PERIOD": str(max(300, args.period)),
        "SITEWATCH_CHECK__DEFAULT_PERIOD": str(args.period),
        "SITEWATCH_CHECK__TIMEOUT": str(args.timeout),
        "SITEWATCH_SUPERVISOR__SUMMARY_INTERVAL": "10",
    })
    if args.consumers:
        env["SITEWATCH_CONSUMER__PROCESSES"] = str(args.consumers)
    if args.concurrency:
        env["SITEWATCH_CONSUMER__CONCURRENCY"] = str(args.concurrency)
    if dsn:
        env["DB_DSN"] = dsn
    else:
        env["SITEWATCH_DATABASE__DATA_DIR"] = data_dir
    env.update(dict(setting.split("=", 1) for setting in args.set))
    return env


def sitewatch(env, *argv, check=True):
    result = subprocess.run([*SITEWATCH, *argv], env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise SystemExit(f"sitewatch {' '.join(argv)} failed: {result.stderr.strip()}")
    return result


def tree(pid) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def machine_cpu() -> tuple[float, float]:
    """(busy, steal) CPU-seconds of the whole machine since boot (/proc/stat): what ran besides
    the benchmark's own processes, and what the hypervisor took, say how quiet a run was."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq) / ticks, steal / ticks


def cpu_seconds(procs) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def postgres_procs(data_dir) -> list[psutil.Process]:
    """Server processes: those of our embedded data dir, or every postgres on the machine (no data dir)."""
    found = []
    for p in psutil.process_iter(["name", "cmdline"]):
        if p.info["name"] in ("postgres", "postmaster"):
            found.append(p)
    if data_dir:
        main = [p for p in found if data_dir in " ".join(p.info["cmdline"] or [])]
        if main:
            return tree(main[0].pid)
    return found


def measure_startup(args, workdir, target) -> float:
    """Seconds from launching `sitewatch run` to the first stored result, on an existing data dir."""
    data_dir = os.path.join(workdir, "startup-pg")
    dsn = None
    if args.dsn:
        dsn = create_database(args.dsn, f"sitewatch_bench_start_{os.getpid()}")
    env = base_env(args, data_dir, dsn)
    env["SITEWATCH_CONSUMER__PROCESSES"] = str(args.consumers or os.cpu_count())
    sitewatch(env, "url", "add", f"http://127.0.0.1:{target.port}/startup", "-p", "60")  # initdb happens here
    times = []
    for _ in range(3):
        sitewatch(env, "url", "remove", f"http://127.0.0.1:{target.port}/startup")
        sitewatch(env, "url", "add", f"http://127.0.0.1:{target.port}/startup", "-p", "60")
        launched = time.time()
        proc = subprocess.Popen([*SITEWATCH, "run"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        conn = None
        try:
            deadline = time.time() + 30
            while time.time() < deadline:
                try:
                    conn = conn or connect_for(env, data_dir)
                    with conn.cursor() as cur:
                        cur.execute("SELECT extract(epoch FROM min(recorded_at)) FROM task_result r "
                                    "JOIN url u ON u.id = r.url_id WHERE r.recorded_at > to_timestamp(%s)",
                                    (launched,))
                        first = cur.fetchone()[0]
                    if first:
                        times.append(float(first) - launched)
                        break
                except psycopg2.Error:
                    conn = None
                time.sleep(0.05)
        finally:
            if conn is not None:
                conn.close()
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    if dsn:
        drop_database(args.dsn, dsn)
    return statistics.median(times) if times else float("nan")


def server_procs(conn) -> list[psutil.Process]:
    """A shared server's processes that work for our database (--dsn): its backends (sitewatch's
    connections) and the server's own background processes (WAL writer, checkpointer, ...).
    Other databases' backends on the same server, and other servers on the machine (other
    sessions' embedded ones), are not ours to count."""
    with conn.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE (datname = current_database() OR datname IS NULL) "
                    "AND pid <> pg_backend_pid()")
        pids = [pid for (pid,) in cur.fetchall()]
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    return procs


def cpu_by_pid(procs) -> dict:
    seconds = {}
    for p in procs:
        try:
            t = p.cpu_times()
            seconds[p.pid] = t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return seconds


def connect_for(env, data_dir):
    """Connect to the run's database without starting one: wait for the embedded server to be up."""
    if env.get("DB_DSN"):
        conn = psycopg2.connect(env["DB_DSN"])
    else:
        pidfile = os.path.join(data_dir, "postmaster.pid")
        if not os.path.exists(pidfile):
            raise psycopg2.OperationalError("not up yet")
        lines = open(pidfile).read().splitlines()
        if len(lines) < 8 or lines[7].strip() != "ready":
            raise psycopg2.OperationalError("not ready yet")
        conn = psycopg2.connect(dbname="postgres", user="postgres", host=lines[4].strip(), port=lines[3].strip())
    conn.autocommit = True
    return conn


def create_database(server_dsn, name) -> str:
    admin = psycopg2.connect(server_dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        cur.execute(f"CREATE DATABASE {name}")
    admin.close()
    return psycopg2.extensions.make_dsn(server_dsn, dbname=name)


def drop_database(server_dsn, dsn) -> None:
    name = psycopg2.extensions.parse_dsn(dsn)["dbname"]
    admin = psycopg2.connect(server_dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


class _WithRegex:
    """Writes each `URL\n` line as a YAML entry `- url: URL` with `regex: PATTERN`."""

    def __init__(self, f, regex: str) -> None:
        self.f, self.regex = f, json.dumps(regex)      # JSON quoting is YAML

    def write(self, line: str) -> None:
        self.f.write(f"- url: {line.strip()}\n  regex: {self.regex}\n")


def expected_slots(first: float, period: int, start: float, end: float) -> int:
    """How many of the slots first + k*period (k >= 0) fall in [start, end)."""
    k_low = max(0, math.ceil((start - first) / period))
    k_high = math.ceil((end - first) / period)   # first k whose slot is >= end
    return max(0, k_high - k_low)


def percentile(cur, where, params, p) -> float | None:
    cur.execute(f"SELECT percentile_cont(%s) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - scheduled_at))"
                f" FROM task_result r WHERE {where}", (p, *params))
    value = cur.fetchone()[0]
    return None if value is None else round(float(value), 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--urls", type=int, default=100_000)
    parser.add_argument("--period", type=int, default=60)
    parser.add_argument("--duration", type=float, default=300)
    parser.add_argument("--slow-fraction", type=float, default=0.0, help="share of URLs that hang until timeout")
    parser.add_argument("--timeout", type=float, default=5.0, help="check timeout (the hanging URLs hit it)")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds excluded at the start")
    parser.add_argument("--dsn", help="PostgreSQL server to create a fresh database on (default: embedded)")
    parser.add_argument("--consumers", type=int, help="consumer processes (default: sitewatch's, = CPUs)")
    parser.add_argument("--concurrency", type=int, help="threads per consumer (default: sitewatch's)")
    parser.add_argument("--baseline-seconds", type=float, default=20.0)
    parser.add_argument("--nginx-workers", type=int, default=1)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--skip-startup", action="store_true")
    parser.add_argument("--latency-mix", action="store_true",
                        help="answering URLs answer after 0.1-3 s (see above), not at once")
    parser.add_argument("--regex", help="a regex every URL's body must match (the target's body: 'bench ok')")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--set", action="append", default=[], metavar="VAR=VALUE",
                        help="extra environment for sitewatch, e.g. SITEWATCH_METRICS__LISTEN= (repeatable)")
    args = parser.parse_args()

    def say(*a):
        if not args.json:
            print(*a, file=sys.stderr, flush=True)

    workdir = tempfile.mkdtemp(prefix="sitewatch-bench-")
    target = FastTarget(workers=args.nginx_workers).start()
    hang = HangingTarget().start() if args.slow_fraction else None
    delay = DelayTarget().start() if args.latency_mix else None
    report = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
              "memory_gib": round(psutil.virtual_memory().total / 2**30, 1), "target": target.kind,
              "urls": args.urls, "period_s": args.period, "duration_s": args.duration,
              "slow_fraction": args.slow_fraction, "regex": args.regex,
              "database": "given DSN" if args.dsn else "embedded"}
    if delay:
        report["latency_mix"] = {f"{seconds:g}s": round(parts / sum(p for _, p in LATENCY_MIX)
                                                        * (1 - args.slow_fraction), 4)
                                 for seconds, parts in LATENCY_MIX}
        report["delay_target"] = delay.kind
    held = None
    run = None
    dsn = None
    try:
        if not args.skip_baseline:
            say(f"baseline: bare urllib3 client against {target.kind} for {args.baseline_seconds:.0f} s ...")
            report["baseline"] = measure_baseline(f"http://127.0.0.1:{target.port}/baseline",
                                                  args.baseline_seconds)
        if not args.skip_startup:
            say("startup: sitewatch run -> first stored result, existing data dir ...")
            report["startup_to_first_result_s"] = round(measure_startup(args, workdir, target), 2)

        data_dir = os.path.join(workdir, "pg")
        if args.dsn:
            dsn = create_database(args.dsn, f"sitewatch_bench_{os.getpid()}")
        env = base_env(args, data_dir, dsn)
        n_slow = int(args.urls * args.slow_fraction)
        urls_file = os.path.join(workdir, "urls.txt")
        with open(urls_file, "w") as f:
            if args.regex:       # then the file is YAML: one entry per URL, each with the regex
                f = _WithRegex(f, args.regex)
            if delay:
                answering, parts = args.urls - n_slow, sum(p for _, p in LATENCY_MIX)
                counts = [answering * p // parts for _, p in LATENCY_MIX]
                counts[0] += answering - sum(counts)
                for (seconds, _), count in zip(LATENCY_MIX, counts, strict=True):
                    for i in range(count):
                        f.write(delay.url(seconds, f"u{i}") + "\n")
            for i in range(0 if delay else args.urls - n_slow):
                f.write(f"http://127.0.0.1:{target.port}/u/{i}\n")
            for i in range(n_slow):
                f.write(f"http://127.0.0.1:{hang.port}/h/{i}\n")
        say(f"import: {args.urls} URLs ...")
        t0 = time.monotonic()
        sitewatch(env, "url", "import", urls_file)
        report["import_s"] = round(time.monotonic() - t0, 2)

        if not args.dsn:
            held = embedded.start(data_dir)   # keep the server between run's stop and our queries
        meas = connect_for(env, data_dir) if args.dsn else psycopg2.connect(held.dsn)
        meas.autocommit = True
        with meas.cursor() as cur:
            # Each URL's first slot: its slots are first + k * period.
            cur.execute("SELECT extract(epoch FROM next_check_at)::float8, period FROM url")
            phases = cur.fetchall()

        say(f"run: sitewatch run for {args.duration:.0f} s ...")
        log_path = os.path.join(workdir, "run.log")
        with open(log_path, "w") as log:
            run = subprocess.Popen([*SITEWATCH, "run"], env=env, stdout=log, stderr=log, start_new_session=True)
        started = time.time()
        window_start = started + args.warmup
        window_end = started + args.duration - max(10.0, args.timeout + 5)
        peak_rss = 0
        cpu_marks = {}
        while time.time() < started + args.duration:
            procs = [p for p in tree(run.pid) if p.name() not in ("postgres", "postmaster")]
            rss = 0
            for p in procs:
                try:
                    rss += p.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            peak_rss = max(peak_rss, rss)
            now = time.time()
            for mark, at in (("start", window_start), ("end", window_end)):
                if mark not in cpu_marks and now >= at:
                    # The database's CPU: with --dsn, only the shared server's processes that
                    # serve this run (server_procs); every postgres on the machine would count
                    # other sessions' servers too.
                    server = cpu_by_pid(server_procs(meas) if args.dsn else postgres_procs(data_dir))
                    cpu_marks[mark] = (now, cpu_seconds(procs), server, cpu_seconds(
                        [psutil.Process(pid) for pid in target.pids()] + [
                            c for pid in target.pids() for c in psutil.Process(pid).children()]),
                        cpu_seconds(postgres_procs(None)), machine_cpu())
            time.sleep(1.0)
        run.send_signal(signal.SIGTERM)
        stop_started = time.monotonic()
        run.wait(120)
        report["stop_s"] = round(time.monotonic() - stop_started, 2)
        report["exit_code"] = run.returncode

        cur = meas.cursor()
        ws, we = cpu_marks["start"][0], cpu_marks["end"][0]
        where = "r.scheduled_at >= to_timestamp(%s) AND r.scheduled_at < to_timestamp(%s)"
        cur.execute(f"SELECT count(*), count(DISTINCT (url_id, scheduled_at)), count(*) FILTER (WHERE ok), "
                    f"count(*) FILTER (WHERE error_kind = 'lost') FROM task_result r WHERE {where}", (ws, we))
        recorded, distinct, ok, lost = cur.fetchone()
        expected = sum(expected_slots(first, period, ws, we) for first, period in phases)
        healthy = f"{where} AND r.url_id IN (SELECT id FROM url WHERE url LIKE %s)"
        hp = (ws, we, delay.url(0.1, "%") if delay else f"http://127.0.0.1:{target.port}/%")
        seconds = we - ws
        c0, c1 = cpu_marks["start"], cpu_marks["end"]
        # A process that started in the window counts from 0; one that ended in it is lost (rare:
        # sitewatch's connections live for the whole run).
        server_cpu = sum(seconds - c0[2].get(pid, 0.0) for pid, seconds in c1[2].items())
        # Capacity at saturation: the checks that started in the window, whatever their slot.
        cur.execute("SELECT count(*) FROM task_result r "
                    "WHERE r.started_at >= to_timestamp(%s) AND r.started_at < to_timestamp(%s)", (ws, we))
        started_in_window = cur.fetchone()[0]
        cur.execute("SELECT floor(extract(epoch FROM started_at) - %s)::int / 2 * 2, count(*) FROM task_result "
                    "WHERE started_at >= to_timestamp(%s) GROUP BY 1 ORDER BY 1", (started, started))
        started_per_2s = {int(k): n for k, n in cur.fetchall()}
        report.update({
            "window_s": round(seconds, 1),
            "checks_per_s": round(recorded / seconds, 1),
            "expected_slots": expected, "recorded_slots": recorded, "missed_slots": expected - recorded,
            "duplicate_slots": recorded - distinct, "ok": ok, "lost": lost,
            "lag_s": {p: percentile(cur, healthy, hp, q) for p, q in
                      (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))},
            "checks_started_per_s": round(started_in_window / seconds, 1),
            "started_per_2s": started_per_2s,
            # CPU over the window per check run in it (at saturation a slot may run a second or
            # two after its time, so the checks of the window's slots are not quite those it ran).
            "cpu_s_per_1000_checks": {
                "sitewatch": round((c1[1] - c0[1]) / max(1, started_in_window) * 1000, 3),
                "postgres": round(server_cpu / max(1, started_in_window) * 1000, 3),
                "target": round((c1[3] - c0[3]) / max(1, started_in_window) * 1000, 3),
                "every_postgres_on_the_machine": round((c1[4] - c0[4]) / max(1, started_in_window) * 1000, 3)},
            "peak_rss_mb": round(peak_rss / 2**20, 1),
        })
        ours = (c1[1] - c0[1]) + server_cpu + (c1[3] - c0[3])
        busy, steal = c1[5][0] - c0[5][0], c1[5][1] - c0[5][1]
        report["machine_cpu_s_in_window"] = {"capacity": round(seconds * os.cpu_count(), 1), "busy": round(busy, 1),
                                             "this_run": round(ours, 1), "others": round(max(0.0, busy - ours), 1),
                                             "steal": round(steal, 1)}
        report["due_per_s"] = round(expected / seconds, 1)
        cur.execute(f"SELECT error_kind, count(*) FROM task_result r WHERE {where} AND NOT ok GROUP BY 1", (ws, we))
        report["failed_by_kind"] = dict(cur.fetchall())
        cur.execute("SELECT coalesce(sum(skipped_slots), 0) FROM url")
        report["skipped_slots_whole_run"] = int(cur.fetchone()[0])
        if delay:
            answering = (ws, we, f"http://127.0.0.1:{delay.port}/d/%")    # every URL that answers
            report["lag_answering_s"] = {p: percentile(cur, healthy, answering, q)
                                         for p, q in (("p50", 0.5), ("p99", 0.99))}
            cur.execute(f"SELECT count(*) FILTER (WHERE error_kind = 'timeout'), count(*) FILTER (WHERE NOT ok) "
                        f"FROM task_result r WHERE {healthy}", answering)
            report["answering_timeouts"], report["answering_failed"] = cur.fetchone()
        summaries = []
        with open(log_path) as log:
            for line in log:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("event") == "summary":
                    summaries.append(entry)
        if summaries:
            report["peak_check_threads"] = max(e.get("check_threads", 0) for e in summaries)
            report["summaries_with_consumer_at_ceiling"] = sum(1 for e in summaries if e.get("consumers_at_ceiling"))
        if hang:
            report["slow_urls"] = n_slow
        if "baseline" in report:
            report["ratio_to_baseline"] = round(report["checks_per_s"] / report["baseline"]["per_second"], 3)
        meas.close()
    finally:
        if run is not None and run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        if held is not None:
            held.release()
        if dsn:
            drop_database(args.dsn, dsn)
        target.stop()
        if hang:
            hang.stop()
        if delay:
            delay.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    if args.json:
        print(json.dumps(report))
    else:
        width = max(len(k) for k in report)
        for key, value in report.items():
            print(f"{key:{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
