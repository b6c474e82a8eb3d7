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
        self._thread: threading.Thread | None = None

    def add(self, deadline: Deadline) -> None:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sitewatch-watchdog", daemon=True)
                self._thread.start()
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
        # The heap entry stays until it comes due (lazy deletion); marking it
        # finished under the lock guarantees the watchdog never touches a socket
        # of a check that has moved on (its fd number may already be reused).
        with self._cond:
            deadline.finished = True
            deadline.sock = None

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
                if not deadline.finished:
                    deadline.expired = True
                    if deadline.sock is not None:
                        _cut(deadline.sock)


WATCHDOG = Watchdog()
os.register_at_fork(after_in_child=WATCHDOG._reset)
