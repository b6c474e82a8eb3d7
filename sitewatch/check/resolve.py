"""Name resolution bounded by a check's deadline.

getaddrinfo() blocks in C and cannot be interrupted, so lookups run on helper
threads and the check stops waiting at its deadline.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import queue
import socket
import threading

from .deadline import Deadline

# Resolver threads per process. A hanging DNS server holds a thread for as long
# as the system resolver waits (seconds to minutes): without a bound, every check
# of every URL on it starts one more, up to the process's thread limit. The bound
# also caps lookup throughput (256 threads at 100 ms per uncached lookup: 2,560
# lookups/s); a process running more checks at once may raise it
# (RESOLVER.max_threads, e.g. to its concurrency).
MAX_RESOLVER_THREADS = 256


class _Lookup:
    """One getaddrinfo() call, shared by every check waiting for the same name."""

    def __init__(self, host: str, port: int) -> None:
        self.key = (host, port)
        self.done = threading.Event()
        self.result: list | BaseException | None = None
        self.waiters = 0  # checks still waiting for it (guarded by the resolver's lock)


class Resolver:
    """getaddrinfo() on a bounded pool of reusable daemon threads.

    getaddrinfo() blocks in C and cannot be interrupted, so it runs on another thread
    and the caller stops waiting at its deadline; the thread lingers until the system
    resolver gives up. Threads are reused, because starting one costs ~90 us of CPU,
    far more than a cached lookup; a new one starts whenever no thread is free for a
    new lookup, so a hung lookup never delays another, up to MAX_RESOLVER_THREADS.
    Beyond that, lookups queue (their checks time out while resolving), checks of
    the same name share one lookup, and a lookup every waiter has given up on is
    dropped unasked.
    """

    def __init__(self, max_threads: int = MAX_RESOLVER_THREADS) -> None:
        self.max_threads = max_threads
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._pending: dict[tuple[str, int], _Lookup] = {}  # queued or running, by name
        self.threads = 0
        self._idle = 0  # threads blocked waiting for a job
        self._queued = 0  # jobs not yet taken by a thread

    def lookup(self, host: str, port: int, timeout: float) -> list:
        with self._lock:
            job = self._pending.get((host, port))
            if job is None:
                job = _Lookup(host, port)
                if self._queued + 1 > self._idle and self.threads < self.max_threads:
                    # Raises RuntimeError ("can't start new thread") before anything is queued.
                    threading.Thread(target=self._serve, name="sitewatch-dns", daemon=True).start()
                    self.threads += 1
                self._pending[job.key] = job
                self._queued += 1
                self._jobs.put(job)
            job.waiters += 1
        try:
            if not job.done.wait(timeout):
                raise TimeoutError("DNS lookup timed out")
        finally:
            with self._lock:
                job.waiters -= 1
        if isinstance(job.result, BaseException):
            raise copy.copy(job.result)  # one object per waiter: raising sets its traceback
        return job.result

    def _serve(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            job = self._jobs.get()
            with self._lock:
                self._idle -= 1
                self._queued -= 1
                abandoned = job.waiters == 0
                if abandoned:
                    del self._pending[job.key]
            if abandoned:
                continue  # every check waiting for it has timed out: do not ask at all
            try:
                job.result = socket.getaddrinfo(*job.key, type=socket.SOCK_STREAM)
            except socket.gaierror as exc:
                job.result = starved() or exc
            except Exception as exc:
                job.result = exc
            with self._lock:
                del self._pending[job.key]
            job.done.set()


def starved() -> OSError | None:
    """The error of a descriptor we cannot open, if this process has run out.

    glibc reports a lookup that could not open /etc/hosts or a DNS socket for
    want of descriptors as "Name or service not known": that is the monitor's
    failure, not the site's, so look before blaming the name.
    """
    try:
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()
    except OSError as exc:
        return exc
    return None


RESOLVER = Resolver()
os.register_at_fork(after_in_child=RESOLVER._reset)


def resolve(host: str, port: int, deadline: Deadline) -> list:
    """getaddrinfo() bounded by the deadline (see Resolver)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:  # an address literal needs no lookup
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    return RESOLVER.lookup(host, port, deadline.left())
