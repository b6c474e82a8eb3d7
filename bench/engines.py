"""The check engines side by side: saturated `sitewatch run` on curl, then urllib3, alternated.

Each round is bench/throughput.py's saturation scenario (more URLs at a 1 s period than
the machine can check, against local nginx) with check.engine set; the rounds alternate
curl, urllib3, curl, urllib3 in one invocation, so both engines see the same machine.
A bare pycurl CurlMulti client (100 transfers in flight, a fresh connection per request,
GET plus a regex on the body: what one check does, without sitewatch) is measured in the
same run against the same nginx, as the ceiling to compare with (issue 23: curl >= 2x
urllib3 and >= 0.6x the bare client). Takes about 3 minutes; run it under the machine lock:

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
import time

import pycurl

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from targets import FastTarget  # noqa: E402

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
        while True:
            queued, ok, failed = multi.info_read()
            for handle in ok + [f[0] for f in failed]:
                multi.remove_handle(handle)
                done += 1
                matched += bool(pattern.search(b"".join(bodies[handle])))
                start(handle)
            if not queued:
                break
        multi.select(0.01)
    elapsed = time.monotonic() - began
    if matched < done * 0.99:
        raise SystemExit(f"bare client: only {matched} of {done} responses matched")
    return done / elapsed


def round_of(engine: str, args) -> dict:
    command = [sys.executable, os.path.join(HERE, "throughput.py"), "--json", "--skip-startup",
               "--skip-baseline", "--urls", str(args.urls), "--period", "1", "--duration", str(args.duration),
               "--warmup", str(args.warmup), "--set", f"SITEWATCH_CHECK__ENGINE={engine}"]
    if args.dsn:
        command += ["--dsn", args.dsn]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"throughput.py ({engine}) failed: {result.stderr[-2000:]}")
    report = json.loads(result.stdout)
    return {"engine": engine, "checks_per_s": report["checks_per_s"], "ok": report["ok"],
            "recorded": report["recorded_slots"], "peak_rss_mb": report["peak_rss_mb"],
            "peak_check_threads": report.get("peak_check_threads"),
            "cpu_ms_per_check": report["cpu_s_per_1000_checks"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", help="PostgreSQL server for the runs' databases (default: embedded)")
    parser.add_argument("--urls", type=int, default=12_000)
    parser.add_argument("--duration", type=float, default=32)
    parser.add_argument("--warmup", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="rounds per engine, alternated")
    parser.add_argument("--bare-seconds", type=float, default=8)
    args = parser.parse_args()

    target = FastTarget(workers=1).start()
    try:
        bare = bare_pycurl(f"http://127.0.0.1:{target.port}/bare", args.bare_seconds)
    finally:
        target.stop()
    print(f"bare pycurl CurlMulti client: {bare:,.0f} req/s", file=sys.stderr, flush=True)
    rounds = []
    for _ in range(args.rounds):
        for engine in ("curl", "urllib3"):
            rounds.append(round_of(engine, args))
            print(json.dumps(rounds[-1]), file=sys.stderr, flush=True)
    median = {engine: statistics.median(r["checks_per_s"] for r in rounds if r["engine"] == engine)
              for engine in ("curl", "urllib3")}
    summary = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(), "urls": args.urls,
               "bare_pycurl_req_per_s": round(bare), "rounds": rounds,
               "median_checks_per_s": median,
               "curl_to_urllib3": round(median["curl"] / median["urllib3"], 2),
               "curl_to_bare_pycurl": round(median["curl"] / bare, 2)}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
