"""One check's total deadline, and the watchdog thread that enforces it.

Socket timeouts alone are per recv() call, and http.client reads a header block
with many small recv() calls, so a server dribbling one byte per second would
never trip them. A single watchdog thread per process shuts down the socket of
any check whose deadline has passed; the blocked recv() then returns and the
check reports `timeout`.
"""

from __future__ import annotations

import heapq
import itertools
import os
import socket
import threading
import time


class Deadline:
    """One check's total deadline, and the socket the watchdog must cut when it passes."""

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)  # a NUMERIC column arrives as Decimal
        self.start = time.monotonic()
        self.at = self.start + self.seconds
        self.expired = False  # set by the watchdog thread
        self.finished = False  # set when the check is done; the watchdog then ignores it
        self.sock: socket.socket | None = None  # guarded by the watchdog's lock

    def passed(self) -> bool:
        return self.expired or time.monotonic() >= self.at

    def left(self) -> float:
        """Seconds left, for socket timeouts; raises TimeoutError once none are."""
        left = self.at - time.monotonic()
        if left <= 0 or self.expired:
            raise TimeoutError("total deadline passed")
        return left


def _cut(sock: socket.socket) -> None:
    # socket.socket.shutdown, not SSLSocket.shutdown: the latter also drops the SSL
    # object under the feet of the thread blocked reading it. Shutting the fd down
    # is enough to make that read return.
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # not connected yet, already closed, or detached by the TLS wrapper


# Ended checks tolerated in the heap before it is compacted.
COMPACT_MIN = 64


class Watchdog:
    """One daemon thread per process that cuts the socket of every overdue check.

    Started lazily on the first check, so nothing runs before a worker forks;
    reset in a forked child, where the parent's thread does not exist.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._seq = itertools.count()  # tie-breaker: deadlines are not orderable
        self._finished = 0  # heap entries of checks that have already ended
        self._thread: threading.Thread | None = None

    def add(self, deadline: Deadline) -> None:
        with self._cond:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="sitewatch-watchdog", daemon=True)
                thread.start()  # may raise "can't start new thread": then try again next check
                self._thread = thread
            heapq.heappush(self._heap, (deadline.at, next(self._seq), deadline))
            # Wake the watchdog only when this deadline comes first: with one timeout for
            # all URLs deadlines arrive in order, so thousands of checks a second do not
            # cost thousands of thread wake-ups.
            if self._heap[0][2] is deadline:
                self._cond.notify()

    def watch(self, deadline: Deadline, sock: socket.socket | None) -> None:
        """Make `sock` the one to cut for `deadline` (None before closing it)."""
        with self._cond:
            deadline.sock = sock
            if sock is not None and deadline.expired:
                _cut(sock)

    def remove(self, deadline: Deadline) -> None:
        # Marking it finished under the lock guarantees the watchdog never touches
        # a socket of a check that has moved on (its fd number may already be
        # reused). The heap entry itself is deleted lazily: when it comes due, or
        # when ended checks make up half the heap, which is then rebuilt. So the
        # heap holds at most about twice the checks in progress, whatever the
        # timeout (an hour-long timeout at 1,000 checks/s would otherwise keep
        # millions of entries), at an amortised O(1) per check.
        with self._cond:
            if deadline.finished:
                return
            deadline.finished = True
            deadline.sock = None
            self._finished += 1
            if self._finished > COMPACT_MIN and 2 * self._finished > len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2].finished]
                heapq.heapify(self._heap)
                self._finished = 0

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                at, _, deadline = self._heap[0]
                wait = at - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)  # woken early when an earlier deadline is added
                    continue
                heapq.heappop(self._heap)
                if deadline.finished:
                    self._finished -= 1
                else:
                    deadline.expired = True
                    if deadline.sock is not None:
                        _cut(deadline.sock)


WATCHDOG = Watchdog()
os.register_at_fork(after_in_child=WATCHDOG._reset)
