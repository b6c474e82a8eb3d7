"""The latency histogram of the rollups: fixed log-spaced buckets, mergeable by addition.

Bucket 0 holds response times under FLOOR_MS; bucket i (1..SIZE-1) holds
[FLOOR_MS * GROWTH**(i-1), FLOOR_MS * GROWTH**i); the last bucket also takes
everything above. A percentile is read as the geometric middle of its bucket,
so it is within sqrt(GROWTH) - 1 (about 9.5%) of a value in that bucket.

The same formula runs in SQL (BUCKET_SQL, used by history/queries.sql) and here;
rt_hist arrays in rollup_hour and rollup_day are these counts, with trailing
empty buckets left out (a list of any length up to SIZE is valid).
"""

import bisect
import itertools
import math

FLOOR_MS = 0.1
GROWTH = 1.2
SIZE = 100                       # bucket 99 starts at ~5.6e6 ms: over any check timeout
_LOG_GROWTH = math.log(GROWTH)

# The SQL twin of bucket(): keep them identical.
BUCKET_SQL = ("CASE WHEN {rt} IS NULL THEN NULL WHEN {rt} < 0.1 THEN 0"
              " ELSE least(99, floor(ln({rt} / 0.1) / ln(1.2))::integer + 1) END")


def bucket(ms: float) -> int:
    """The bucket index of a response time in milliseconds."""
    if ms < FLOOR_MS:
        return 0
    return min(SIZE - 1, math.floor(math.log(ms / FLOOR_MS) / _LOG_GROWTH) + 1)


def bounds(index: int) -> tuple[float, float]:
    """[low, high) of a bucket in milliseconds (bucket 0 starts at 0; the last one is open)."""
    if index == 0:
        return 0.0, FLOOR_MS
    return FLOOR_MS * GROWTH ** (index - 1), FLOOR_MS * GROWTH ** index


def value(index: int) -> float:
    """The representative of a bucket: its geometric middle (half of FLOOR_MS for bucket 0)."""
    if index == 0:
        return FLOOR_MS / 2
    low, high = bounds(index)
    return math.sqrt(low * high)


VALUES = [value(i) for i in range(SIZE)]


def merge(*hists) -> list[int]:
    """Element-wise sum of histograms of any lengths (None is empty)."""
    out: list[int] = []
    for hist in hists:
        if not hist:
            continue
        if len(hist) > len(out):
            out.extend([0] * (len(hist) - len(out)))
        for i, count in enumerate(hist):
            out[i] += count or 0
    return out


def percentile(hist, q: float, offset: int = 0) -> float | None:
    """The q-quantile (0 < q <= 1, e.g. 0.95) of a histogram, in milliseconds; None when empty.
    `offset`: the bucket index of hist[0] (a histogram with its leading empty buckets left out).

    Nearest rank: the value of the bucket holding the ceil(q * n)-th smallest response time.
    """
    if not 0 < q <= 1:
        raise ValueError(f"quantile must be in (0, 1], not {q}")
    running = list(itertools.accumulate(hist or ()))    # C loops: status reads 100,000 of them
    if not running or running[-1] == 0:
        return None
    rank = max(1, math.ceil(q * running[-1] - 1e-9))   # 0.95 * 20 is 19.000000000000004
    return VALUES[offset + bisect.bisect_left(running, rank)]   # the first bucket whose running count reaches it


def from_values(values) -> list[int]:
    """A histogram of response times (None values skipped), trailing empty buckets left out."""
    counts = [0] * SIZE
    for v in values:
        if v is not None:
            counts[bucket(v)] += 1
    while counts and counts[-1] == 0:
        counts.pop()
    return counts
