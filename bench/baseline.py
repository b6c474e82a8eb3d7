"""The baseline: a bare urllib3 client, fresh connection per request, one process
per core, many threads, hammering one URL for a fixed time. sitewatch's
throughput is quoted as a ratio of this, measured in the same run.

    python bench/baseline.py --url http://127.0.0.1:8080/ --seconds 20
"""

import argparse
import multiprocessing
import os
import threading
import time

import urllib3


def _worker(url: str, seconds: float, threads: int, out) -> None:
    parsed = urllib3.util.parse_url(url)
    stop_at = time.monotonic() + seconds
    counts = [0] * threads

    def loop(i):
        while time.monotonic() < stop_at:
            # A fresh connection per request, as sitewatch checks do by default.
            conn = urllib3.connection.HTTPConnection(parsed.host, parsed.port, timeout=10)
            try:
                conn.request("GET", parsed.request_uri, headers={"Connection": "close"})
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    counts[i] += 1
            except Exception:
                pass
            finally:
                conn.close()

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    out.put(sum(counts))


def measure(url: str, seconds: float = 20.0, processes: int | None = None, threads: int = 50) -> dict:
    processes = processes or os.cpu_count() or 1
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(url, seconds, threads, out)) for _ in range(processes)]
    started = time.monotonic()
    for p in procs:
        p.start()
    total = sum(out.get() for _ in procs)
    for p in procs:
        p.join()
    elapsed = time.monotonic() - started
    return {"requests": total, "seconds": round(elapsed, 2), "per_second": round(total / seconds, 1),
            "processes": processes, "threads": threads}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--processes", type=int)
    parser.add_argument("--threads", type=int, default=50)
    args = parser.parse_args()
    print(measure(args.url, args.seconds, args.processes, args.threads))
