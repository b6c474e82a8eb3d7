"""The maintenance job's pace: short statements, with rests between them.

On two cores, one long statement of the job takes half the machine. An hourly rollup of
100,000 URLs as one statement held a core for 25 s, the summary build for 30 s: checks
finished late, the consumers read that as slow sites and grew to their ceiling, and lag
spiralled (issue 18). So the job's heavy work runs in chunks sized to take about
TARGET_S each (by URL or by time: the caller decides what a chunk is, Pace decides how
big), and after each statement the job rests in proportion to it, so that it uses at most
DUTY of one core while it has work. And while the checks are behind (a claimable task, or
a due URL the producer holds back, has waited BEHIND_S or more: the consumers cannot keep
up), it waits for them to catch up, up
to MAX_YIELD_S before each statement: a soak at 100,000 URLs showed that a job at 40% of
one core, with autovacuum on a large partition beside it, still pushed lag p99 to 3 s on a
2-core host. The job's work is the same; it takes longer in wall time (minutes once an
hour at 100,000 URLs). (A soak with another program taking a core during the job's first
run still spiralled: the consumers' side of that is open, docs/benchmarks.md "Soak".)

Where the work allows it (`with pace.committing(conn):`), each statement commits before the
rest: a transaction held across minutes of rests keeps every row the checks' queue deletes
from being vacuumed or pruned (100,000 task rows a minute at 100,000 URLs), the claims
wade through them, and lag grew past 1 s during a 324 s transaction of the job's first run
(docs/benchmarks.md "Twelfth session").
"""

import contextlib
import datetime
import time

TARGET_S = 0.5      # aim for statements this long
DUTY = 0.4          # share of the time the job works while it has work; it rests the rest
GROWTH = 4.0        # a chunk grows or shrinks at most this much from one statement to the next
BEHIND_S = 1.0      # the checks are behind when a claimable task (or a due URL) has waited this long
MAX_YIELD_S = 30.0  # the job waits at most this long for them before each statement (it must progress)
YIELD_POLL_S = 1.0
SLICE_ROWS = 300_000                            # raw rows in a rollup's first time slice
FIRST_CHUNK = 2000                              # URLs in a pass's first chunk
SMALLEST_SLICE = datetime.timedelta(minutes=1)
LARGEST_SLICE = datetime.timedelta(days=1)


class Pace:
    """Runs the job's chunked statements, times them and rests after each.

    One per job run; its figures go to the `maintenance done` log line.
    """

    def __init__(self, heartbeat=lambda: None, duty: float = DUTY, target_s: float = TARGET_S,
                 sleep=time.sleep, clock=time.monotonic, behind=None):
        """`behind()`: seconds the oldest claimable task or due URL has waited (None: never yield)."""
        self.heartbeat, self.duty, self.target_s = heartbeat, duty, target_s
        self.sleep, self.clock, self.behind = sleep, clock, behind
        self.statements = 0
        self.longest_s = 0.0
        self.work_s = 0.0
        self.rest_s = 0.0
        self.yield_s = 0.0
        self._commit = None

    @contextlib.contextmanager
    def committing(self, conn):
        """Within it, each statement run through this pace commits `conn` before its rest. For
        work whose partial results no reader sees (rows past a watermark, a staging table)."""
        self._commit = conn.commit
        try:
            yield
        finally:
            self._commit = None

    def execute(self, cur, sql, params=None) -> None:
        """cur.execute(sql, params), then a rest."""
        self.call(cur.execute, sql, params)

    def call(self, work, *args):
        """work(*args) (the statements of one chunk), then a rest; returns what work returns."""
        started = self.clock()
        result = work(*args)
        if self._commit is not None:
            self._commit()
        took = self.clock() - started
        self.statements += 1
        self.longest_s = max(self.longest_s, took)
        self.work_s += took
        self.rest(took)
        return result

    def rest(self, worked_s: float) -> None:
        """Rest after `worked_s` of work, so that work is `duty` of the time; then wait while
        the checks are behind (at most MAX_YIELD_S)."""
        self.heartbeat()
        pause = worked_s * (1.0 - self.duty) / self.duty
        if pause > 0:
            self.rest_s += pause
            self.sleep(pause)
        waited = 0.0
        while self.behind is not None and waited < MAX_YIELD_S and self.behind() >= BEHIND_S:
            self.heartbeat()
            self.sleep(YIELD_POLL_S)
            waited += YIELD_POLL_S
        self.yield_s += waited

    def resize(self, size: float, took_s: float, smallest: float, largest: float) -> float:
        """The next chunk's size, from this one's size and how long its statement took."""
        factor = self.target_s / max(took_s, 1e-3)
        factor = min(GROWTH, max(1.0 / GROWTH, factor))
        return min(largest, max(smallest, size * factor))

    def report(self) -> dict:
        return {"statements": self.statements, "longest_statement_s": round(self.longest_s, 3),
                "work_s": round(self.work_s, 3), "rest_s": round(self.rest_s, 3), "yield_s": round(self.yield_s, 3)}


MAX_ID = 2**63 - 1


def url_chunks(cur, pace: Pace, first: int | None = None, smallest: int = 200, largest: int = 50_000):
    """Chunks of the monitored URLs, each sized by how long the previous chunk's statements
    (run through `pace`) took in all.

    Yields (lo, hi, ids): ids are the chunk's monitored URL ids, [lo, hi) a url_id range that
    also holds the ids of removed URLs in between (their rows outlive them until retention).
    The ranges of one pass cover every url_id.
    """
    cur.execute("SELECT id FROM url ORDER BY id")
    ids = [row[0] for row in cur.fetchall()]
    size, i, lo = float(first or FIRST_CHUNK), 0, 0
    while True:
        chunk = ids[i:i + int(size)]
        i += len(chunk)
        hi = ids[i] if i < len(ids) else MAX_ID
        before = pace.work_s
        yield lo, hi, chunk
        if hi == MAX_ID:
            return
        lo = hi
        size = pace.resize(size, pace.work_s - before, smallest, largest)


def time_slices(cur, start, end, pace: Pace, rows: int | None = None):
    """[start, end) as consecutive slices [a, b), each sized by how long the previous one's
    statements took: raw rows are stored in time order, so a slice is a range of pages.

    The first slice holds about `rows` results at the monitored URLs' rate, and no slice
    grows past GROWTH times that: after a stretch with no rows (before the first result, a
    stop) the next slice must not be a day's worth.
    """
    cur.execute("SELECT coalesce(sum(1.0 / period), 0)::float8 FROM url")
    per_second = cur.fetchone()[0]
    first = datetime.timedelta(seconds=(rows or SLICE_ROWS) / per_second) if per_second else LARGEST_SLICE
    first = min(LARGEST_SLICE, max(SMALLEST_SLICE, first))
    size, a = first, start
    while a < end:
        b = min(end, a + size)
        before = pace.work_s
        yield a, b
        a = b
        size = pace.resize(size, pace.work_s - before, SMALLEST_SLICE, min(LARGEST_SLICE, first * GROWTH))
