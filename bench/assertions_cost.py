"""CPU per check of judging assertions (issue 19's target: 5 assertions, 2 of them JSONPath, on a
20 KB JSON body, under 0.3 ms).

What is timed is what a consumer thread does after the fetch: probe.judge() of one engine
Response (status ranges, then the assertions: decode and parse the body once, run the two
JSONPath queries, compare). Expressions are parsed once, as target_for does (cached). The
body is a made-up health document of ~20 KB; each round judges a new Response object, so
nothing parsed is reused between checks.

    flock -x /tmp/sitewatch-machine.lock .venv/bin/python bench/assertions_cost.py
"""

import argparse
import datetime
import statistics
import time

import orjson
from sitewatch.check.engine import Response, Timings

from sitewatch.assertions import judge, parse_all
from sitewatch.check import probe

EXPRESSIONS = [
    "status in 200-299",
    "response_time < 800",
    'header content-type contains "json"',
    'json $.status == "ok"',
    "len(json $.items) > 0",
]


def health_body(target_bytes: int = 20_000) -> bytes:
    items, body = [], b""
    while len(body) < target_bytes:
        i = len(items)
        items.append({"id": i, "name": f"component-{i}", "ok": True, "latency_ms": i * 1.5,
                      "region": ["eu", "us", "ap"][i % 3]})
        body = orjson.dumps({"status": "ok", "version": "4.2.0", "items": items})
    return body


def response_for(body: bytes) -> Response:
    return Response(status=200, headers=(("content-type", "application/json"),), body=body, redirects=0,
                    cert_days_left=None, response_time_ms=120.0, timings=Timings(), error_kind=None, error=None)


def per_check_us(fn, rounds: int) -> float:
    start = time.process_time()
    for _ in range(rounds):
        fn()
    return (time.process_time() - start) / rounds * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    body = health_body()
    assertions = parse_all(EXPRESSIONS)
    target = probe.Target("http://example.test/health", assertions=assertions)
    started = datetime.datetime.now(datetime.timezone.utc)
    outcome = probe.judge(target, response_for(body), started)
    assert outcome.ok and outcome.error is None, outcome

    def whole_judge():
        probe.judge(target, response_for(body), started)

    def assertions_only():
        judge(assertions, (), response_for(body))

    def without_assertions():
        probe.judge(probe.Target("http://example.test/health"), response_for(body), started)

    def json_parse_only():
        orjson.loads(body)

    rows = {}
    for name, fn in (("probe.judge, 5 assertions", whole_judge), ("assertions.judge alone", assertions_only),
                     ("probe.judge, no assertions", without_assertions), ("orjson.loads alone", json_parse_only)):
        fn()   # warm caches (parsed expressions, compiled regexes)
        rows[name] = [per_check_us(fn, args.rounds) for _ in range(args.repeats)]
    print(f"body {len(body)} bytes, {len(EXPRESSIONS)} assertions ({sum(a.needs_json for a in assertions)} JSONPath), "
          f"{args.rounds} checks x {args.repeats} repeats; CPU (process_time) per check:")
    for name, values in rows.items():
        print(f"  {name:28} median {statistics.median(values):7.1f} us"
              f"   min {min(values):7.1f}   max {max(values):7.1f}")


if __name__ == "__main__":
    main()
