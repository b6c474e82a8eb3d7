"""`sitewatch apply` of many monitors: the first apply into an empty database, a second apply of
the same file (no changes), and one with 1% of the entries changed (issue 22: under 15 s for
100,000 planned and applied, under 5 s for a no-change apply of 100,000).

Each figure is the wall time of the real `sitewatch apply` command (Python start, parsing and
validating the file, reading the monitors, the plan, the writes, printing the plan), on a
fresh database created on the server given by --dsn and dropped afterwards.

    flock /work/bench.lock python bench/apply.py --entries 100000
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import psycopg2
import psycopg2.extensions

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE = "sitewatch_bench_apply"


def write_file(path: str, n: int, changed_every: int | None = None) -> None:
    """Named entries with a few options, as a team keeping its monitors in Git writes them;
    with changed_every, every changed_every-th entry has another period."""
    with open(path, "w") as f:
        for i in range(n):
            period = 30 if changed_every and i % changed_every == 0 else 60
            f.write(f"- url: https://site{i}.example/health\n  name: site-{i}\n  period: {period}\n"
                    f"  timeout: 5\n")


def timed_apply(env: dict, path: str) -> tuple[float, int]:
    """(seconds, plan lines) of one `sitewatch apply PATH`."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "sitewatch", "apply", path], env=env, check=True,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    lines = done.stdout.splitlines()
    return seconds, 0 if lines == ["no changes"] else len(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--dsn", default=DEFAULT_DSN,
                        help=f"a server to create the database on (default: {DEFAULT_DSN})")
    parser.add_argument("--runs", type=int, default=1, help="repeat the three applies, each time on a fresh database")
    args = parser.parse_args()
    admin = psycopg2.connect(args.dsn)
    admin.autocommit = True
    with tempfile.TemporaryDirectory() as directory:
        same, changed = os.path.join(directory, "monitors.yaml"), os.path.join(directory, "changed.yaml")
        write_file(same, args.entries)
        write_file(changed, args.entries, changed_every=100)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SITEWATCH_") and k != "DB_DSN"}
        env.update(DB_DSN=psycopg2.extensions.make_dsn(args.dsn, dbname=DATABASE), HOME=directory)
        for _ in range(args.runs):
            with admin.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
                cur.execute(f"CREATE DATABASE {DATABASE}")
            try:
                # The schema first, so the figures are the applies alone.
                subprocess.run([sys.executable, "-m", "sitewatch", "db", "migrate"], env=env, check=True,
                               capture_output=True)
                for what, path, target in (("first apply (all new)", same, 15.0), ("no-change apply", same, 5.0),
                                           ("1% changed", changed, 15.0)):
                    seconds, lines = timed_apply(env, path)
                    verdict = "met" if seconds < target else "NOT met"
                    print(f"{what:22} {args.entries} entries  {seconds:6.2f} s  {lines:6} plan lines  "
                          f"(target < {target:.0f} s: {verdict})", flush=True)
            finally:
                with admin.cursor() as cur:
                    cur.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    admin.close()


if __name__ == "__main__":
    main()
