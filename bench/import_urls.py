"""`sitewatch url import` of many URLs: wall time and peak memory, YAML entries vs plain lines.

Each format is imported into its own fresh database on the server given by --dsn (or
an embedded one), by the real `sitewatch` command. Only files and the database are used.

    python bench/import_urls.py --urls 100000 --dsn postgresql://postgres@127.0.0.1:5432/postgres
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

import psycopg2
import psycopg2.extensions

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sitewatch.db import embedded  # noqa: E402


def write_files(directory: str, n: int) -> dict[str, str]:
    yaml_path, lines_path = os.path.join(directory, "urls.yaml"), os.path.join(directory, "urls.txt")
    with open(yaml_path, "w") as f:
        for i in range(n):
            f.write(f"- url: http://site{i}.example/health\n  period: 60\n")
    with open(lines_path, "w") as f:
        for i in range(n):
            f.write(f"http://site{i}.example/health\n")
    return {"yaml": yaml_path, "lines": lines_path}


def import_once(base_dsn: str, path: str, name: str, directory: str) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one `sitewatch url import` into a fresh database."""
    admin = psycopg2.connect(base_dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name}")
        cur.execute(f"CREATE DATABASE {name}")
    dsn = psycopg2.extensions.make_dsn(base_dsn, dbname=name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SITEWATCH_") and k != "DB_DSN"}
    env.update(DB_DSN=dsn, HOME=directory)
    # The schema first, so the figure is the import alone.
    subprocess.run([sys.executable, "-m", "sitewatch", "db", "migrate"], env=env, check=True,
                   capture_output=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sitewatch", "url", "import", path], env=env, check=True,
                   capture_output=True)
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE {name} WITH (FORCE)")
    admin.close()
    # ru_maxrss of children is the largest of any child so far: import the bigger file last
    # or read it per run (here: each run is the largest so far or equal, so report both).
    return seconds, max(peak_kb, before) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--urls", type=int, default=100_000)
    parser.add_argument("--dsn", help="a server to create databases on (default: an embedded one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        server = None if args.dsn else embedded.start(os.path.join(directory, "pg"))
        base_dsn = args.dsn or server.dsn
        try:
            files = write_files(directory, args.urls)
            for fmt in ("lines", "yaml"):     # yaml last: the larger peak, so ru_maxrss is its own
                seconds, rss = import_once(base_dsn, files[fmt], f"sitewatch_bench_import_{fmt}", directory)
                print(f"{fmt:5}  {args.urls} URLs  {seconds:6.1f} s  peak RSS {rss:5.0f} MB", flush=True)
        finally:
            if server:
                server.release()


if __name__ == "__main__":
    main()
