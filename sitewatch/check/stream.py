"""A connection for the monitor kinds that speak no HTTP (tcp://, tls://): one fetch's state.

The same parts as the HTTP engines, so a tcp:// check is held to the same rules: the lookup
bounded by the deadline on resolver threads (resolve.py), Happy Eyeballs across the name's
addresses (connect.py), ONE total deadline whose watchdog cuts the socket (deadline.py), and
failures classified by what the check was doing (dns, connect, timeout, tls, protocol; the
monitor's own shortages as `monitor`), their messages redacted and cut like the engines'.
"""

from __future__ import annotations

import socket
import ssl
import time

from .address import host_port
from .connect import connect, interleave
from .deadline import WATCHDOG, Deadline
from .engine import (
    CONNECTING,
    RESOLVING,
    TLS_HANDSHAKE,
    Failure,
    Request,
    Response,
    Timings,
    checked_version,
    failed,
    monitor_failure,
    no_address,
    url_secrets,
)
from .resolve import resolve

_FAMILIES = {4: socket.AF_INET, 6: socket.AF_INET6}


class Stream:
    """One fetch in progress, on the calling thread: where it is, what it has seen, its deadline."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.deadline = Deadline(request.timeout)
        self.host, self.port = host_port(request.url)
        self.stage = RESOLVING
        self.peer: tuple | None = None      # the getaddrinfo() entry that connected
        self.cert_days_left: int | None = None
        self.secrets = url_secrets(request.url) | set(request.secrets)
        self._marks = {"start": time.monotonic()}

    @classmethod
    def run(cls, request: Request, exchange) -> Response:
        """`exchange(stream) -> Response` within the deadline; every failure becomes a Response."""
        stream = None
        try:
            stream = cls(request)
            WATCHDOG.add(stream.deadline)
            try:
                return exchange(stream)
            except Failure as exc:
                return stream.failed(exc)
            except Exception as exc:
                return stream.failed(stream.classify(exc))
        except Exception as exc:   # a bug of ours, or the watchdog could not start: never raise
            exhausted = monitor_failure(exc)
            if exhausted:
                kind, error = "monitor", f"monitor failure: {exhausted}; the site was not checked"
            else:      # the class name only: str(exc) may hold secrets
                kind, error = "protocol", f"unexpected error: {type(exc).__name__}"
            return failed(kind, error, ())
        finally:
            if stream is not None:
                WATCHDOG.remove(stream.deadline)

    def open(self) -> socket.socket:
        """Resolve and connect within the deadline; the socket is watched (cut at the deadline)."""
        self.stage = RESOLVING
        # A source address narrows the families, as ip-version does (and must agree with it).
        version = checked_version(self.request) if self.request.source_address else self.request.ip_version
        addresses = resolve(self.host, self.port, self.deadline)
        family = _FAMILIES.get(version)
        if family is not None:
            addresses = [address for address in addresses if address[0] == family]
            if not addresses:
                raise no_address(self.host, self.request, version)
        self.mark("dns")
        self.stage = CONNECTING
        sock = connect(interleave(addresses), None, self.deadline, self.request.source_address)
        try:
            self.peer = (sock.family, sock.type, sock.proto, "", sock.getpeername())
            sock.settimeout(self.deadline.left())
        except OSError:
            sock.close()
            raise
        self.mark("connect")
        self.watch(sock)
        return sock

    def watch(self, sock) -> None:
        """Make `sock` the one the watchdog cuts at the deadline (None before closing it)."""
        WATCHDOG.watch(self.deadline, sock)

    def mark(self, phase: str, at: float | None = None) -> None:
        self._marks[phase] = time.monotonic() if at is None else at

    def timings(self) -> Timings:
        """Each phase reached, as its own duration (ms), like the engines'."""
        values, last = {}, self._marks["start"]
        for phase in ("dns", "connect", "tls", "first_byte"):
            if phase in self._marks:
                values[f"{phase}_ms"] = (self._marks[phase] - last) * 1000.0
                last = self._marks[phase]
        return Timings(**values)

    def response(self, body: bytes | None = None, values: tuple = ()) -> Response:
        """The Response of a fetch that got through."""
        return Response(status=None, headers=(), body=body, redirects=0, cert_days_left=self.cert_days_left,
                        response_time_ms=(time.monotonic() - self.deadline.start) * 1000.0,
                        timings=self.timings(), error_kind=None, error=None, values=values)

    def failed(self, failure: Failure) -> Response:
        return failed(failure.kind, failure.message, self.secrets, cert_days_left=self.cert_days_left,
                      timings=self.timings())

    def classify(self, exc: BaseException) -> Failure:
        """An exception as a Failure, by what the fetch was doing (urllib3_engine's rules)."""
        exhausted = monitor_failure(exc)
        if exhausted:   # before anything else: it is never the site's doing
            return Failure("monitor", f"monitor failure while {self.stage}: {exhausted}; the site was not checked")
        if self.deadline.passed() or isinstance(exc, TimeoutError):
            return Failure("timeout", f"timed out after {self.deadline.seconds} s (total deadline) "
                                      f"while {self.stage}")
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc) or type(exc).__name__)
        if self.stage == RESOLVING:
            return Failure("dns", f"cannot resolve {self.host}: {reason}")
        if self.stage == CONNECTING:
            return Failure("connect", f"cannot connect to {self.host} port {self.port}: {reason}")
        if isinstance(exc, ssl.SSLCertVerificationError):
            return Failure("tls", f"TLS with {self.host} failed: certificate verify failed: {exc.verify_message}")
        if self.stage == TLS_HANDSHAKE or isinstance(exc, ssl.SSLError):
            return Failure("tls", f"TLS with {self.host} failed while {self.stage}: {reason}")
        return Failure("protocol", f"connection to {self.host} port {self.port} failed while {self.stage}: "
                                   f"{reason}")
