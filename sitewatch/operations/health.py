"""Liveness (/healthz) and readiness (/readyz) of `sitewatch run`.

The supervisor's main loop publishes a snapshot of its children once per pass
(update()); the listener thread only reads the latest snapshot, so answering a probe
never touches the process table. Readiness also asks the database, through the
cluster gauges' connection (a fresh scrape counts as an answer).
"""

import threading
import time

LOOP_TIMEOUT = 10.0     # the main loop passes at least once a second; ten missed passes = hung


class Health:
    def __init__(self, ping, stale_after: float, clock=time.monotonic):
        self._ping = ping                  # () -> bool: is the database reachable
        self.stale_after = stale_after     # seconds without a heartbeat after which a child is not ready
        self._clock = clock
        self._lock = threading.Lock()
        self._loop_at = None
        self._children = []                # [(role, state, seconds since its last heartbeat or None)]
        self._stopping = False

    def update(self, children, stopping: bool) -> None:
        """Called by the supervisor's main loop on every pass."""
        with self._lock:
            self._loop_at = self._clock()
            self._children = list(children)
            self._stopping = stopping

    def live(self) -> tuple[bool, str]:
        with self._lock:
            loop_at = self._loop_at
        if loop_at is None:
            return False, "supervisor loop not started"
        silent = self._clock() - loop_at
        if silent > LOOP_TIMEOUT:
            return False, f"supervisor loop silent for {silent:.0f} s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        alive, why = self.live()
        if not alive:
            return False, why
        with self._lock:
            children, stopping = self._children, self._stopping
        if stopping:
            return False, "stopping"
        for role, state, silent in children:
            if state != "RUNNING":
                return False, f"{role} not running ({state.lower()})"
            if silent is not None and silent > self.stale_after:
                return False, f"{role} heartbeat {silent:.0f} s old"
        if not self._ping():
            return False, "database unreachable"
        return True, "ok"
