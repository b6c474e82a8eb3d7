"""Where a mixed run's CPU goes: bench/kinds_mix.py with py-spy on the run's children.

Runs `bench/kinds_mix.py --json ARGS...` and, once each `sitewatch run`'s consumers, web child
and producer are --delay seconds old, records them with `py-spy record --gil --nonblocking
--format raw` for --seconds (only while a thread holds the GIL: Python's own work; without
--gil py-spy walks every one of the mix's ~550 threads at each sample and takes a third of
two cores). Every 5 s it notes each sitewatch child's CPU seconds (psutil), so a process's
cores in the window are read from cpu.jsonl. Everything goes to OUT: report.json and
bench.log (kinds_mix's), runN-ROLE-PID.txt (py-spy's), cpu.jsonl.

    flock /work/bench.lock .venv/bin/python bench/kinds_profile.py /tmp/prof -- --rounds 1 --warmup 15 --duration 30
    (the arguments after -- are bench/kinds_mix.py's)

py-spy is not a dependency of sitewatch: `pip install py-spy` first.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import psutil

ROLES = ("sitewatch: consumer", "sitewatch: web", "sitewatch: producer")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--delay", type=float, default=25, help="seconds after a child starts before recording")
    parser.add_argument("--seconds", type=int, default=15, help="py-spy's recording, seconds")
    parser.add_argument("--rate", type=int, default=200, help="py-spy's samples a second")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)      # after --: bench/kinds_mix.py's arguments
    args, forwarded = parser.parse_args(argv[:split]), argv[split + 1:]
    os.makedirs(args.out, exist_ok=True)
    here = os.path.dirname(os.path.abspath(__file__))
    spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
    with open(f"{args.out}/report.json", "w") as report, open(f"{args.out}/bench.log", "w") as log, \
            open(f"{args.out}/cpu.jsonl", "w") as cpu:
        bench = subprocess.Popen([sys.executable, os.path.join(here, "kinds_mix.py"), "--json", *forwarded],
                                 stdout=report, stderr=log)
        seen, runs, spies, next_cpu = set(), 0, [], 0.0
        while bench.poll() is None:
            children = []
            for p in psutil.process_iter(["pid", "cmdline", "create_time"]):
                title = " ".join(" ".join(p.info["cmdline"] or []).split())    # setproctitle pads it
                if title.startswith(ROLES):
                    children.append((p, title))
            if time.time() >= next_cpu:
                next_cpu = time.time() + 5
                row = {"t": round(time.time(), 1)}
                for p, title in children:
                    try:
                        times = p.cpu_times()
                    except psutil.Error:
                        continue
                    row[f"{title.removeprefix('sitewatch: ')}|{p.pid}"] = round(times.user + times.system, 2)
                cpu.write(json.dumps(row) + "\n")
                cpu.flush()
            ready = [(p, t) for p, t in children
                     if p.pid not in seen and time.time() - p.info["create_time"] >= args.delay]
            if ready:
                runs += 1
                for p, title in ready:
                    seen.add(p.pid)
                    path = f"{args.out}/run{runs}-{title.removeprefix('sitewatch: ').replace(' ', '')}-{p.pid}.txt"
                    spies.append(subprocess.Popen([spy, "record", "--pid", str(p.pid), "--duration", str(args.seconds),
                                                   "--rate", str(args.rate), "--nonblocking", "--gil",
                                                   "--format", "raw", "-o", path],
                                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(0.5)
    for s in spies:
        s.wait()
    return bench.returncode


if __name__ == "__main__":
    sys.exit(main())
