"""Memory of check threads blocked on a socket: RSS per thread, by thread stack size.

Starts N threads each running a real probe.check() against a local server that accepts
and never answers, waits until they all block, and reports the process's RSS growth per
thread. Only 127.0.0.1 is contacted.

    python bench/threads_memory.py --threads 2000 --stack-kib 0      # the default stack
    python bench/threads_memory.py --threads 2000 --stack-kib 512    # sitewatch's
"""

import argparse
import json
import os
import resource
import socket
import threading
import time

from sitewatch.check import probe


def rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2000)
    parser.add_argument("--stack-kib", type=int, default=0, help="thread stack size; 0 = the platform default")
    args = parser.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.stack_kib:
        threading.stack_size(args.stack_kib * 1024)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8192)
    held = []

    def accept():
        while True:
            held.append(server.accept()[0])
    threading.Thread(target=accept, daemon=True).start()
    settings = {"url": f"http://127.0.0.1:{server.getsockname()[1]}/", "regex": None, "method": "GET",
                "expected_status": "200-399", "max_redirects": 5, "verify_tls": True}
    probe.check(probe.target_for({**settings, "timeout": 0.2}, 1 << 20))   # warm up imports and caches
    before = rss_bytes()
    target = probe.target_for({**settings, "timeout": 30}, 1 << 20)
    for _ in range(args.threads):
        threading.Thread(target=probe.check, args=(target,), daemon=True).start()
    deadline = time.monotonic() + 30
    while len(held) < args.threads and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1)
    after = rss_bytes()
    print(json.dumps({"threads": args.threads, "blocked": len(held), "stack_kib": args.stack_kib or "default",
                      "rss_before_mb": round(before / 2**20, 1), "rss_after_mb": round(after / 2**20, 1),
                      "rss_per_thread_kib": round((after - before) / args.threads / 1024, 1)}))


if __name__ == "__main__":
    main()
