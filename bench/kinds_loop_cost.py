"""CPU per tcp:// and dns:// check: on the curl loop (run/transfers.py) vs on a thread each,
and an http:// check on the loop for reference.

One process, no database: the consumer's two ways of running a check of another kind, fed the
same targets with the same number in flight, timed by this process's CPU (time.process_time:
every thread's, the loop's and libcurl's included). Alternated A B A B per kind:

* loop:    run/dispatch.CurlAndThreads, as a curl-engine consumer runs them now (tcp://
           and dns:// to an address on its one CurlMulti loop);
* threads: run/concurrency.CheckThreads with probe.check, as they ran before (a thread each,
           the blocking fetch: stream.py's connect for tcp://, steps.run for dns://).

Targets, only on 127.0.0.1: tcp:// to nginx (bench/targets.py FastTarget, `GET / HTTP/1.0`
sent and `HTTP/1` expected, as bench/kinds_mix.py), dns:// to kinds_mix's pre-built-bytes DNS
server in a process of its own. The servers' CPU is not counted: only the checker's.

    flock /work/bench.lock python bench/kinds_loop_cost.py
    python bench/kinds_loop_cost.py --checks 4000 --in-flight 200 --rounds 2
"""

import argparse
import json
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kinds_mix import DNS_ZONE, start_dns  # noqa: E402
from targets import FastTarget, stop_process  # noqa: E402

from sitewatch import config  # noqa: E402
from sitewatch.check import definition, probe  # noqa: E402
from sitewatch.urlspec import make_entry  # noqa: E402


def targets_for(kind: str, port: int, count: int) -> list:
    cfg = config.load({}, {}, None)
    options = {"send": "GET / HTTP/1.0\\r\\n\\r\\n", "expect": "HTTP/1"} if kind == "tcp" else {}
    url = {"tcp": f"tcp://127.0.0.1:{port}", "dns": f"dns://127.0.0.1:{port}/x.{DNS_ZONE[:-1]}",
           "http": f"http://127.0.0.1:{port}/"}[kind]
    entry = make_entry({"url": url, "timeout": 5, **options}, cfg.check)
    target = definition.target_for(entry.as_row(), cfg.check.max_body_bytes)
    return [target] * count


def run(way: str, targets: list, in_flight: int) -> dict:
    """Check every target with at most `in_flight` at once; CPU and wall time, failures."""
    from sitewatch.run.concurrency import CheckThreads
    from sitewatch.run.dispatch import CurlAndThreads
    from sitewatch.run.transfers import CurlTransfers

    room = threading.Semaphore(in_flight)
    done = threading.Event()
    outcomes = []

    def finished(task, outcome, t0=None):
        outcomes.append(outcome)
        room.release()
        if len(outcomes) == len(targets):
            done.set()

    if way == "loop":
        runner = CurlAndThreads(CurlTransfers(lambda task: 0.0, finished), None)
    else:
        runner = CheckThreads(lambda task, target: finished(task, probe.check(target)))
    cpu, wall = time.process_time(), time.monotonic()
    for index, target in enumerate(targets):
        room.acquire()
        runner.submit(index, target)
        runner.ensure(min(in_flight, index + 1))
    done.wait(120)
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    runner.stop()
    failed = sum(1 for outcome in outcomes if not outcome.ok)
    return {"checks": len(outcomes), "failed": failed, "cpu_ms_per_check": round(cpu * 1000 / len(outcomes), 4),
            "checks_per_s": round(len(outcomes) / wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checks", type=int, default=4000, help="checks per run")
    parser.add_argument("--in-flight", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2, help="A/B pairs per kind (loop, then threads)")
    parser.add_argument("--kinds", default="http,tcp,dns",
                        help="http (the reference: a GET of nginx, on the loop only), tcp, dns")
    args = parser.parse_args()
    nginx = FastTarget().start()
    dns_proc, dns_port = start_dns()
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
              "checks": args.checks, "in_flight": args.in_flight, "runs": [], "median_cpu_ms_per_check": {}}
    try:
        for kind in args.kinds.split(","):
            port = dns_port if kind == "dns" else nginx.port
            ways = ("loop",) if kind == "http" else ("loop", "threads")
            targets = targets_for(kind, port, args.checks)
            for way in ways:
                run(way, targets[:200], args.in_flight)          # warm-up: imports, handles, caches
            for _ in range(args.rounds):
                for way in ways:
                    result = {"kind": kind, "way": way, **run(way, targets, args.in_flight)}
                    print(json.dumps(result), file=sys.stderr)
                    report["runs"].append(result)
            for way in ways:
                report["median_cpu_ms_per_check"][f"{kind} {way}"] = statistics.median(
                    r["cpu_ms_per_check"] for r in report["runs"] if r["kind"] == kind and r["way"] == way)
    finally:
        stop_process(dns_proc)
        nginx.stop()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
