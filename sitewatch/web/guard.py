"""Connection limits of the web server: a request timeout, a cap on open connections, and a
quiet log when the process runs out of file descriptors.

uvicorn alone closes an idle connection only after a response (timeout_keep_alive): a client
that connects and sends nothing, or half a request, holds its socket for ever, and enough of
them exhaust the process's file descriptors. asyncio then fails every accept() and logs each
failure with a traceback, up to `backlog` times per wakeup (hundreds of thousands of lines a
minute), while the page stops answering. So:

* every connection must send a complete request within web.request_timeout of connecting
  or of its previous response, or it is closed;
* at most `cap` connections are open, below the open-file limit (connection_cap): a new
  connection beyond it closes the one that has waited longest for its request (an idle or
  half-sent one, never one being answered), or is itself closed when all are busy; so
  idle sockets cannot lock real clients out;
* `socket.accept() out of system resource` is logged once a minute with a count;
* a request's head (its request line and headers) is at most MAX_HEAD_BYTES, else 400 and the
  connection is closed (what h11's 16 KiB bound gave, which llhttp has no setting for).

HTTP/1.1 is uvicorn's httptools protocol (llhttp, in C): with h11 (pure Python) parsing and
serialising took more than half of a ping's CPU in the web child (docs/benchmarks.md, "Where
a mixed result's CPU goes").
"""

import os
import resource
import time

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .. import logs

FD_RESERVE = 48           # descriptors kept for everything but client connections (pool, logs, imports)
ACCEPT_LOG_EVERY = 60.0   # seconds between two "out of file descriptors" log lines
MAX_HEAD_BYTES = 16 * 1024


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:           # not Linux: a guess
        return 32


def connection_cap(max_connections: int) -> int:
    """web.max_connections, lowered so that connections never exhaust the open-file limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections
    return max(4, min(max_connections, soft - open_fds() - FD_RESERVE))


def protocol_class(request_timeout: float, cap: int) -> type:
    """uvicorn's httptools protocol with the request timeout, the connection cap and the head bound."""

    class GuardedHttpTools(HttpToolsProtocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._request_timer = None
            self._receiving = True      # no complete request since the last response (or ever)
            self._head_bytes = 0        # bytes received while a request's head is unfinished
            self._in_head = True        # between a request's first byte and the end of its headers
            self._parsed_head_bytes = 0
            self._head_too_large = False
            self._arm_request_timer()
            if len(self.connections) > cap:
                self._make_room()

        def connection_lost(self, exc) -> None:
            self._cancel_request_timer()
            super().connection_lost(exc)

        # The head's bound, two ways: the bytes received while it is unfinished (a head that
        # never ends, however it is cut into packets), and its request line and headers as
        # llhttp hands them over (a head that arrives whole in one packet).
        def data_received(self, data: bytes) -> None:
            if self._in_head:
                self._head_bytes += len(data)
            super().data_received(data)
            if self._in_head and self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
                self._head_too_large = True
                self.send_400_response("")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._receiving = self._in_head = True
            self._parsed_head_bytes = 0

        def on_url(self, url: bytes) -> None:
            super().on_url(url)
            self._count_head(len(url))

        def on_header(self, name: bytes, value: bytes) -> None:
            super().on_header(name, value)
            self._count_head(len(name) + len(value) + 4)     # ": " and CRLF

        def _count_head(self, size: int) -> None:
            self._parsed_head_bytes += size
            if self._parsed_head_bytes > MAX_HEAD_BYTES:
                self._head_too_large = True
                raise ValueError("request head too large")   # llhttp stops; uvicorn answers 400

        def send_400_response(self, msg: str) -> None:
            super().send_400_response("Request head too large." if self._head_too_large else msg)

        def on_headers_complete(self) -> None:
            self._in_head, self._head_bytes = False, 0
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._receiving = False
            self._cancel_request_timer()          # the request is in: the app's time now

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._receiving = self._in_head = True
                self._arm_request_timer()            # the next request has the same time

        def waiting_since(self) -> float | None:
            """When this connection began waiting for a request; None while one is answered."""
            if self.transport is None or self.transport.is_closing() or not self._receiving:
                return None
            if self.cycle is not None and not self.cycle.response_complete:
                return None
            return self._waiting_since

        def _arm_request_timer(self) -> None:
            self._cancel_request_timer()
            self._waiting_since = time.monotonic()
            self._request_timer = self.loop.call_later(request_timeout, self._request_timed_out)

        def _cancel_request_timer(self) -> None:
            if getattr(self, "_request_timer", None) is not None:
                self._request_timer.cancel()
                self._request_timer = None

        def _request_timed_out(self) -> None:
            self._request_timer = None
            if self.waiting_since() is not None:
                self.transport.close()

        def _make_room(self) -> None:
            waiting = [(since, other) for other in self.connections
                       if (since := getattr(other, "waiting_since", lambda: None)()) is not None]
            if waiting:
                min(waiting, key=lambda pair: pair[0])[1].transport.close()
            else:
                self.transport.close()                # every other connection is being answered

    return GuardedHttpTools


class AcceptErrorLog:
    """A loop exception handler that logs asyncio's accept() failures once a minute, with a count."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.suppressed = 0
        self.last = None

    def __call__(self, loop, context) -> None:
        if not str(context.get("message", "")).startswith("socket.accept() out of system resource"):
            loop.default_exception_handler(context)
            return
        now = self.clock()
        if self.last is not None and now - self.last < ACCEPT_LOG_EVERY:
            self.suppressed += 1
            return
        error = context.get("exception")
        logs.get().warning("web server out of file descriptors: connections wait in the backlog",
                           error=str(error) if error else None, same_errors_since_last=self.suppressed)
        self.last, self.suppressed = now, 0
