"""Saturated throughput of two versions of sitewatch, alternated in one run.

"As fast as before" is a ratio between two revisions measured on the same machine in the
same hour, never against a figure from another day. This script checks out --base into
its own worktree with its own virtual environment (kept under --trees for the next run),
then runs bench/throughput.py at saturation from each tree in ABBA order (base new, new
base, ...), so load that drifts during the run weighs on both sides alike. Each run uses
its own tree's throughput.py, so the base is measured by the bench it shipped with.

    flock /work/bench.lock python bench/versions.py --base 6fdf82b --pairs 2 \\
        --new-set SITEWATCH_CHECK__ENGINE=urllib3          # issue 19: no new options, >= 0.98
    flock /work/bench.lock python bench/versions.py --base 0babb9b --pairs 2   # issue 21: regions off

--base-set/--new-set pass `--set VAR=VALUE` to one side only: a setting the base does not
know (an engine choice added later) must not reach it.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
NEW_TREE = os.path.dirname(HERE)


def tree_for(rev: str, trees: str) -> str:
    """A worktree of `rev` with an installed venv, made once and reused."""
    sha = subprocess.run(["git", "-C", NEW_TREE, "rev-parse", "--short=12", rev], check=True,
                         capture_output=True, text=True).stdout.strip()
    path = os.path.join(trees, f"sitewatch-{sha}")
    python = os.path.join(path, ".venv", "bin", "python")
    if not os.path.exists(python):
        if not os.path.isdir(path):
            # stdout is the report's: git's and pip's chatter goes to stderr
            subprocess.run(["git", "-C", NEW_TREE, "worktree", "add", "--detach", path, sha], check=True,
                           stdout=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", os.path.join(path, ".venv")], check=True, stdout=sys.stderr)
        subprocess.run([python, "-m", "pip", "install", "-q", "-e", path, "psutil"], check=True, stdout=sys.stderr)
    return path


def one_run(label: str, tree: str, python: str, args, extra_set) -> dict:
    command = [python, os.path.join(tree, "bench", "throughput.py"), "--json", "--skip-baseline",
               "--skip-startup", "--urls", str(args.urls), "--period", "1", "--duration", str(args.duration)]
    if args.dsn:
        command += ["--dsn", args.dsn]
    for setting in args.set + extra_set:
        command += ["--set", setting]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tree)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout)
    result = {"version": label, "checks_per_s": report["checks_per_s"], "missed_slots": report["missed_slots"],
              "lag_p99_s": report["lag_s"]["p99"],
              "cpu_ms_per_check_sitewatch": report["cpu_s_per_1000_checks"]["sitewatch"],
              "cpu_ms_per_check_postgres": report["cpu_s_per_1000_checks"].get("postgres")}
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the revision to compare against (git rev)")
    parser.add_argument("--trees", default="/tmp", help="where base worktrees and their venvs are kept")
    parser.add_argument("--pairs", type=int, default=2, help="base/new pairs (ABBA order)")
    parser.add_argument("--urls", type=int, default=12000, help="URLs at a 1 s period (more than can be checked)")
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--dsn", help="PostgreSQL server for fresh databases (default: embedded, per tree)")
    parser.add_argument("--set", action="append", default=[], metavar="VAR=VALUE", help="both sides")
    parser.add_argument("--base-set", action="append", default=[], metavar="VAR=VALUE", help="the base only")
    parser.add_argument("--new-set", action="append", default=[], metavar="VAR=VALUE", help="the new tree only")
    args = parser.parse_args()
    base_tree = tree_for(args.base, args.trees)
    sides = {"base": (base_tree, os.path.join(base_tree, ".venv", "bin", "python"), args.base_set),
             "new": (NEW_TREE, sys.executable, args.new_set)}
    runs = []
    for i in range(args.pairs):
        for label in (("base", "new") if i % 2 == 0 else ("new", "base")):
            tree, python, extra = sides[label]
            runs.append(one_run(label, tree, python, args, extra))
    base = statistics.median(r["checks_per_s"] for r in runs if r["version"] == "base")
    new = statistics.median(r["checks_per_s"] for r in runs if r["version"] == "new")
    print(json.dumps({"base": args.base, "runs": runs, "median_base": base, "median_new": new,
                      "ratio_new_to_base": round(new / base, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
