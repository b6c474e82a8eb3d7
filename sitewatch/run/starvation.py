"""When a consumer was starved of CPU, and what that makes of a check that timed out meanwhile.

A consumer whose host is overloaded (more checks than its cores can run, another program
taking a core) runs its checks late: a site that answered in 0.1 s can still time out
because the thread that should read the answer did not run before the deadline. Recorded as
`timeout`, that is a false down: the monitor's fault, paged as the site's.

The consumer measures its own starvation the way its check threads suffer it: a canary
thread sleeps CANARY_SLEEP at a time and notes how late it runs again (the wait for a core
and for the GIL after a blocking call, which is what a check thread whose answer has arrived
waits for). A check that timed out while the canary was late for at least half of the
check's time is recorded `lost` (not judged: it counts toward no incident and no uptime),
the original error kept in the text. Not retried: a retry would add work to a host that is
already behind. A site that really hangs is recorded down by its next check made while the
consumer keeps time.

Measured first (and dropped) on the consumer's main loop: it is woken early by finished
checks, so the time it waits for the GIL after poll() hides behind the early wake-up.
"""

import dataclasses
import threading
import time
from collections import deque

from ..check import probe
from ..check.engine import Timings

LOG_EVERY = 60.0        # seconds between "timed out while starved" warnings
CANARY_SLEEP = 0.1      # seconds the canary sleeps between measurements
SPELL_MIN = 0.25        # seconds late that count as a spell of starvation
STARVED_SHARE = 0.5     # a timeout is the host's when starvation took this share of the check's time
SPELLS_KEPT = 4096      # spells remembered: 24 minutes or more of them (fewer only under-counts)


class Starvation:
    """The spells during which a thread of this consumer waited SPELL_MIN or more to run."""

    def __init__(self, log) -> None:
        self.log = log
        self.spells = deque(maxlen=SPELLS_KEPT)    # (from, to) monotonic seconds, in order
        self.due = None                            # when the canary is next due to run
        self.canary = None
        self.count = 0                             # timeouts recorded lost since the last take()
        self.last_log = -LOG_EVERY

    def start(self) -> None:
        """Start the canary (in the consumer's process: a thread does not survive a fork)."""
        self.canary = threading.Thread(target=self._canary, name="sitewatch-starvation-canary", daemon=True)
        self.canary.start()

    def _canary(self) -> None:
        while True:
            self.due = time.monotonic() + CANARY_SLEEP
            time.sleep(CANARY_SLEEP)
            self.late(self.due, time.monotonic())

    def late(self, due: float, now: float) -> None:
        """A thread due to run at `due` ran at `now`."""
        if now - due >= SPELL_MIN:
            self.spells.append((due, now))

    def during(self, start: float, end: float, now: float) -> float:
        """Seconds of [start, end] spent in spells of starvation, counting one still going on
        (the canary overdue at `now`: it has not run yet)."""
        # `due` first: the canary appends a spell before it moves `due` on, so none is missed.
        due = self.due
        spells = list(self.spells)      # one C call: no thread appends meanwhile
        # An overdue canary is a spell going on, if it is alive (a dead one is no evidence).
        alive = self.canary is None or self.canary.is_alive()
        if alive and due is not None and now - due >= SPELL_MIN and (not spells or spells[-1][1] <= due):
            spells.append((due, now))
        starved = 0.0
        for since, until in reversed(spells):
            if until <= start:
                break
            starved += max(0.0, min(until, end) - max(since, start))
        return starved

    def judge(self, outcome: probe.Outcome, start: float, end: float, now: float) -> probe.Outcome:
        """The outcome to record for a check that ran from `start` to `end`: a timeout during
        which the consumer was starved STARVED_SHARE of the time becomes `lost`."""
        if outcome.error_kind != "timeout":
            return outcome
        starved = self.during(start, end, now)
        if starved < STARVED_SHARE * (end - start):
            return outcome
        self.count += 1
        if end - self.last_log >= LOG_EVERY:          # a line a minute, not one per check
            self.last_log = end
            self.log.warning("a check timed out while this consumer was starved of CPU: recorded lost, "
                             "not down (the host is overloaded: add a host or CPU)",
                             starved_s=round(starved, 1), check_s=round(end - start, 1))
        return dataclasses.replace(
            outcome, ok=False, error_kind="lost", status_code=None, regex_matched=None, response_time_ms=None,
            degraded=False, timings=Timings(),     # phases stretched by the wait: not the site's
            error=f"not judged: the check timed out while this consumer was starved of CPU ({starved:.1f} s "
                  f"of its {end - start:.1f} s); the site may well have answered ({outcome.error})")

    def take(self) -> int:
        """Timeouts recorded lost since the last call (the consumer's stats)."""
        count, self.count = self.count, 0
        return count
