"""Saturated throughput of a mix of monitor kinds vs HTTP only (issue 20: within 5%).

Each run imports --urls monitors at a 1 s period into a fresh database (demand far above
capacity, so checks/s measures capacity), runs `sitewatch run` on its defaults (engine auto =
curl) for --warmup + --duration seconds, and counts the task_result rows whose started_at
falls in the steady window, per kind. Runs alternate HTTP-only (A) and the mix (B): A B A B
for --rounds 2, each from a fresh database. Only 127.0.0.1 is contacted:

* http://  nginx (bench/targets.py FastTarget), one path per monitor;
* tcp://   the same nginx port, one monitor per name; by default `GET / HTTP/1.0` is sent and
           `HTTP/1` expected (--tcp-send '' --tcp-expect '' for a bare connect);
* dns://   a dnslib server in a process of its own (so its CPU is not this script's), asked
           for an A record of a name per monitor over UDP;
* push://  heartbeats at a 1 s period, each pinged once a second by a pinger process of the
           bench's (GET /ping/TOKEN on the run's web listener, keep-alive, paced over the
           second; its CPU is measured apart), with --push-grace 1 s; --no-pings leaves them
           unpinged (every slot a missed result, written by the producer; grace 0 then). They
           are added in this process as `url add` adds them (urlspec.make_entry, then
           pushstore.add_push with the hash of a token we keep): setup, outside the window.

The DNS server answers from pre-built bytes on one socket (dns_reply), not with a DNS
library: a few microseconds a query, so the ratio measures sitewatch (its CPU is reported
apart all the same).

    flock /work/bench.lock python bench/kinds_mix.py --json
    python bench/kinds_mix.py --urls 10000 --duration 60 --rounds 2 --http 70 --tcp 15 --dns 10 --push 5
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import psutil
import psycopg2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from targets import FastTarget, stop_process, wait_for_port  # noqa: E402
from throughput import SITEWATCH, base_env, cpu_seconds, postgres_procs, sitewatch, tree  # noqa: E402

from sitewatch.db import embedded  # noqa: E402

DNS_ZONE = "bench.test."
DNS_ANSWER = "192.0.2.1"
# The pinger's keep-alive connections, each sending one ping at a time: 500 push monitors are
# 500 jobs, not 4 clients; with 4 each ping had to be answered within 8 ms to keep up on a
# saturated machine (the twelfth session's runs): 16, as bench/ping_rate.py's largest run.
PINGER_CONNECTIONS = 16


def dns_reply(query: bytes) -> bytes | None:
    """The answer to one query, by byte surgery on the query itself (no DNS library on the
    answer path): an A record DNS_ANSWER for a name under DNS_ZONE asked type A (NOERROR, no
    records for another type), NXDOMAIN elsewhere. None for what is not a one-question query."""
    if len(query) < 17 or query[2] & 0x80 or query[4:6] != b"\x00\x01":
        return None
    end = 12
    while end < len(query) and query[end]:          # the question's name, label by label
        end += 1 + query[end]
    end += 5                                        # the root label, QTYPE, QCLASS
    if end > len(query):
        return None
    name, qtype = query[12:end - 4].lower(), query[end - 4:end - 2]
    flags = bytes([0x80 | (query[2] & 0x01), 0x80])  # QR, RD copied, RA; rcode NOERROR
    if not name.endswith(ZONE_WIRE):
        return query[:2] + flags[:1] + b"\x83" + b"\x00\x01\x00\x00\x00\x00\x00\x00" + query[12:end]
    if qtype != b"\x00\x01":
        return query[:2] + flags + b"\x00\x01\x00\x00\x00\x00\x00\x00" + query[12:end]
    return query[:2] + flags + b"\x00\x01\x00\x01\x00\x00\x00\x00" + query[12:end] + ANSWER_RR


ZONE_WIRE = b"".join(bytes([len(label)]) + label.encode() for label in DNS_ZONE.split(".")[:-1]) + b"\x00"
# A pointer to the question's name (offset 12), type A, class IN, TTL 60, 4 bytes of address.
ANSWER_RR = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + bytes(int(x) for x in DNS_ANSWER.split("."))


def serve_dns(port: int) -> None:
    """The DNS server process: one UDP socket, answered in a loop by dns_reply. A dnslib server
    (a thread and a parse per query) took 0.22-0.32 ms of CPU a query on the cores the checks
    share; this one a few microseconds, so the mix measures sitewatch's DNS checks."""
    import socket
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind(("127.0.0.1", port))
        while True:
            query, peer = sock.recvfrom(512)
            reply = dns_reply(query)
            if reply is not None:
                sock.sendto(reply, peer)


def free_udp_port() -> int:
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_dns() -> tuple[subprocess.Popen, int]:
    from dnslib import DNSRecord
    port = free_udp_port()
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve-dns", str(port)])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            DNSRecord.question(f"ready.{DNS_ZONE}").send("127.0.0.1", port, timeout=0.5)
            return proc, port
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("the DNS server process exited") from None
    stop_process(proc)
    raise SystemExit(f"the DNS server did not answer on 127.0.0.1:{port}")


def monitors_yaml(counts: dict, target_port: int, dns_port: int, tcp_send: str, tcp_expect: str) -> str:
    """The import file for counts = {"http": n, "tcp": n, "dns": n} (push:// is not importable)."""
    lines = [f"- http://127.0.0.1:{target_port}/u/{i}" for i in range(counts.get("http", 0))]
    for i in range(counts.get("tcp", 0)):
        lines.append(f"- url: tcp://127.0.0.1:{target_port}\n  name: tcp-{i}")
        if tcp_send:
            lines.append(f"  send: {json.dumps(tcp_send)}")      # JSON quoting is YAML; sitewatch decodes \r\n
        if tcp_expect:
            lines.append(f"  expect: {json.dumps(tcp_expect)}")
    lines += [f"- dns://127.0.0.1:{dns_port}/n{i}.{DNS_ZONE.rstrip('.')}?type=A" for i in range(counts.get("dns", 0))]
    return "\n".join(lines) + "\n"


def split(total: int, shares: dict) -> dict:
    """Monitors per kind from percentage shares; the rounding remainder goes to HTTP."""
    parts = sum(shares.values())
    counts = {kind: total * share // parts for kind, share in shares.items()}
    counts["http"] += total - sum(counts.values())
    return {kind: n for kind, n in counts.items() if n}


def add_pushes(env, conn, count: int, grace: str) -> list[str]:
    """push://bench-N monitors at a 1 s period, added as `url add` adds them; their tokens."""
    from sitewatch import config, urlspec
    from sitewatch.check import push
    from sitewatch.db import pushstore
    check_config = config.load(env).check
    tokens = []
    for i in range(count):
        entry = urlspec.make_entry({"url": f"push://bench-{i}", "period": 1, "grace": grace}, check_config)
        token = push.new_token()
        pushstore.add_push(conn, entry, push.token_hash(token))
        tokens.append(token)
    return tokens


def read_response(sock, buffer: bytes) -> tuple[int, bytes]:
    """One HTTP/1.1 response off a keep-alive socket: (its status, the bytes read past it). Only
    what the ping answers need: a status line, a Content-Length, a body."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("closed by the server")
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next((int(line.partition(b":")[2]) for line in lines[1:]
                   if line[:15].lower() == b"content-length:"), 0)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("closed by the server")
        rest += chunk
    return int(lines[0].split(b" ", 2)[1]), rest[length:]


def serve_pings(port: int, tokens_path: str, period: float, connections: int) -> None:
    """The pinger process: each token pinged once a period, the pings spread over the period,
    on `connections` keep-alive connections (a thread each). On SIGTERM, prints the count of
    answers by status as JSON. Requests are pre-built bytes and answers are read by
    read_response, not http.client (whose request building and header parsing cost ~0.15 ms
    of CPU a ping, 3% of the two cores the checks share at 500 pings a second)."""
    import socket
    import threading
    with open(tokens_path) as f:
        tokens = f.read().split()
    statuses: dict = {}
    lock, stop = threading.Lock(), threading.Event()

    def count(status):
        with lock:
            statuses[status] = statuses.get(status, 0) + 1

    def pinger(mine):
        requests = [f"GET /ping/{token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode() for token in mine]
        sock, buffer = None, b""
        t0, n = time.monotonic(), 0
        while not stop.is_set():
            for i, request in enumerate(requests):
                wait = t0 + n * period + i * period / len(requests) - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                try:
                    if sock is None:
                        sock, buffer = socket.create_connection(("127.0.0.1", port), timeout=10), b""
                    sock.sendall(request)
                    status, buffer = read_response(sock, buffer)
                    count(status)
                except OSError as exc:
                    count(type(exc).__name__)
                    if sock is not None:
                        sock.close()
                    sock = None
                    time.sleep(0.2)
            n += 1

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    for k in range(connections):
        threading.Thread(target=pinger, args=(tokens[k::connections],), daemon=True).start()
    stop.wait()
    print(json.dumps(statuses), flush=True)


def free_tcp_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_run(args, label: str, shares: dict, target, dns_proc, dns_port, workdir) -> dict:
    run_dir = tempfile.mkdtemp(dir=workdir, prefix=f"{label}-")
    data_dir = os.path.join(run_dir, "pg")
    env = base_env(args, data_dir, None)
    web_port = free_tcp_port()
    env.update({"SITEWATCH_WEB__LISTEN": f"127.0.0.1:{web_port}",
                # a ping a second is 60 a minute, the default budget: leave room for the pacing's jitter
                "SITEWATCH_WEB__PING_RATE_LIMIT": "120"})
    counts = split(args.urls, shares)
    import_file = os.path.join(run_dir, "monitors.yaml")
    with open(import_file, "w") as f:
        f.write(monitors_yaml(counts, target.port, dns_port, args.tcp_send, args.tcp_expect))
    t0 = time.monotonic()
    sitewatch(env, "url", "import", import_file)
    held = embedded.start(data_dir)      # keep the server between run's stop and our queries
    meas = psycopg2.connect(held.dsn)
    meas.autocommit = True
    grace = args.push_grace if args.push_grace is not None else ("0" if args.no_pings else "1")
    tokens = add_pushes(env, meas, counts.get("push", 0), grace)
    imported_s = time.monotonic() - t0
    log_path = os.path.join(run_dir, "run.log")
    run = pinger = None
    pings: dict = {}
    try:
        with open(log_path, "w") as log:
            run = subprocess.Popen([*SITEWATCH, "run"], env=env, stdout=log, stderr=log, start_new_session=True)
        started = time.time()
        if tokens and not args.no_pings:
            tokens_path = os.path.join(run_dir, "tokens")
            with open(tokens_path, "w") as f:
                f.write("\n".join(tokens))
            # Once the web listener answers: a pinger started before it counted hundreds of refused
            # connections (harmless, before the window, but noise in pings_by_status).
            wait_for_port(web_port, timeout=args.warmup)
            pinger = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve-pings", str(web_port),
                                       tokens_path, str(args.pinger_connections)], stdout=subprocess.PIPE, text=True)
        window = (started + args.warmup, started + args.warmup + args.duration)
        others = {"nginx": lambda: [psutil.Process(pid) for pid in target.pids()] + [
                      c for pid in target.pids() for c in psutil.Process(pid).children()],
                  "dns_server": lambda: tree(dns_proc.pid),
                  "pinger": lambda: tree(pinger.pid) if pinger is not None else [],
                  "postgres": lambda: postgres_procs(data_dir)}
        def mark(procs):
            return time.time(), cpu_seconds(procs), {name: cpu_seconds(f()) for name, f in others.items()}

        start_mark, peak_threads, peak_rss = None, 0, 0
        while True:
            procs = [p for p in tree(run.pid) if p.name() not in ("postgres", "postmaster")]
            if time.time() >= window[1]:
                end_mark = mark(procs)
                break
            threads = rss = 0
            for p in procs:
                try:
                    threads += p.num_threads()
                    rss += p.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            if start_mark is None and time.time() >= window[0]:
                start_mark = mark(procs)
            if start_mark is not None:
                peak_threads, peak_rss = max(peak_threads, threads), max(peak_rss, rss)
            time.sleep(max(0.05, min(1.0, window[1] - time.time())))
        if pinger is not None:
            pinger.send_signal(signal.SIGTERM)
            pings = json.loads(pinger.communicate(timeout=30)[0] or "{}")
        run.send_signal(signal.SIGTERM)
        run.wait(120)
        (ws, c0, o0), (we, c1, o1) = start_mark, end_mark
        with meas.cursor() as cur:
            cur.execute("SELECT split_part(u.url, ':', 1), count(*), count(*) FILTER (WHERE NOT r.ok) "
                        "FROM task_result r JOIN url u ON u.id = r.url_id "
                        "WHERE r.started_at >= to_timestamp(%s) AND r.started_at < to_timestamp(%s) GROUP BY 1",
                        (ws, we))
            by_kind = {scheme: (n, failed) for scheme, n, failed in cur.fetchall()}
            cur.execute("SELECT split_part(u.url, ':', 1) || ' ' || coalesce(r.error_kind, '?'), count(*) "
                        "FROM task_result r JOIN url u ON u.id = r.url_id WHERE NOT r.ok "
                        "AND r.started_at >= to_timestamp(%s) AND r.started_at < to_timestamp(%s) GROUP BY 1",
                        (ws, we))
            failed_by_kind = dict(cur.fetchall())
    finally:
        if pinger is not None and pinger.poll() is None:
            pinger.kill()
        if run is not None and run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        meas.close()
        held.release()
    seconds = we - ws
    checks = sum(n for n, _ in by_kind.values())
    summaries = []
    with open(log_path) as log:
        for line in log:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("event") == "summary":
                summaries.append(entry)
    shutil.rmtree(run_dir, ignore_errors=True)
    result = {
        "run": label, "monitors": counts, "setup_s": round(imported_s, 1), "window_s": round(seconds, 1),
        "checks_per_s": round(checks / seconds, 1),
        "checks_per_s_by_kind": {k: round(n / seconds, 1) for k, (n, _) in sorted(by_kind.items())},
        "failed": failed_by_kind,
        "pings_by_status": pings,
        "cpu_ms_per_check": {"sitewatch": round((c1 - c0) / max(1, checks) * 1000, 3),
                             **{name: round((o1[name] - o0[name]) / max(1, checks) * 1000, 3) for name in o0}},
        "cpu_s_in_window": {"sitewatch": round(c1 - c0, 1), **{name: round(o1[name] - o0[name], 1) for name in o0}},
        "peak_threads_psutil": peak_threads,
        "peak_check_threads_summary": max((e.get("check_threads", 0) for e in summaries), default=None),
        "peak_rss_mb": round(peak_rss / 2**20, 1),
        "exit_code": run.returncode,
    }
    return result


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-dns":      # the DNS server's own process
        serve_dns(int(sys.argv[2]))
        return 0
    if len(sys.argv) == 5 and sys.argv[1] == "--serve-pings":    # the pinger's own process
        serve_pings(int(sys.argv[2]), sys.argv[3], period=1.0, connections=int(sys.argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--urls", type=int, default=10_000, help="monitors per run")
    parser.add_argument("--duration", type=float, default=60, help="steady window, seconds (after the warm-up)")
    parser.add_argument("--warmup", type=float, default=15)
    parser.add_argument("--rounds", type=int, default=2, help="A/B pairs: HTTP-only then the mix")
    parser.add_argument("--http", type=int, default=70, help="the mix's share of http:// monitors, percent")
    parser.add_argument("--tcp", type=int, default=15, help="share of tcp:// monitors, percent")
    parser.add_argument("--dns", type=int, default=10, help="share of dns:// monitors, percent")
    parser.add_argument("--push", type=int, default=5, help="share of push:// monitors, percent")
    parser.add_argument("--push-grace", default=None, help="grace of the push:// monitors (default 1 s; "
                        "0 with --no-pings)")
    parser.add_argument("--pinger-connections", type=int, default=PINGER_CONNECTIONS,
                        help="keep-alive connections the pinger sends on, one ping at a time each")
    parser.add_argument("--no-pings", action="store_true", help="leave the push:// monitors unpinged (all missed)")
    parser.add_argument("--tcp-send", default="GET / HTTP/1.0\\r\\n\\r\\n", help="'' for a bare connect")
    parser.add_argument("--tcp-expect", default="HTTP/1")
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--nginx-workers", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the report as JSON (progress on stderr)")
    parser.add_argument("--set", action="append", default=[], metavar="VAR=VALUE",
                        help="extra environment for sitewatch (repeatable)")
    args = parser.parse_args()
    args.period, args.consumers, args.concurrency = 1, None, None     # what base_env reads
    shares = {"http": args.http, "tcp": args.tcp, "dns": args.dns, "push": args.push}
    if any(v < 0 for v in shares.values()) or sum(shares.values()) <= 0:
        parser.error("the shares must be >= 0 and not all 0")

    workdir = tempfile.mkdtemp(prefix="sitewatch-bench-kinds-")
    target = FastTarget(workers=args.nginx_workers).start()
    dns_proc, dns_port = start_dns()
    runs = []
    try:
        for _ in range(args.rounds):
            for label, run_shares in (("http_only", {"http": 1}), ("mix", shares)):
                print(f"{label}: {args.urls} monitors, {args.warmup:g} + {args.duration:g} s ...",
                      file=sys.stderr, flush=True)
                result = one_run(args, label, run_shares, target, dns_proc, dns_port, workdir)
                print(json.dumps(result), file=sys.stderr, flush=True)
                runs.append(result)
    finally:
        stop_process(dns_proc)
        target.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    http_only = statistics.median(r["checks_per_s"] for r in runs if r["run"] == "http_only")
    mix = statistics.median(r["checks_per_s"] for r in runs if r["run"] == "mix")
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
              "load_average": [round(x, 1) for x in os.getloadavg()], "target": target.kind,
              "urls": args.urls, "period_s": 1, "shares_percent": shares,
              "tcp": {"send": args.tcp_send, "expect": args.tcp_expect},
              "push": "unpinged" if args.no_pings else "pinged once a second",
              "runs": runs, "median_http_only": http_only, "median_mix": mix,
              "ratio_mix_to_http_only": round(mix / http_only, 3) if http_only else None}
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:24}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
