"""Saturated throughput with a listener of `sitewatch run` off and on, in one run.

    --feature metrics: metrics.listen empty vs set, /metrics scraped (issue 11: >= 95%)
    --feature web:     web.listen empty vs set, the status page and summary polled (issue 12: >= 90%)

Runs bench/throughput.py at saturation with the feature's listen address empty (off) and set
(on), in ABBA order (off on on off ...), polling the feature's pages every --poll-interval
seconds while it is on (Prometheus scrapes every 15-60 s and a status page refreshes every
30 s or so; 1 s is the harsh case), and prints each run's checks/s, the medians and their
ratio. Only the feature's own setting changes: the other listener keeps its default.

    flock /work/bench.lock python bench/overhead.py --feature metrics --pairs 3 --urls 12000 --duration 60
    flock /work/bench.lock python bench/overhead.py --feature web --pairs 3 --urls 12000 --duration 60
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
# Not the defaults (9464, 8080): nothing else on the machine should answer.
FEATURES = {
    "metrics": ("SITEWATCH_METRICS__LISTEN", "127.0.0.1:19464", ("/metrics",)),
    "web": ("SITEWATCH_WEB__LISTEN", "127.0.0.1:18080", ("/", "/api/v1/summary")),
}


def poller(stop: threading.Event, interval: float, listen: str, paths, stats: dict) -> None:
    while not stop.wait(interval):
        for path in paths:
            t0 = time.monotonic()
            try:
                with urllib.request.urlopen(f"http://{listen}{path}", timeout=10) as reply:
                    size = len(reply.read())
                stats["polls"] += 1
                stats["bytes"] = size
                stats["max_s"] = max(stats["max_s"], time.monotonic() - t0)
            except OSError:
                stats["failed"] += 1     # before the listener is up, or after it stopped


def one_run(args, on: bool) -> dict:
    variable, listen, paths = FEATURES[args.feature]
    command = [sys.executable, os.path.join(HERE, "throughput.py"), "--json", "--skip-baseline", "--skip-startup",
               "--urls", str(args.urls), "--period", "1", "--duration", str(args.duration),
               "--set", f"{variable}={listen if on else ''}"]
    stop, stats = threading.Event(), {"polls": 0, "failed": 0, "bytes": 0, "max_s": 0.0}
    thread = threading.Thread(target=poller, args=(stop, args.poll_interval, listen, paths, stats), daemon=True)
    if on:
        thread.start()
    try:
        done = subprocess.run(command, capture_output=True, text=True)
    finally:
        stop.set()
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout)
    result = {args.feature: "on" if on else "off", "checks_per_s": report["checks_per_s"],
              "missed_slots": report["missed_slots"], "lag_p99_s": report["lag_s"]["p99"],
              "cpu_ms_per_check_sitewatch": report["cpu_s_per_1000_checks"]["sitewatch"]}
    if on:
        result["polls"] = stats["polls"]
        result["poll_bytes"] = stats["bytes"]
        result["slowest_poll_s"] = round(stats["max_s"], 3)
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=2, help="off/on pairs (ABBA order)")
    parser.add_argument("--urls", type=int, default=12000, help="URLs at a 1 s period (more than can be checked)")
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--feature", choices=sorted(FEATURES), default="metrics")
    parser.add_argument("--poll-interval", type=float, default=1.0)
    args = parser.parse_args()
    runs = []
    # ABBA order (off on, on off, ...): a load that drifts during the run (other processes on
    # the machine) weighs on both sides alike instead of always on the second.
    for i in range(args.pairs):
        for on in ((False, True) if i % 2 == 0 else (True, False)):
            runs.append(one_run(args, on))
    off = statistics.median(r["checks_per_s"] for r in runs if r[args.feature] == "off")
    on = statistics.median(r["checks_per_s"] for r in runs if r[args.feature] == "on")
    print(json.dumps({"runs": runs, "median_off": off, "median_on": on, "ratio_on_to_off": round(on / off, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
