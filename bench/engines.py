"""The check engines side by side: saturated `sitewatch run` on curl, then urllib3, alternated.

Each round is bench/throughput.py's saturation scenario (more URLs at a 1 s period than
the machine can check, against local nginx) with check.engine set; the rounds alternate
curl, urllib3, curl, urllib3 in one invocation, so both engines see the same machine.
A bare pycurl CurlMulti client (100 transfers in flight, a fresh connection per request,
GET plus a regex on the body: what one check does, without sitewatch) is measured in the
same run against the same nginx, as the ceiling to compare with (issue 23: curl >= 2x
urllib3 and >= 0.6x the bare client). Before the rounds, each engine's own CPU per check
(GET plus regex, no database; alternated) is measured in this process: on a shared,
busy machine CPU per check is steadier than checks/s. Takes about 3.5 minutes; run it
under the machine lock:

    flock -x /tmp/sitewatch-machine.lock .venv/bin/python bench/engines.py \
        --dsn postgresql://postgres@127.0.0.1:5432/postgres
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pycurl

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from targets import FastTarget, free_port  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def bare_pycurl(url: str, seconds: float, in_flight: int = 100) -> float:
    """Requests per second of a bare CurlMulti client: fresh connections, GET, a regex on the body."""
    pattern = re.compile(rb"bench ok")
    multi = pycurl.CurlMulti()
    bodies = {}
    done = matched = 0

    def start(handle):
        chunks = bodies[handle] = []
        handle.setopt(pycurl.URL, url)
        handle.setopt(pycurl.FRESH_CONNECT, 1)
        handle.setopt(pycurl.FORBID_REUSE, 1)
        handle.setopt(pycurl.NOSIGNAL, 1)
        handle.setopt(pycurl.WRITEFUNCTION, chunks.append)
        multi.add_handle(handle)

    for _ in range(in_flight):
        start(pycurl.Curl())
    end = time.monotonic() + seconds
    began = time.monotonic()
    while time.monotonic() < end:
        while multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
            pass
        restarted = 0
        while True:
            queued, ok, failed = multi.info_read()
            for handle in ok + [f[0] for f in failed]:
                multi.remove_handle(handle)
                done += 1
                matched += bool(pattern.search(b"".join(bodies[handle])))
                start(handle)
                restarted += 1
            if not queued:
                break
        if not restarted:   # new transfers start on the next perform(), not after a select() timeout
            multi.select(0.01)
    elapsed = time.monotonic() - began
    if matched < done * 0.99:
        raise SystemExit(f"bare client: only {matched} of {done} responses matched")
    return done / elapsed


def cpu_per_check(url: str, engine: str, checks: int) -> float:
    """This process's CPU ms per check (GET plus a regex), no database: the engine's own cost.

    urllib3: the check on 50 threads, as a consumer runs it; curl: run/transfers.py's loop.
    """
    from sitewatch.check.choice import engine_named
    from sitewatch.check.probe import Target, check

    target = Target(url, regex="bench ok")
    done = threading.Event()
    count = [0]
    started = time.process_time()
    if engine == "urllib3":
        with ThreadPoolExecutor(50) as pool:
            outcomes = list(pool.map(lambda _: check(target, engine_named("urllib3")), range(checks)))
    else:
        from sitewatch.run.transfers import CurlTransfers
        outcomes = []

        def on_done(task, outcome, t0):
            outcomes.append(outcome)
            count[0] += 1
            if count[0] == checks:
                done.set()

        transfers = CurlTransfers(lambda task: 0.0, on_done)
        transfers.ensure(1)
        for i in range(checks):
            transfers.submit(i, target)
        done.wait(300)
        transfers.stop()
    cpu = time.process_time() - started
    if sum(o.ok for o in outcomes) < checks * 0.99:
        raise SystemExit(f"{engine}: only {sum(o.ok for o in outcomes)} of {checks} checks ok")
    return cpu / checks * 1000


def round_of(engine: str, args) -> dict:
    command = [sys.executable, os.path.join(HERE, "throughput.py"), "--json", "--skip-startup",
               "--skip-baseline", "--urls", str(args.urls), "--period", "1", "--duration", str(args.duration),
               "--warmup", str(args.warmup), "--set", f"SITEWATCH_CHECK__ENGINE={engine}",
               # Ports of their own: another session's `sitewatch run` may hold the default ones.
               "--set", f"SITEWATCH_METRICS__LISTEN=127.0.0.1:{free_port()}",
               "--set", f"SITEWATCH_WEB__LISTEN=127.0.0.1:{free_port()}"]
    if args.dsn:
        command += ["--dsn", args.dsn]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"throughput.py ({engine}) failed: {result.stderr[-2000:]}")
    report = json.loads(result.stdout)
    if report.get("exit_code") not in (0, None) or not report["recorded_slots"]:
        raise SystemExit(f"sitewatch run ({engine}) recorded nothing (exit code {report.get('exit_code')})")
    return {"engine": engine, "checks_per_s": report["checks_per_s"], "ok": report["ok"],
            "recorded": report["recorded_slots"], "peak_rss_mb": report["peak_rss_mb"],
            "peak_check_threads": report.get("peak_check_threads"), "failed_by_kind": report["failed_by_kind"],
            "cpu_ms_per_check": report["cpu_s_per_1000_checks"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", help="PostgreSQL server for the runs' databases (default: embedded)")
    parser.add_argument("--urls", type=int, default=12_000)
    parser.add_argument("--duration", type=float, default=32)
    parser.add_argument("--warmup", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="rounds per engine, alternated")
    parser.add_argument("--bare-seconds", type=float, default=8)
    parser.add_argument("--cpu-checks", type=int, default=3000, help="checks per engine for the CPU figure")
    args = parser.parse_args()

    target = FastTarget(workers=1).start()
    try:
        bare_started = time.process_time()
        bare = bare_pycurl(f"http://127.0.0.1:{target.port}/bare", args.bare_seconds)
        bare_cpu_ms = (time.process_time() - bare_started) / (bare * args.bare_seconds) * 1000
        cpu = {engine: [] for engine in ("curl", "urllib3")}
        for _ in range(2):  # alternated
            for engine in cpu:
                cpu[engine].append(cpu_per_check(f"http://127.0.0.1:{target.port}/cpu", engine, args.cpu_checks))
    finally:
        target.stop()
    cpu_ms = {engine: round(statistics.median(values), 3) for engine, values in cpu.items()}
    print(f"bare pycurl CurlMulti client: {bare:,.0f} req/s, {bare_cpu_ms:.3f} ms CPU per request; "
          f"CPU ms per check: {cpu_ms}", file=sys.stderr, flush=True)
    rounds = []
    for _ in range(args.rounds):
        for engine in ("curl", "urllib3"):
            rounds.append(round_of(engine, args))
            print(json.dumps(rounds[-1]), file=sys.stderr, flush=True)
    median = {engine: statistics.median(r["checks_per_s"] for r in rounds if r["engine"] == engine)
              for engine in ("curl", "urllib3")}
    summary = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(), "urls": args.urls,
               "bare_pycurl_req_per_s": round(bare), "bare_pycurl_cpu_ms_per_request": round(bare_cpu_ms, 3),
               "client_cpu_ms_per_check": cpu_ms,
               "client_checks_per_cpu_s_curl_to_urllib3": round(cpu_ms["urllib3"] / cpu_ms["curl"], 2),
               "rounds": rounds,
               "median_checks_per_s": median,
               "curl_to_urllib3": round(median["curl"] / median["urllib3"], 2),
               "curl_to_bare_pycurl": round(median["curl"] / bare, 2)}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
