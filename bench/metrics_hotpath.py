"""What the metrics add to a consumer's work per check, measured in isolation.

A consumer calls CheckCounts.observe() once per finished check and
CheckCounts.recorded() once per written batch; this times both on realistic rows
(a batch of consumer.write_batch = 500) with metrics on and off, and prints the
difference in microseconds per check. Compare with the CPU a check costs end to end
(cpu_s_per_1000_checks in bench/throughput.py: about 270 us of sitewatch CPU).

    python bench/metrics_hotpath.py
"""

import datetime
import json
import random
import sys
import time

from sitewatch.operations.metrics import CheckCounts

BATCH = 500
BATCHES = 400


def rows(n: int) -> list[tuple]:
    now = datetime.datetime.now(datetime.timezone.utc)
    kinds = [None] * 8 + ["timeout", "status"]
    out = []
    for i in range(n):
        kind = random.choice(kinds)
        out.append((i, 1, "host:consumer-1:1", now, 12.5, 200 if kind is None else 503, None, kind is None, kind,
                    None if kind is None else "error text", None))
    return out


def per_check(counts: CheckCounts, batch: list[tuple]) -> float:
    durations = [random.random() * 0.05 for _ in batch]
    lags = [random.random() * 0.1 for _ in batch]
    t0 = time.perf_counter()
    for _ in range(BATCHES):
        for duration, lag in zip(durations, lags, strict=True):
            counts.observe(duration, lag)
        counts.recorded(batch, [])
        counts.take() if _ % 50 == 0 else None    # a stats message every 25,000 checks
    return (time.perf_counter() - t0) / (BATCHES * BATCH) * 1e6


def main() -> int:
    batch = rows(BATCH)
    on = min(per_check(CheckCounts.create(True), batch) for _ in range(5))
    off = min(per_check(CheckCounts.create(False), batch) for _ in range(5))
    print(json.dumps({"us_per_check_metrics_on": round(on, 3), "us_per_check_metrics_off": round(off, 3),
                      "added_us_per_check": round(on - off, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
