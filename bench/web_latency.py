"""Latency of the web server under load: p50/p95/p99 at C concurrent connections (wrk).

    python bench/web_seed.py                      # once: 100,000 URLs, 30 days of rollups
    flock /work/bench.lock python bench/web_latency.py --db sitewatch_bench_web

Starts `sitewatch web` on 127.0.0.1 against the seeded database, warms it up, then runs wrk
(Debian package `wrk`) for each endpoint with 20 connections and prints one JSON line each.
Only 127.0.0.1 is contacted.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request

import psycopg2
import psycopg2.extensions

HERE = os.path.dirname(os.path.abspath(__file__))

ENDPOINTS = [
    ("/ (page 1 of 100 URLs)", "/"),
    ("/?page=1&nocache=ID (page 1, never a cache hit)", "/?page=1&nocache={id}"),
    ("/?page=N (random page: no cache hit)", "/?page={page}"),
    ("/urls/ID (random ID)", "/urls/{id}"),
    ("/api/v1/summary", "/api/v1/summary"),
    ("/api/v1/urls (100 per page)", "/api/v1/urls?limit=100"),
    ("/badge/ID/uptime-30d.svg", "/badge/{id}/uptime-30d.svg"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--db", default="sitewatch_bench_web")
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--duration", type=int, default=20, help="seconds per endpoint")
    parser.add_argument("--only", help="run only the endpoints whose name contains this text")
    args = parser.parse_args()
    dsn = psycopg2.extensions.make_dsn(args.dsn, dbname=args.db)
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT max(id) FROM url")
        max_id = cur.fetchone()[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SITEWATCH_") and k != "DB_DSN"}
    # web.rate_limit off: the bench measures what the server can serve, from one client address
    env.update(DB_DSN=dsn, SITEWATCH_LOG__LEVEL="warning", SITEWATCH_WEB__RATE_LIMIT="0")
    server = subprocess.Popen([sys.executable, "-m", "sitewatch", "web", "--listen", "127.0.0.1:0"],
                              env=env, stdout=subprocess.PIPE, text=True)
    try:
        base = server.stdout.readline().split("serving on ", 1)[1].strip().rstrip("/")
        for _, path in ENDPOINTS:                       # warm the caches once
            urllib.request.urlopen(base + path.replace("{id}", "1").replace("{page}", "1"), timeout=30).read()
        print(json.dumps({"urls": max_id, "connections": args.connections, "duration_s": args.duration}))
        for name, path in ENDPOINTS:
            if args.only and args.only not in name:
                continue
            out = subprocess.run(["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "--timeout", "10s",
                                  "-s", os.path.join(HERE, "web_wrk.lua"), base],
                                 env={**os.environ, "WRK_PATH": path, "WRK_MAX_ID": str(max_id),
                                      "WRK_MAX_PAGE": str(max(1, max_id // 100))},
                                 capture_output=True, text=True, check=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            result["requests_per_s"] = round(result["requests"] / result["seconds"], 1)
            print(json.dumps({"endpoint": name, **result}), flush=True)
            time.sleep(1)
    finally:
        server.terminate()
        server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
