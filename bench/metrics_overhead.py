"""Saturated throughput with the metrics listener off and on, in one run (issue 11: >= 95%).

Runs bench/throughput.py at saturation with metrics.listen empty (off) and set (on), in
ABBA order (off on on off ...), scraping /metrics every --scrape-interval seconds while it is on
(Prometheus usually scrapes every 15-60 s; 1 s is the harsh case), and prints each
run's checks/s, the medians and their ratio.

    flock /work/bench.lock python bench/metrics_overhead.py --pairs 2 --urls 12000 --duration 60
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
LISTEN = "127.0.0.1:19464"     # not the default 9464: nothing else on the machine should answer


def scraper(stop: threading.Event, interval: float, stats: dict) -> None:
    while not stop.wait(interval):
        t0 = time.monotonic()
        try:
            with urllib.request.urlopen(f"http://{LISTEN}/metrics", timeout=5) as reply:
                size = len(reply.read())
            stats["scrapes"] += 1
            stats["bytes"] = size
            stats["max_s"] = max(stats["max_s"], time.monotonic() - t0)
        except OSError:
            stats["failed"] += 1     # before the listener is up, or after it stopped


def one_run(args, metrics_on: bool) -> dict:
    command = [sys.executable, os.path.join(HERE, "throughput.py"), "--json", "--skip-baseline", "--skip-startup",
               "--urls", str(args.urls), "--period", "1", "--duration", str(args.duration),
               "--set", f"SITEWATCH_METRICS__LISTEN={LISTEN if metrics_on else ''}"]
    stop, stats = threading.Event(), {"scrapes": 0, "failed": 0, "bytes": 0, "max_s": 0.0}
    thread = threading.Thread(target=scraper, args=(stop, args.scrape_interval, stats), daemon=True)
    if metrics_on:
        thread.start()
    try:
        done = subprocess.run(command, capture_output=True, text=True)
    finally:
        stop.set()
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout)
    result = {"metrics": "on" if metrics_on else "off", "checks_per_s": report["checks_per_s"],
              "missed_slots": report["missed_slots"], "lag_p99_s": report["lag_s"]["p99"],
              "cpu_ms_per_check_sitewatch": report["cpu_s_per_1000_checks"]["sitewatch"]}
    if metrics_on:
        result["scrapes"] = stats["scrapes"]
        result["scrape_bytes"] = stats["bytes"]
        result["slowest_scrape_s"] = round(stats["max_s"], 3)
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=2, help="off/on pairs (ABBA order)")
    parser.add_argument("--urls", type=int, default=12000, help="URLs at a 1 s period (more than can be checked)")
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--scrape-interval", type=float, default=1.0)
    args = parser.parse_args()
    runs = []
    # ABBA order (off on, on off, ...): a load that drifts during the run (other processes on
    # the machine) weighs on both sides alike instead of always on the second.
    for i in range(args.pairs):
        for metrics_on in ((False, True) if i % 2 == 0 else (True, False)):
            runs.append(one_run(args, metrics_on))
    off = statistics.median(r["checks_per_s"] for r in runs if r["metrics"] == "off")
    on = statistics.median(r["checks_per_s"] for r in runs if r["metrics"] == "on")
    print(json.dumps({"runs": runs, "median_off": off, "median_on": on, "ratio_on_to_off": round(on / off, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
