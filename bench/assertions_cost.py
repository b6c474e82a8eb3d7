"""CPU per check of judging assertions (issue 19's target: 5 assertions, 2 of them JSONPath, on a
20 KB JSON body, under 0.3 ms).

What is timed is what judging the assertions adds to a check after the fetch:
sitewatch.assertions.judge() of one response (decode and parse the body once, run the two
JSONPath queries, compare, the `degraded` list too). Expressions are parsed once, as
target_for does (cached). The body is a made-up health document of ~20 KB; each round judges
a new response object, so nothing parsed is reused between checks. The response carries the
attributes of check/engine.py's Response.

    flock -x /tmp/sitewatch-machine.lock .venv/bin/python bench/assertions_cost.py
"""

import argparse
import statistics
import time
from dataclasses import dataclass

import orjson

from sitewatch.assertions import judge, parse_all

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


@dataclass(frozen=True)
class Response:
    """The attributes of check/engine.py's Response that assertions read."""

    status: int
    headers: tuple
    body: bytes
    redirects: int
    cert_days_left: int | None
    response_time_ms: float


def response_for(body: bytes) -> Response:
    return Response(status=200, headers=(("content-type", "application/json"), ("server", "bench")), body=body,
                    redirects=0, cert_days_left=None, response_time_ms=120.0)


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
    assert judge(assertions, (), response_for(body)) == (None, None)
    degraded = parse_all(["response_time < 800"])

    def five():
        judge(assertions, (), response_for(body))

    def five_and_degraded():
        judge(assertions, degraded, response_for(body))

    def no_json():
        judge(assertions[:3], (), response_for(body))

    def json_parse_only():
        orjson.loads(body)

    rows = {}
    for name, fn in (("5 assertions (2 JSONPath)", five), ("the same + 1 degraded", five_and_degraded),
                     ("3 assertions, no JSON", no_json), ("orjson.loads alone", json_parse_only)):
        fn()   # warm caches (parsed expressions, compiled regexes)
        rows[name] = [per_check_us(fn, args.rounds) for _ in range(args.repeats)]
    print(f"body {len(body)} bytes, {len(EXPRESSIONS)} assertions ({sum(a.needs_json for a in assertions)} JSONPath), "
          f"{args.rounds} checks x {args.repeats} repeats; CPU (process_time) per check:")
    for name, values in rows.items():
        print(f"  {name:28} median {statistics.median(values):7.1f} us"
              f"   min {min(values):7.1f}   max {max(values):7.1f}")


if __name__ == "__main__":
    main()
