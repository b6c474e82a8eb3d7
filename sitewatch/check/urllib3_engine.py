"""The urllib3 engine: one check on a thread, in pure Python.

Why it is built the way it is:

* A fresh connection per hop (no pooling): DNS, TCP and TLS are part of what
  "available" means, so each check pays for them like a first-time visitor.
* One total deadline per check, enforced by a watchdog thread that cuts the
  socket of an overdue check (deadline.py). DNS lookups run in helper threads
  because getaddrinfo() cannot be interrupted at all (resolve.py); a name's
  addresses are raced Happy Eyeballs style (connect.py). TLS contexts and
  certificate expiry live in tls.py.
* Bodies are read in chunks and decoded by body.py, capped after decompression
  and before it, so an endless body, a gzip bomb or a deflate stream that never
  yields output costs at most `max_body_bytes` of memory.
* A failure of the monitor itself (out of descriptors, threads, memory) is
  error_kind "monitor", never blamed on the site.
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
import time

import urllib3

from sitewatch.redact import redact_url

from . import tls
from .body import BadEncoding, BodyTooLarge, read_body
from .connect import connect, interleave
from .deadline import WATCHDOG, Deadline
from .engine import (
    CONNECTING,
    READING,
    RESOLVING,
    TLS_HANDSHAKE,
    WAITING,
    Failure,
    Request,
    Response,
    Timings,
    checked_version,
    failed,
    monitor_failure,
    no_address,
    request_headers,
    url_secrets,
)
from .redirects import REDIRECT_STATUSES, Hops
from .resolve import resolve

MAX_INTERIM_RESPONSES = 32  # 1xx responses skipped before the final one
_FAMILIES = {4: socket.AF_INET, 6: socket.AF_INET6}


def _looks_like_url(value) -> bool:
    return isinstance(value, str) and "://" in value


class _RedactLoggedUrls(logging.Filter):
    """urllib3 logs the request URL, query string included, when a server sends
    malformed headers ("Failed to parse headers (url=...)"); redact it before any
    handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_url(arg) if _looks_like_url(arg) else arg for arg in record.args)
        return True


logging.getLogger("urllib3.connection").addFilter(_RedactLoggedUrls())


# --------------------------------------------------------------------------- connections


class _DeadlineConnectionMixin:
    """Replace urllib3's DNS + TCP connect with one that obeys the check's deadline.

    Overriding `_new_conn` is how urllib3's own SOCKS support plugs in its sockets.
    The TLS handshake that follows (HTTPS) is bounded by the socket timeout we
    leave on the socket: CPython applies it to the whole handshake, not per read.
    """

    def __init__(self, host: str, port: int, *, fetch: _Fetch, **kwargs) -> None:
        super().__init__(host, port, **kwargs)
        self._fetch = fetch
        self._fetch_host = host  # as given (urllib3's `host` strips a trailing dot)

    def _new_conn(self) -> socket.socket:
        return self._fetch.open_socket(self._fetch_host, self.port, self.socket_options)


class _FinalResponse(http.client.HTTPResponse):
    """http.client skips only `100 Continue`; skip every interim 1xx response
    (`103 Early Hints`, `102 Processing`) so the final one is judged. 101 is a
    final answer (we never ask to switch protocols)."""

    def _read_status(self):
        for _ in range(MAX_INTERIM_RESPONSES):
            version, status, reason = super()._read_status()
            if not 100 <= status < 200 or status == 101:
                return version, status, reason
            http.client._read_headers(self.fp)  # bounded like any header block
        raise http.client.HTTPException(f"more than {MAX_INTERIM_RESPONSES} interim 1xx responses")


class _HTTPConnection(_DeadlineConnectionMixin, urllib3.connection.HTTPConnection):
    response_class = _FinalResponse


class _HTTPSConnection(_DeadlineConnectionMixin, urllib3.connection.HTTPSConnection):
    response_class = _FinalResponse


# --------------------------------------------------------------------------- one fetch



def _describe(exc: BaseException) -> str:
    """A short readable account of a protocol-level exception."""
    # urllib3 wraps the http.client error it caught as the second argument.
    if isinstance(exc, urllib3.exceptions.ProtocolError) and len(exc.args) > 1:
        if isinstance(exc.args[1], BaseException):
            exc = exc.args[1]
    if isinstance(exc, http.client.RemoteDisconnected):
        return "server closed the connection without a response"
    if isinstance(exc, http.client.BadStatusLine):
        return f"not an HTTP response (got {repr(exc.line)})"
    if isinstance(exc, http.client.IncompleteRead):  # urllib3's has a count, not the bytes
        got = exc.partial if isinstance(exc.partial, int) else len(exc.partial)
        more = f", {exc.expected} more expected" if exc.expected is not None else ""
        return f"connection closed before the end of the body ({got} bytes read{more})"
    if isinstance(exc, urllib3.exceptions.DecodeError):
        return "cannot decode the body (bad Content-Encoding data)"
    if isinstance(exc, ConnectionError):
        return f"connection lost ({type(exc).__name__})"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Fetch:
    """The state of one fetch in progress: one object per fetch() call, one thread."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.deadline = Deadline(request.timeout)
        self.stage = RESOLVING
        self.https = False
        self.status: int | None = None
        self.headers: tuple[tuple[str, str], ...] = ()
        self.cert_days_left: int | None = None
        self.hops = Hops(request)
        self._peer: tuple | None = None  # the getaddrinfo() entry of the last connection
        self._marks: dict[str, float] = {}  # phase -> monotonic end, for the current hop
        self.secrets: set[str] = set(request.secrets)  # scrubbed from the error message

    def run(self) -> Response:
        try:
            body = self._follow_redirects()
        except Failure as exc:
            return failed(exc.kind, exc.message, self.secrets, status=self.status, redirects=self.hops.redirects,
                          cert_days_left=self.cert_days_left, timings=self._timings())
        return Response(status=self.status, headers=self.headers, body=None if body is None else bytes(body),
                        redirects=self.hops.redirects, cert_days_left=self.cert_days_left,
                        response_time_ms=(time.monotonic() - self.deadline.start) * 1000.0,
                        timings=self._timings(), error_kind=None, error=None)

    def _timings(self) -> Timings:
        """The final hop's phases, each as its own duration (ms)."""
        marks, values = self._marks, {}
        last = marks.get("start")
        for phase in ("dns", "connect", "tls", "first_byte"):
            if last is not None and phase in marks:
                values[f"{phase}_ms"] = (marks[phase] - last) * 1000.0
                last = marks[phase]
        return Timings(**values)

    def _mark(self, phase: str) -> None:
        self._marks[phase] = time.monotonic()

    def _follow_redirects(self) -> bytearray | None:
        """Fetch the request's URL, following redirects; returns the final body (None for HEAD)."""
        while True:
            location, body = self._fetch(self.hops.url)
            if location is None:
                return body
            self.hops.follow(self.status, location)

    # ---- one hop

    def _fetch(self, url: str) -> tuple[str | None, bytearray | None]:
        """One request on a fresh connection; returns (redirect Location or None, body or None)."""
        hops = self.hops
        self.secrets |= url_secrets(url)
        parts = hops.parse(url)

        self.https = parts.scheme == "https"
        host = parts.host.strip("[]")  # IPv6 literals come bracketed
        merged = request_headers(parts.auth, hops.headers)
        headers = dict(merged.values())
        self._marks = {"start": time.monotonic()}

        if self.https:
            conn = self._https_connection(host, 443 if parts.port is None else parts.port)
        else:
            conn = _HTTPConnection(host, 80 if parts.port is None else parts.port, fetch=self)
        response = None
        try:
            self.stage = RESOLVING
            conn.connect()
            self._watch(conn.sock)  # the TLS wrapper replaced the raw socket
            if self.https:
                self._mark("tls")
                self._note_days_left(tls.days_left(conn.sock))

            self.stage = WAITING
            conn.timeout = self.deadline.left()  # getresponse() applies it to the socket
            conn.request(hops.method, parts.request_uri, body=hops.body, headers=headers, preload_content=False)
            response = conn.getresponse()
            self._mark("first_byte")
            self.status = response.status
            self.headers = tuple((name.lower(), value) for name, value in response.headers.iteritems())

            location = response.headers.get("Location") or None
            if response.status not in REDIRECT_STATUSES:
                location = None  # a Location on a 200 or 201 is no redirect
            content = None
            if location is None and hops.method != "HEAD":
                self.stage = READING
                content = self._read_body(response)
            # When the watchdog cut the socket, http.client may have taken the EOF
            # for the end of the headers or of the body: what we have is truncated.
            if self.deadline.passed():
                raise TimeoutError("total deadline passed")
            return location, content
        except Failure:
            raise
        except Exception as exc:
            if isinstance(exc, ssl.SSLCertVerificationError):
                self._note_days_left(self._days_left_unverified(host))
            raise self._classify(exc, host, conn.port) from None
        finally:
            # Stop watching before closing: once closed, the fd number may be reused
            # by another check's socket.
            self._watch(None)
            if response is not None:
                response.close()  # it holds the socket (http.client's makefile)
            conn.close()

    def _https_connection(self, host: str, port: int) -> _HTTPSConnection:
        request = self.request
        try:
            if request.client_cert:
                context = tls.client_context(request.verify_tls, request.client_cert, request.client_key)
            else:
                context = tls.ssl_context(request.verify_tls)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise Failure("tls", f"cannot load the client certificate: {_describe(exc)}") from None
        return _HTTPSConnection(
            host, port, fetch=self,
            cert_reqs="CERT_REQUIRED" if request.verify_tls else "CERT_NONE",
            assert_hostname=None if request.verify_tls else False,
            ssl_context=context,
        )

    def _note_days_left(self, days: int | None) -> None:
        # Several hops may be https: keep the certificate that expires first.
        if days is not None and (self.cert_days_left is None or days < self.cert_days_left):
            self.cert_days_left = days

    def _days_left_unverified(self, host: str) -> int | None:
        """Days left on a certificate that failed verification (an expired one above all).

        The verifying handshake is aborted before the certificate can be read, and
        Python has no verify callback, so shake hands once more with the same
        address without verifying, within the same deadline, only to read it.
        """
        if self._peer is None:
            return None
        sock = None
        try:
            sock = connect([self._peer], None, self.deadline, self.request.source_address)
            sock.settimeout(self.deadline.left())
            with tls.ssl_context(False).wrap_socket(sock, server_hostname=host) as tls_sock:
                return tls.days_left(tls_sock)
        except (OSError, ValueError):  # ssl.SSLError is an OSError
            return None  # the verification error is what gets reported
        finally:
            if sock is not None:
                sock.close()

    def open_socket(self, host: str, port: int, socket_options) -> socket.socket:
        """DNS lookup and TCP connect within the deadline (called by the connection)."""
        self.stage = RESOLVING
        # A source address narrows the families, as ip-version does (and must agree with it).
        version = checked_version(self.request) if self.request.source_address else self.request.ip_version
        addresses = resolve(host, port, self.deadline)
        family = _FAMILIES.get(version)
        if family is not None:
            addresses = [address for address in addresses if address[0] == family]
            if not addresses:
                raise no_address(host, self.request, version)
        self._mark("dns")
        self.stage = CONNECTING
        sock = connect(interleave(addresses), socket_options, self.deadline, self.request.source_address)
        try:
            peer = sock.getpeername()
            # Left for the TLS handshake, which CPython bounds as a whole.
            sock.settimeout(self.deadline.left())
        except OSError:  # TimeoutError, or the peer is already gone
            sock.close()  # not handed to urllib3 yet: nobody else would
            raise
        self._mark("connect")
        self._peer = (sock.family, sock.type, sock.proto, "", peer)
        self._watch(sock)
        self.stage = TLS_HANDSHAKE if self.https else WAITING
        return sock

    def _watch(self, sock) -> None:
        WATCHDOG.watch(self.deadline, sock)

    def _read_body(self, response) -> bytearray:
        """Read the decoded body, failing as soon as it exceeds max_body_bytes."""
        try:
            return read_body(response, self.request.max_body_bytes)
        except BodyTooLarge as exc:
            raise Failure("body_too_large", str(exc)) from None
        except BadEncoding as exc:
            if self.deadline.passed():  # the watchdog's cut looks like an early end
                raise TimeoutError("total deadline passed") from None
            raise Failure("protocol", str(exc)) from None

    def _classify(self, exc: BaseException, host: str, port: int) -> Failure:
        """Turn an exception from one hop into a Failure, by what the fetch was doing."""
        exhausted = monitor_failure(exc)
        if exhausted:  # before anything else: it is never the site's doing
            return Failure("monitor", f"monitor failure while {self.stage}: {exhausted}; the site was not checked")
        timeouts = (TimeoutError, urllib3.exceptions.TimeoutError)
        if self.deadline.passed() or isinstance(exc, timeouts):
            seconds = float(self.deadline.seconds)
            return Failure("timeout", f"timed out after {seconds} s (total deadline) while {self.stage}")
        if self.stage == RESOLVING:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else _describe(exc)
            return Failure("dns", f"cannot resolve {host}: {reason}")
        if self.stage == CONNECTING:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else _describe(exc)
            return Failure("connect", f"cannot connect to {host} port {port}: {reason}")
        if self.stage == TLS_HANDSHAKE or isinstance(exc, (ssl.SSLError, urllib3.exceptions.SSLError)):
            if isinstance(exc, ssl.SSLCertVerificationError):
                reason = f"certificate verify failed: {exc.verify_message}"
            else:
                reason = _describe(exc)
            return Failure("tls", f"TLS with {host} failed while {self.stage}: {reason}")
        return Failure("protocol", f"bad HTTP response while {self.stage}: {_describe(exc)}")


class Urllib3Engine:
    """One fetch per call, on the calling thread (the consumer runs many threads)."""

    name = "urllib3"

    def fetch(self, request: Request) -> Response:
        fetch = None
        try:
            fetch = _Fetch(request)
            WATCHDOG.add(fetch.deadline)
            return fetch.run()
        except Exception as exc:  # a bug of ours or a library surprise: report it, never crash the worker
            exhausted = monitor_failure(exc)
            if exhausted:  # e.g. the watchdog thread could not start
                kind, error = "monitor", f"monitor failure: {exhausted}; the site was not checked"
            else:  # the class name only: str(exc) may hold secrets
                kind, error = "protocol", f"unexpected error: {type(exc).__name__}"
            return failed(kind, error, (), status=fetch.status if fetch else None,
                          cert_days_left=fetch.cert_days_left if fetch else None)
        finally:
            if fetch is not None:
                WATCHDOG.remove(fetch.deadline)


URLLIB3 = Urllib3Engine()
