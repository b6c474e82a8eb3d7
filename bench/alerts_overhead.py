"""Saturated throughput with alerting on vs off, measured in one run (DESIGN.md section 9:
each new part costs at most 10%).

"Off" is sitewatch without the alerts subsystem (the main branch before it: no url_state
update in the result write, no notifier child), installed in its own virtualenv; "on" is
this tree. Both run bench/throughput.py's saturation scenario with the same arguments,
alternating off, on, off, on ... so drift on a shared machine hits both alike. Each run
starts from a fresh embedded database and the same nginx target.

    python -m venv /tmp/base && /tmp/base/bin/pip install "$(git archive ...)"   # see docs/benchmarks.md
    python bench/alerts_overhead.py --off-python /tmp/base/bin/python --rounds 2 \
        --urls 12000 --period 1 --duration 60

Runs from a neutral directory: `python -m sitewatch` would otherwise import the package in
the current directory instead of the interpreter's own.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

THROUGHPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "throughput.py")


def one_run(python, passthrough) -> dict:
    done = subprocess.run([python, THROUGHPUT, "--json", "--skip-baseline", "--skip-startup", *passthrough],
                          capture_output=True, text=True, cwd=tempfile.gettempdir())
    if done.returncode != 0:
        raise SystemExit(f"{python} throughput.py failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--off-python", required=True, help="interpreter with sitewatch without alerts")
    parser.add_argument("--on-python", default=sys.executable, help="interpreter with this sitewatch")
    parser.add_argument("--rounds", type=int, default=2)
    args, passthrough = parser.parse_known_args()
    results = {"off": [], "on": []}
    for round_number in range(1, args.rounds + 1):
        for label, python in (("off", args.off_python), ("on", args.on_python)):
            report = one_run(python, passthrough)
            results[label].append(report)
            print(f"round {round_number} {label}: {report['checks_per_s']} checks/s, lag p99 "
                  f"{report['lag_s']['p99']} s, cpu ms/check sitewatch {report['cpu_s_per_1000_checks']['sitewatch']}"
                  f" postgres {report['cpu_s_per_1000_checks']['postgres']}, missed {report['missed_slots']}",
                  file=sys.stderr, flush=True)
    off = statistics.mean(r["checks_per_s"] for r in results["off"])
    on = statistics.mean(r["checks_per_s"] for r in results["on"])
    summary = {"off_checks_per_s": [r["checks_per_s"] for r in results["off"]],
               "on_checks_per_s": [r["checks_per_s"] for r in results["on"]],
               "off_mean": round(off, 1), "on_mean": round(on, 1), "ratio_on_to_off": round(on / off, 3),
               "postgres_cpu_ms_per_check": {k: [r["cpu_s_per_1000_checks"]["postgres"] for r in v]
                                             for k, v in results.items()},
               "sitewatch_cpu_ms_per_check": {k: [r["cpu_s_per_1000_checks"]["sitewatch"] for r in v]
                                              for k, v in results.items()}}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
