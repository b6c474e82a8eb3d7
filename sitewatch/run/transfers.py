"""A consumer's checks on the curl engine: one CurlMulti loop on one thread, not a thread per check.

libcurl drives every transfer in flight from one event loop (socket_action on epoll on
Linux, a `selectors` selector elsewhere: kqueue on macOS; no FD_SETSIZE limit), so a thousand
waiting checks cost a thousand sockets and easy handles, not a thousand threads
with their stacks (README "Check engines"). Each check is a curl_engine._Transfer,
the very steps the curl engine's fetch() runs with perform(), so both judge and
classify alike; probe.judge() turns the response into the Outcome.

Checks of the kinds that write their exchange as steps (check/steps.py: tcp://, dns://) run
on the same loop: their sockets on the same poller, their deadlines on a heap, and a tcp://
connection made by libcurl in the same CurlMulti. No thread, no hand-off.

CurlTransfers has the interface of run/concurrency.CheckThreads that the consumer
uses (submit, ensure, take_unstarted, stop, size): the consumer's adaptive limit
then bounds transfers in flight.
"""

from __future__ import annotations

import datetime
import heapq
import itertools
import os
import queue
import select
import selectors
import threading
import time

import pycurl

from ..check import kinds
from ..check.curl_engine import _Transfer
from ..check.engine import failed, monitor_failure, unexpected
from ..check.probe import judge
from ..check.steps import Wait
from ..redact import redact_text

# How long the loop sleeps with nothing to do before it looks at the queue again (it is
# woken at once by a submission; this only bounds a missed wake-up).
IDLE_WAIT = 1.0
MAX_SPARE_HANDLES = 256  # easy handles kept for reuse (each holds libcurl buffers)


class _Epoll:
    """The sockets libcurl asks to watch, on epoll directly (Linux): with a fresh connection per
    check each socket is registered, modified and removed once, and `selectors` pays a key
    object and a few dict operations in Python for each (~7% of the loop's CPU at saturation)."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._watched: set[int] = set()

    def watch(self, fd: int, events: int) -> None:
        if fd in self._watched:
            try:
                self._epoll.modify(fd, events)
                return
            except FileNotFoundError:   # closed and its number reused without a REMOVE: add it anew
                pass
        self._epoll.register(fd, events)
        self._watched.add(fd)

    def forget(self, fd: int) -> None:
        if fd in self._watched:
            self._watched.discard(fd)
            try:
                self._epoll.unregister(fd)
            except OSError:     # libcurl closed it already: the kernel dropped it from the set
                pass

    def wait(self, timeout: float) -> list[tuple[int, int]]:
        return self._epoll.poll(timeout)

    def close(self) -> None:
        self._epoll.close()


class _Selector:
    """The same on `selectors` (kqueue on macOS, poll elsewhere)."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()

    def watch(self, fd: int, events: int) -> None:
        events = (selectors.EVENT_READ if events & select.POLLIN else 0) | \
                 (selectors.EVENT_WRITE if events & select.POLLOUT else 0)
        try:
            self._selector.modify(fd, events)
        except KeyError:
            self._selector.register(fd, events)

    def forget(self, fd: int) -> None:
        try:
            self._selector.unregister(fd)
        except (KeyError, ValueError, OSError):
            pass

    def wait(self, timeout: float) -> list[tuple[int, int]]:
        return [(key.fd, (select.POLLIN if mask & selectors.EVENT_READ else 0) |
                 (select.POLLOUT if mask & selectors.EVENT_WRITE else 0))
                for key, mask in self._selector.select(timeout)]

    def close(self) -> None:
        self._selector.close()


POLLER = _Epoll if hasattr(select, "epoll") else _Selector   # the loop's; tests try the other too

# What libcurl asks to watch -> poll events; and poll events -> what socket_action is told.
_WATCH = {pycurl.POLL_IN: select.POLLIN, pycurl.POLL_OUT: select.POLLOUT,
          pycurl.POLL_INOUT: select.POLLIN | select.POLLOUT}
# As `selectors` reads epoll's events: a hang-up or an error wakes both directions (libcurl then
# sees the close or the error).
_NOT_READ, _NOT_WRITE = ~select.POLLOUT, ~select.POLLIN


class _Stepped:
    """A check of a kind driven by its steps (check/steps.py) on the loop."""

    __slots__ = ("steps", "task", "target", "t0", "started_at", "handle", "fd", "turn")

    def __init__(self, steps, task, target, t0, started_at) -> None:
        self.steps, self.task, self.target, self.t0, self.started_at = steps, task, target, t0, started_at
        self.handle = None      # the easy handle of its libcurl connection, kept in the multi until it ends
        self.fd: int | None = None     # the descriptor it waits for
        self.turn: int | None = None   # its current wait's entry on the deadline heap (older ones are stale)


def runs_on_loop(request) -> bool:
    """Whether a check of `request` runs on the loop: HTTP, and the kinds with steps for it."""
    if kinds.is_http(request.url):
        return True
    on_loop = getattr(kinds.kind_of(request.url), "steps_on_loop", None)
    return on_loop is not None and on_loop(request)


class CurlTransfers:
    def __init__(self, on_start, on_done) -> None:
        """on_start(task) -> t0 when a check starts; on_done(task, outcome, t0) when it ends (loop thread)."""
        self._on_start = on_start
        self._on_done = on_done
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._asleep = False
        self.size = 0            # threads: the loop's one, once started
        self.in_flight = 0       # transfers in libcurl's hands
        self.start_failures = 0
        self.died: str | None = None   # why the loop thread ended, if it did while running

    # ---- the consumer's side (its main thread)

    def ensure(self, wanted: int) -> bool:
        """Start the loop thread once; False if the OS refused it (a monitor failure)."""
        if self._thread is not None or wanted <= 0:
            return True
        thread = threading.Thread(target=self._run, name="curl-transfers", daemon=True)
        try:
            thread.start()
        except RuntimeError:   # "can't start new thread"
            self.start_failures += 1
            return False
        self._thread, self.size = thread, 1
        return True

    def submit(self, task, target) -> None:
        self._queue.put((task, target))
        if self._asleep:        # one byte wakes the selector; none while the loop is busy anyway
            try:
                os.write(self._wake_w, b"\0")
            except BlockingIOError:
                pass            # the pipe is full: the loop has wake-ups enough

    def take_unstarted(self) -> list:
        items = []
        try:
            while True:
                item = self._queue.get_nowait()
                if item is not None:
                    items.append(item)
        except queue.Empty:
            return items

    def stop(self) -> None:
        self._stopping = True
        self._queue.put(None)
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass

    # ---- the loop thread

    def _run(self) -> None:
        self._poller = POLLER()
        self._poller.watch(self._wake_r, select.POLLIN)
        self._timer_at: float | None = None
        self._active: dict[pycurl.Curl, tuple | _Stepped] = {}
        self._spare: list[pycurl.Curl] = []
        self._waiting: dict[int, _Stepped] = {}        # fd -> the stepped check waiting for it
        self._deadlines: list[tuple[float, int, _Stepped]] = []    # a heap; entries of past waits are stale
        self._turns = itertools.count()
        self._stepping: set[_Stepped] = set()
        self._multi = multi = pycurl.CurlMulti()
        multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        try:
            while not self._stopping:
                self._take_work()
                self._wait_and_act()
                self._collect()
        except Exception as exc:   # a bug of ours or of pycurl: no check would finish again
            # The consumer sees `died`, logs it and stops beating, and the supervisor replaces it
            # (its checks in flight are reclaimed when their leases expire). The class name and
            # a redacted message: the text may quote a URL.
            self.died = redact_text(f"{type(exc).__name__}: {exc}")[:300]
            raise                  # threading.excepthook prints the traceback
        finally:
            for stepped in self._stepping:
                stepped.steps.close()           # a dns:// check's socket closes with its generator
                if stepped.handle is not None and stepped.handle not in self._active:
                    self._active[stepped.handle] = stepped
            for handle in list(self._active):
                multi.remove_handle(handle)
                handle.close()
            multi.close()
            self._poller.close()

    def _take_work(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is None:
                self._stopping = True
                return
            self._start(*item)

    def _start(self, task, target) -> None:
        t0 = self._on_start(task)
        started_at = datetime.datetime.now(datetime.timezone.utc)
        if not kinds.is_http(target.request.url):
            stepped = _Stepped(kinds.kind_of(target.request.url).steps(target.request), task, target, t0, started_at)
            self._stepping.add(stepped)
            self.in_flight += 1
            self._advance(stepped, None)
            return
        try:
            handle = self._spare.pop() if self._spare else pycurl.Curl()
            transfer = _Transfer(target.request, handle)
        except Exception as exc:   # pycurl.Curl(): out of memory or descriptors
            exhausted = monitor_failure(exc) or f"cannot start a transfer ({type(exc).__name__})"
            response = failed("monitor", f"monitor failure: {exhausted}; the site was not checked", ())
            self._on_done(task, judge(target, response, started_at), t0)
            return
        if transfer.begin():
            self._active[handle] = (transfer, task, target, t0, started_at)
            self._multi.add_handle(handle)
            self.in_flight += 1
        else:
            self._done(handle, transfer, task, target, t0, started_at)

    def _wait_and_act(self) -> None:
        now = time.monotonic()
        wait = IDLE_WAIT if self._timer_at is None else max(0.0, self._timer_at - now)
        if self._deadlines:
            wait = min(wait, max(0.0, self._deadlines[0][0] - now))
        self._asleep = True
        if not self._queue.empty():  # a submission raced the flag: do not sleep on it
            wait = 0.0
        events = self._poller.wait(min(wait, IDLE_WAIT))
        self._asleep = False
        for fd, mask in events:
            if fd == self._wake_r:
                try:
                    while os.read(self._wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
                continue
            stepped = self._waiting.pop(fd, None)
            if stepped is not None:
                self._poller.forget(fd)
                stepped.turn = None
                self._advance(stepped, True)
                continue
            action = (pycurl.CSELECT_IN if mask & _NOT_READ else 0) | \
                     (pycurl.CSELECT_OUT if mask & _NOT_WRITE else 0)
            self._multi.socket_action(fd, action)
        if self._timer_at is not None and time.monotonic() >= self._timer_at:
            self._timer_at = None
            self._multi.socket_action(pycurl.SOCKET_TIMEOUT, 0)
        deadlines, now = self._deadlines, time.monotonic()
        while deadlines and deadlines[0][0] <= now:
            _, turn, stepped = heapq.heappop(deadlines)
            if stepped.turn == turn:        # still waiting: its deadline came first
                del self._waiting[stepped.fd]
                self._poller.forget(stepped.fd)
                stepped.turn = None
                self._advance(stepped, False)

    # ---- stepped checks (tcp://, dns://)

    def _advance(self, stepped: _Stepped, value, error: BaseException | None = None) -> None:
        """Resume `stepped` with what it waited for, until it waits again or ends."""
        try:
            wait = stepped.steps.send(value) if error is None else stepped.steps.throw(error)
        except StopIteration as stop:
            self._stepped_done(stepped, stop.value)
            return
        except Exception as exc:   # a bug of ours: steps never raise; never lose the slot
            self._stepped_done(stepped, unexpected(exc, "the site", ()))
            return
        if isinstance(wait, Wait):
            stepped.fd, stepped.turn = wait.fd, next(self._turns)
            self._waiting[wait.fd] = stepped
            self._poller.watch(wait.fd, wait.events)
            heapq.heappush(self._deadlines, (wait.at, stepped.turn, stepped))
            return
        try:       # a connection for libcurl to make (check/curl_connect.py)
            handle = self._spare.pop() if self._spare else pycurl.Curl()
        except Exception as exc:
            self._advance(stepped, None, exc)
            return
        try:
            wait.start(handle)
        except Exception as exc:
            self._spare.append(handle)
            self._advance(stepped, None, exc)
            return
        stepped.handle = handle
        self._active[handle] = stepped
        self._multi.add_handle(handle)

    def _stepped_done(self, stepped: _Stepped, response) -> None:
        self._stepping.discard(stepped)
        self.in_flight -= 1
        handle = stepped.handle
        if handle is not None:
            self._multi.remove_handle(handle)   # libcurl closes the connection now
            self._spare_handle(handle)
        self._judged(stepped.task, stepped.target, response, stepped.started_at, stepped.t0)

    def _on_socket(self, what: int, fd: int, multi, data) -> None:
        if what == pycurl.POLL_REMOVE:
            self._poller.forget(fd)
            return
        events = _WATCH.get(what)
        if events:
            self._poller.watch(fd, events)

    def _on_timer(self, timeout_ms: int) -> None:
        self._timer_at = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000.0

    def _collect(self) -> None:
        while True:
            queued, done, errors = self._multi.info_read()
            for handle in done:
                self._hop_ended(handle, 0, "")
            for handle, code, message in errors:
                self._hop_ended(handle, code, message)
            if not queued:
                return

    def _hop_ended(self, handle, code: int, message: str) -> None:
        entry = self._active[handle]
        if isinstance(entry, _Stepped):    # connected (or not): the handle stays in the multi until it ends
            del self._active[handle]
            self._advance(entry, (code, message))
            return
        transfer, task, target, t0, started_at = entry
        self._multi.remove_handle(handle)
        if transfer.end(code, message):   # another hop (a redirect, the certificate's look)
            self._multi.add_handle(handle)
            return
        del self._active[handle]
        self.in_flight -= 1
        self._done(handle, transfer, task, target, t0, started_at)

    def _done(self, handle, transfer, task, target, t0, started_at) -> None:
        self._spare_handle(handle)
        self._judged(task, target, transfer.result, started_at, t0)

    def _spare_handle(self, handle) -> None:
        if len(self._spare) < MAX_SPARE_HANDLES:
            self._spare.append(handle)
        else:
            handle.close()

    def _judged(self, task, target, response, started_at, t0) -> None:
        try:
            outcome = judge(target, response, started_at)
        except Exception as exc:  # a bug of ours: never lose the slot, never kill the loop
            exhausted = monitor_failure(exc)
            kind = "monitor" if exhausted else "protocol"
            response = failed(kind, exhausted or f"unexpected error: {type(exc).__name__}", ())
            outcome = judge(target, response, started_at)
        self._on_done(task, outcome, t0)
