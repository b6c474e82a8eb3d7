"""The check engines side by side: saturated `sitewatch run` on curl, then urllib3, alternated.

Each round is bench/throughput.py's saturation scenario (20,000 URLs at a 1 s period, more than
two cores check, each with a regex on the body, against local nginx) with check.engine set, on
a fresh embedded database (sitewatch's default; see docs/benchmarks.md "Check engines" for why
not a shared server). Rounds alternate bare, curl, urllib3, bare, curl, urllib3 in one
invocation, so every figure sees the same machine. "bare" is a pycurl CurlMulti client (100
transfers in flight, a fresh connection per request, GET plus a regex on the body: what one
check does, without sitewatch) against its own nginx: the ceiling to compare with (issue 23:
curl >= 2x urllib3 and >= 0.6x the bare client). Checks/s counts the checks that started in the
steady window (capacity, whatever slot each was for). Before the rounds, each engine's own CPU
per check (GET plus regex, no database; alternated) is measured in this process. Takes about
4.5 minutes; run it under the machine lock:

    flock /work/bench.lock .venv/bin/python bench/engines.py
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
REGEX = "bench ok"     # in the body of every target (bench/targets.py FastTarget); the bare client's too


def bare_pycurl(url: str, seconds: float, in_flight: int = 100) -> float:
    """Requests per second of a bare CurlMulti client: fresh connections, GET, a regex on the body."""
    pattern = re.compile(REGEX.encode())
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

    target = Target(url, regex=REGEX)
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


def bare_round(args) -> dict:
    target = FastTarget(workers=1).start()
    try:
        started = time.process_time()
        per_s = bare_pycurl(f"http://127.0.0.1:{target.port}/bare", args.bare_seconds)
        cpu_ms = (time.process_time() - started) / (per_s * args.bare_seconds) * 1000
    finally:
        target.stop()
    return {"engine": "bare", "checks_per_s": round(per_s, 1), "cpu_ms_per_request": round(cpu_ms, 4)}


def base_env(args) -> tuple[dict, str]:
    """Environment and working directory that make `python -m sitewatch` import --base-code's
    sitewatch (the working directory comes first on sys.path: not this checkout's)."""
    env = {**os.environ, "PYTHONPATH": args.base_code}
    found = subprocess.run([sys.executable, "-c", "import sitewatch; print(sitewatch.__file__)"], env=env,
                           cwd="/", capture_output=True, text=True).stdout.strip()
    if not found.startswith(os.path.abspath(args.base_code)):
        raise SystemExit(f"--base-code: sitewatch imports from {found!r}, not from {args.base_code}")
    return env, "/"


def round_of(engine: str, args) -> dict:
    env, cwd = base_env(args) if engine == "curl-base" else (None, None)
    command = [sys.executable, os.path.join(HERE, "throughput.py"), "--json", "--skip-startup",
               "--skip-baseline", "--urls", str(args.urls), "--period", "1", "--duration", str(args.duration),
               "--warmup", str(args.warmup), "--regex", REGEX,
               "--set", f"SITEWATCH_CHECK__ENGINE={engine.removesuffix('-base')}",
               # Ports of their own: another session's `sitewatch run` may hold the default ones.
               "--set", f"SITEWATCH_METRICS__LISTEN=127.0.0.1:{free_port()}",
               "--set", f"SITEWATCH_WEB__LISTEN=127.0.0.1:{free_port()}"]
    if args.dsn:
        command += ["--dsn", args.dsn]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=cwd)
    if result.returncode != 0:
        raise SystemExit(f"throughput.py ({engine}) failed: {result.stderr[-2000:]}")
    report = json.loads(result.stdout)
    if report.get("exit_code") not in (0, None) or not report["recorded_slots"]:
        raise SystemExit(f"sitewatch run ({engine}) recorded nothing (exit code {report.get('exit_code')})")
    if report["due_per_s"] < report["checks_started_per_s"] * 1.2:
        raise SystemExit(f"{engine}: not saturated ({report['due_per_s']} due/s for "
                         f"{report['checks_started_per_s']} checks/s): raise --urls")
    return {"engine": engine, "checks_per_s": report["checks_started_per_s"],
            "checks_per_s_by_slot": report["checks_per_s"], "due_per_s": report["due_per_s"],
            "ok": report["ok"], "recorded": report["recorded_slots"], "peak_rss_mb": report["peak_rss_mb"],
            "peak_check_threads": report.get("peak_check_threads"), "failed_by_kind": report["failed_by_kind"],
            "cpu_ms_per_check": report["cpu_s_per_1000_checks"], "machine_cpu_s": report["machine_cpu_s_in_window"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", help="PostgreSQL server for the runs' databases (default: a fresh embedded "
                        "one per round, as measured in docs/benchmarks.md)")
    parser.add_argument("--urls", type=int, default=20_000, help="well above what the machine checks in a second")
    parser.add_argument("--duration", type=float, default=40, help="seconds per round (window: warm-up to 10 s "
                        "before the end)")
    parser.add_argument("--warmup", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="rounds per engine, alternated")
    parser.add_argument("--bare-seconds", type=float, default=8)
    parser.add_argument("--base-code", help="a directory holding another version's sitewatch package (e.g. "
                        "`git archive REV sitewatch | tar -x -C DIR`): its curl engine runs a round too, "
                        "alternated with the others, as 'curl-base'")
    parser.add_argument("--cpu-checks", type=int, default=3000, help="checks per engine for the CPU figure")
    args = parser.parse_args()

    target = FastTarget(workers=1).start()
    try:
        cpu = {engine: [] for engine in ("curl", "urllib3")}
        for _ in range(2):  # alternated
            for engine in cpu:
                cpu[engine].append(cpu_per_check(f"http://127.0.0.1:{target.port}/cpu", engine, args.cpu_checks))
    finally:
        target.stop()
    cpu_ms = {engine: round(statistics.median(values), 3) for engine, values in cpu.items()}
    print(f"CPU ms per check: {cpu_ms}", file=sys.stderr, flush=True)
    engines = ("bare", "curl", "urllib3", *(("curl-base",) if args.base_code else ()))
    rounds = []
    for _ in range(args.rounds):
        for engine in engines:
            rounds.append(bare_round(args) if engine == "bare" else round_of(engine, args))
            print(json.dumps(rounds[-1]), file=sys.stderr, flush=True)
    median = {engine: statistics.median(r["checks_per_s"] for r in rounds if r["engine"] == engine)
              for engine in engines}
    summary = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
               "urls": args.urls, "regex": REGEX, "database": "given DSN" if args.dsn else "embedded",
               "client_cpu_ms_per_check": cpu_ms,
               "client_checks_per_cpu_s_curl_to_urllib3": round(cpu_ms["urllib3"] / cpu_ms["curl"], 2),
               "rounds": rounds,
               "median_checks_per_s": median,
               "curl_to_urllib3": round(median["curl"] / median["urllib3"], 2),
               "curl_to_bare_pycurl": round(median["curl"] / median["bare"], 2),
               **({"base_code": args.base_code, "curl_to_curl_base": round(median["curl"] / median["curl-base"], 2)}
                  if args.base_code else {})}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
