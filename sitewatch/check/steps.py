"""A kind's check written once as steps: a generator that yields what it waits for.

On the curl engine a consumer drives checks of several kinds from its one CurlMulti loop
(run/transfers.py): a check that blocked a thread on a socket would stall every other check
of the loop, and a thread per check costs a hand-off to it and back, and the GIL's contention
(docs/benchmarks.md, "Where a mixed result's CPU goes"). So tcp:// and dns:// write their
exchange as a generator of steps:

* `Wait(fd, events, at)`: resumed with True once the descriptor is ready (select.POLLIN or
  POLLOUT), False when the monotonic time `at` (the check's deadline) came first;
* `curl_connect.Connect`: a connection made by libcurl (the loop's resolver, Happy Eyeballs,
  deadline, source address); resumed with libcurl's (code, message). Only the loop drives it.

The generator returns the Response, and never raises. `run()` drives the same generator on
the calling thread, blocking, for the urllib3 engine's consumers and `sitewatch check`:
one implementation of each exchange, whoever waits.
"""

from __future__ import annotations

import select
import time
from dataclasses import dataclass

READ, WRITE = select.POLLIN, select.POLLOUT


@dataclass(slots=True)
class Wait:
    fd: int
    events: int     # READ or WRITE
    at: float       # time.monotonic() by which the descriptor must be ready


def run(steps):
    """Drive `steps` on this thread, waiting for each descriptor in turn; its return value."""
    ready = None
    while True:
        try:
            wait = steps.send(ready)
        except StopIteration as stop:
            return stop.value
        poller = select.poll()
        poller.register(wait.fd, wait.events)
        ready = False
        while not ready and (left := wait.at - time.monotonic()) > 0:
            # An error or a hang-up counts as ready too: the read or write that follows says which.
            ready = bool(poller.poll(left * 1000.0 + 1))
