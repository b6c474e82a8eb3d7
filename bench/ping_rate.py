"""Pings a second the web listener sustains (push:// monitors, issue 20).

A fresh embedded database with --tokens push monitors (1 s period, grace 1 s, added as
`url add` adds them: bench/kinds_mix.py add_pushes), `sitewatch web` on it (ping rate limit
off), and for each --concurrency C, C client processes each pinging round-robin over the
tokens on one keep-alive connection (GET /ping/TOKEN, the next ping as soon as the answer is
in) for --duration seconds. Reported per C: answers a second by status, results recorded a
second (task_result rows written in the window: a success ping records one when its monitor's
slot has started, so with a token pinged about once a second most do), the latency's p50 and
p99, and the CPU of the web server, PostgreSQL and the clients per ping. Only 127.0.0.1.

    flock /work/bench.lock python bench/ping_rate.py
    python bench/ping_rate.py --tokens 2000 --duration 15 --concurrency 1,4,16
"""

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import psycopg2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kinds_mix import add_pushes, free_tcp_port  # noqa: E402
from targets import stop_process, wait_for_port  # noqa: E402
from throughput import SITEWATCH, base_env, cpu_seconds, postgres_procs, sitewatch, tree  # noqa: E402

from sitewatch.db import embedded  # noqa: E402


def client(port: int, tokens: list[str], until: float, out) -> None:
    """One job-like client: ping its tokens in turn until `until`; (statuses, latencies) to `out`."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    statuses, latencies, i = {}, [], 0
    while time.time() < until:
        t0 = time.perf_counter()
        try:
            conn.request("GET", f"/ping/{tokens[i % len(tokens)]}")
            response = conn.getresponse()
            response.read()
            status = str(response.status)
        except (OSError, http.client.HTTPException) as exc:
            status = type(exc).__name__
            conn.close()
        latencies.append(time.perf_counter() - t0)
        statuses[status] = statuses.get(status, 0) + 1
        i += 1
    out.put((statuses, latencies))


def measure(port: int, tokens: list[str], concurrency: int, duration: float, web, data_dir, meas) -> dict:
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    start = time.time() + 1.0
    until = start + duration
    procs = [ctx.Process(target=client, args=(port, tokens[k::concurrency], until, out)) for k in range(concurrency)]
    for p in procs:
        p.start()
    time.sleep(max(0.0, start - time.time()))
    web_cpu0, pg_cpu0 = cpu_seconds(tree(web.pid)), cpu_seconds(postgres_procs(data_dir))
    client_cpu0 = cpu_seconds([p for proc in procs for p in tree(proc.pid)])
    with meas.cursor() as cur:
        cur.execute("SELECT count(*) FROM task_result")
        rows0 = cur.fetchone()[0]
    time.sleep(max(0.0, until - time.time()))
    web_cpu1, pg_cpu1 = cpu_seconds(tree(web.pid)), cpu_seconds(postgres_procs(data_dir))
    client_cpu1 = cpu_seconds([p for proc in procs for p in tree(proc.pid)])
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
    with meas.cursor() as cur:
        cur.execute("SELECT count(*) FROM task_result")
        rows1 = cur.fetchone()[0]
    statuses: dict = {}
    latencies: list = []
    for s, lat in results:
        latencies += lat
        for k, v in s.items():
            statuses[k] = statuses.get(k, 0) + v
    answered = sum(statuses.values())
    latencies.sort()
    return {"concurrency": concurrency, "pings_per_s": round(answered / duration, 1),
            "by_status": statuses, "results_per_s": round((rows1 - rows0) / duration, 1),
            "latency_ms_p50": round(statistics.median(latencies) * 1000, 2) if latencies else None,
            "latency_ms_p99": round(latencies[int(len(latencies) * 0.99)] * 1000, 2) if latencies else None,
            "cpu_ms_per_ping": {"web": round((web_cpu1 - web_cpu0) / max(1, answered) * 1000, 3),
                                "postgres": round((pg_cpu1 - pg_cpu0) / max(1, answered) * 1000, 3),
                                "clients": round((client_cpu1 - client_cpu0) / max(1, answered) * 1000, 3)}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=2000, help="push monitors (pinged round-robin)")
    parser.add_argument("--duration", type=float, default=15, help="seconds per concurrency")
    parser.add_argument("--concurrency", dest="levels", default="1,16",
                        help="client connections, comma-separated (one measurement each)")
    parser.add_argument("--set", action="append", default=[], metavar="VAR=VALUE",
                        help="extra environment for sitewatch (repeatable)")
    args = parser.parse_args()
    args.period, args.timeout, args.consumers, args.concurrency = 1, 5.0, None, None   # what base_env reads
    levels = [int(c) for c in args.levels.split(",")]
    workdir = tempfile.mkdtemp(prefix="sitewatch-bench-ping-")
    data_dir = os.path.join(workdir, "pg")
    env = base_env(args, data_dir, None)
    port = free_tcp_port()
    env.update({"SITEWATCH_WEB__LISTEN": f"127.0.0.1:{port}", "SITEWATCH_WEB__PING_RATE_LIMIT": "0"})
    sitewatch(env, "url", "list")                       # creates and migrates the database
    held = embedded.start(data_dir)
    meas = psycopg2.connect(held.dsn)
    meas.autocommit = True
    web = None
    try:
        tokens = add_pushes(env, meas, args.tokens, "1")
        web = subprocess.Popen([*SITEWATCH, "web"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(port, 30)
        runs = [measure(port, tokens, c, args.duration, web, data_dir, meas) for c in levels]
    finally:
        if web is not None:
            stop_process(web)
        meas.close()
        held.release()
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
                      "load_average": [round(x, 1) for x in os.getloadavg()], "tokens": args.tokens,
                      "runs": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
