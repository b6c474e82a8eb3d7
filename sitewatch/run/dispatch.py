"""A consumer's checks on the curl engine: HTTP and stepped kinds on the loop, the rest on threads.

The CurlMulti loop (transfers.py) drives libcurl transfers, and the checks of kinds written
as steps (check/steps.py): tcp://, and dns:// unless its resolver is named by a host name. A
tls:// or icmp:// check, or a dns:// one whose resolver must be looked up first, blocks its
thread like a urllib3 check, so those run on a CheckThreads pool beside the loop. Both are
counted in the consumer's one `in_flight` and bounded by its one adaptive limit
(concurrency.py): this class only routes, with the interface the consumer uses (submit,
ensure, take_unstarted, stop, size, died). An HTTP task pays one string test.
"""

from __future__ import annotations

import threading

from .concurrency import CheckThreads
from .transfers import runs_on_loop


class CurlAndThreads:
    def __init__(self, transfers, work) -> None:
        """`transfers`: the CurlTransfers loop; `work(task, target)`: one check of another kind,
        run on a thread (the consumer's _check)."""
        self.transfers = transfers
        self._work = work
        self.threads = CheckThreads(self._check)
        self._lock = threading.Lock()
        self.kinds_held = 0     # checks of other kinds queued or running on threads

    def _check(self, task, target) -> None:
        try:
            self._work(task, target)
        finally:
            with self._lock:
                self.kinds_held -= 1

    def submit(self, task, target) -> None:
        if runs_on_loop(target.request):
            self.transfers.submit(task, target)
            return
        with self._lock:
            self.kinds_held += 1
        self.threads.submit(task, target)

    def ensure(self, wanted: int) -> bool:
        """The loop running, and a thread for every check of another kind held; False if the OS
        refused one (a monitor failure)."""
        return self.transfers.ensure(wanted) and self.threads.ensure(self.kinds_held)

    def take_unstarted(self) -> list:
        taken = self.threads.take_unstarted()
        with self._lock:
            self.kinds_held -= len(taken)
        return self.transfers.take_unstarted() + taken

    def stop(self) -> None:
        self.transfers.stop()
        self.threads.stop()

    @property
    def size(self) -> int:
        return self.transfers.size + self.threads.size

    @property
    def died(self) -> str | None:
        return self.transfers.died
