"""One availability check of one URL: the HTTP side of sitewatch.

The probe knows HTTP, not the database: `check(Target) -> Outcome` never raises,
and every failure is classified into a short `error_kind` plus a readable,
redacted `error` (see DESIGN.md section 4, "One check").

Why it is built the way it is:

* A fresh connection per check (no pooling): DNS, TCP and TLS are part of what
  "available" means, so each check pays for them like a first-time visitor.
* One total deadline per check. Socket timeouts alone are per recv() call and
  http.client reads a header block with many small recv() calls, so a server
  dribbling one byte per second would never trip them. A single watchdog thread
  per process shuts down the socket of any check whose deadline has passed; the
  blocked recv() then returns and the check reports `timeout`. DNS lookups run in
  helper threads (reused) because getaddrinfo() cannot be interrupted at all.
* Bodies are read in chunks and capped after decompression, so an endless body or
  a gzip bomb costs at most `max_body_bytes` of memory.
* User regexes run on google-re2 (linear time), never on Python's `re`.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import heapq
import http.client
import ipaddress
import itertools
import logging
import os
import queue
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urljoin

import re2
import urllib3
from urllib3.util import make_headers, parse_url
from urllib3.util.ssl_ import create_urllib3_context

import sitewatch
from sitewatch.redact import redact_url, scrub
from sitewatch.urlspec import compile_regex, parse_expected_status

USER_AGENT = f"sitewatch/{sitewatch.__version__}"

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
BODY_CHUNK_BYTES = 64 * 1024
# Cap on the length of any text taken from an exception or a server reply.
MAX_DETAIL_CHARS = 200


@dataclass(frozen=True)
class Target:
    """What to check and how. Built by the caller from a `url` row."""

    url: str
    regex: str | None = None
    timeout: float = 10.0  # ONE total deadline: DNS + connect + TLS + headers + body, all redirect hops
    method: str = "GET"  # GET or HEAD
    expected_status: tuple[tuple[int, int], ...] = ((200, 399),)  # inclusive ranges
    max_redirects: int = 5
    verify_tls: bool = True
    max_body_bytes: int = 1_048_576  # counted after decompression


@functools.lru_cache(maxsize=1024)
def _expected_ranges(text: str) -> tuple[tuple[int, int], ...]:
    return parse_expected_status(text)


def target_for(settings, max_body_bytes: int) -> Target:
    """The Target for a URL's stored settings (a `url` row, a claimed task, or UrlEntry.as_row())."""
    return Target(url=settings["url"], regex=settings["regex"], timeout=settings["timeout"],
                  method=settings["method"], expected_status=_expected_ranges(settings["expected_status"]),
                  max_redirects=settings["max_redirects"], verify_tls=settings["verify_tls"],
                  max_body_bytes=max_body_bytes)


@dataclass(frozen=True)
class Outcome:
    """The result of one check, shaped like a `task_result` row."""

    started_at: datetime.datetime  # wall clock (UTC) when the check started
    response_time_ms: float | None  # start to end of the final body read; None unless fully read
    status_code: int | None  # final status (the last one received when redirects fail)
    regex_matched: bool | None  # None without a regex or when no complete body was read
    ok: bool
    error_kind: str | None  # dns, connect, timeout, tls, redirects, body_too_large, protocol, status, regex
    error: str | None  # human-readable, secrets redacted
    cert_days_left: int | None  # smallest days-until-notAfter of the certificates seen (https)


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


# --------------------------------------------------------------------------- regexes


def _regex_matches(pattern: str, body: bytes) -> bool:
    # re2 on bytes works in UTF-8 mode where `.` does not match an invalid byte, so
    # "caf.*text" would miss a Latin-1 body. Decoding with replacement keeps every
    # byte matchable (as U+FFFD) and gives Unicode semantics for UTF-8 bodies.
    return compile_regex(pattern).search(body.decode("utf-8", errors="replace")) is not None


# --------------------------------------------------------------------------- deadline


class _Deadline:
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


class _Watchdog:
    """One daemon thread per process that cuts the socket of every overdue check.

    Started lazily on the first check, so nothing runs before a worker forks;
    reset in a forked child, where the parent's thread does not exist.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Deadline]] = []
        self._seq = itertools.count()  # tie-breaker: deadlines are not orderable
        self._thread: threading.Thread | None = None

    def add(self, deadline: _Deadline) -> None:
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

    def watch(self, deadline: _Deadline, sock: socket.socket | None) -> None:
        """Make `sock` the one to cut for `deadline` (None before closing it)."""
        with self._cond:
            deadline.sock = sock
            if sock is not None and deadline.expired:
                _cut(sock)

    def remove(self, deadline: _Deadline) -> None:
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


_WATCHDOG = _Watchdog()
os.register_at_fork(after_in_child=_WATCHDOG._reset)


class _Resolver:
    """getaddrinfo() on reusable daemon threads, each lookup bounded by its check's deadline.

    getaddrinfo() blocks in C and cannot be interrupted, so it runs on another thread
    and the caller stops waiting at its deadline; the thread lingers until the system
    resolver gives up. Threads are reused, because starting one costs ~90 us of CPU,
    far more than a cached lookup; a new one starts whenever none is idle, so a hung
    lookup never delays another.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = 0  # threads waiting for a job and not yet promised to one

    def lookup(self, host: str, port: int, timeout: float) -> list:
        done = threading.Event()
        box: list = []
        with self._lock:
            if self._idle:
                self._idle -= 1
            else:
                threading.Thread(target=self._serve, name="sitewatch-dns", daemon=True).start()
        self._jobs.put((host, port, done, box))
        if not done.wait(timeout):
            raise TimeoutError("DNS lookup timed out")
        if isinstance(box[0], Exception):
            raise box[0]
        return box[0]

    def _serve(self) -> None:
        while True:
            host, port, done, box = self._jobs.get()
            try:
                box.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
            except Exception as exc:
                box.append(exc)
            done.set()
            with self._lock:
                self._idle += 1


_RESOLVER = _Resolver()
os.register_at_fork(after_in_child=_RESOLVER._reset)


def _resolve(host: str, port: int, deadline: _Deadline) -> list:
    """getaddrinfo() bounded by the deadline (see _Resolver)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:  # an address literal needs no lookup
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    return _RESOLVER.lookup(host, port, deadline.left())


# --------------------------------------------------------------------------- connections


class _DeadlineConnectionMixin:
    """Replace urllib3's DNS + TCP connect with one that obeys the check's deadline.

    Overriding `_new_conn` is how urllib3's own SOCKS support plugs in its sockets.
    The TLS handshake that follows (HTTPS) is bounded by the socket timeout we
    leave on the socket: CPython applies it to the whole handshake, not per read.
    """

    def __init__(self, host: str, port: int, *, probe: _Check, **kwargs) -> None:
        super().__init__(host, port, **kwargs)
        self._probe = probe
        self._probe_host = host  # as given (urllib3's `host` strips a trailing dot)

    def _new_conn(self) -> socket.socket:
        return self._probe.open_socket(self._probe_host, self.port, self.socket_options)


class _HTTPConnection(_DeadlineConnectionMixin, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_DeadlineConnectionMixin, urllib3.connection.HTTPSConnection):
    pass


@functools.lru_cache(maxsize=2)
def _ssl_context(verify: bool) -> ssl.SSLContext:
    # Building a context and loading the system CAs costs ~15 ms of CPU, far too
    # much per check; one shared context per mode is safe (wrap_socket is thread-safe).
    context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED if verify else ssl.CERT_NONE)
    if verify:
        context.load_default_certs()
    return context


def _days_left(sock) -> int | None:
    not_after = (sock.getpeercert() or {}).get("notAfter")
    if not_after:
        expires = ssl.cert_time_to_seconds(not_after)
    else:
        # getpeercert() is {} when the certificate was not verified (verify_tls=False):
        # read the expiry from the raw certificate instead, so it is reported either way.
        expires = _der_not_after(sock.getpeercert(binary_form=True) or b"")
        if expires is None:
            return None
    return int((expires - time.time()) // 86400)


def _der_element(data: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER element at `at`."""
    tag, length = data[at], data[at + 1]
    at += 2
    if length & 0x80:  # long form: the next (length & 0x7f) bytes hold the length
        count = length & 0x7F
        length = int.from_bytes(data[at:at + count], "big")
        at += count
    return tag, at, at + length


def _der_not_after(cert: bytes) -> float | None:
    """notAfter (epoch seconds) of a DER X.509 certificate; None if it cannot be read.

    Certificate = SEQUENCE { tbsCertificate = SEQUENCE { [0] version OPTIONAL, serial,
    signature, issuer, validity = SEQUENCE { notBefore, notAfter }, ... }, ... }.
    """
    try:
        _, tbs, _ = _der_element(cert, 0)
        _, at, _ = _der_element(cert, tbs)                  # into tbsCertificate
        tag, _, end = _der_element(cert, at)
        if tag == 0xA0:                                     # explicit version: skip it
            at = end
        for _ in range(3):                                  # serial, signature, issuer
            at = _der_element(cert, at)[2]
        _, validity, _ = _der_element(cert, at)
        not_before_end = _der_element(cert, validity)[2]
        tag, start, end = _der_element(cert, not_before_end)
        text = cert[start:end].decode("ascii")
        if tag == 0x17:                                     # UTCTime: YYMMDDHHMMSSZ
            year = int(text[:2])
            text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
        elif tag != 0x18:                                   # not GeneralizedTime either
            return None
        moment = datetime.datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
        return moment.timestamp()
    except (IndexError, ValueError, UnicodeDecodeError):
        return None


# --------------------------------------------------------------------------- the check

# What the check was doing; used in messages and to classify errors.
_RESOLVING = "resolving the host name"
_CONNECTING = "connecting"
_TLS = "doing the TLS handshake"
_WAITING = "waiting for the response"
_READING = "reading the body"


class _Failure(Exception):
    """A classified failure: an error_kind and a readable message."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def _shorten(text: str) -> str:
    return text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 3] + "..."


def _describe(exc: BaseException) -> str:
    """A short readable account of a protocol-level exception."""
    # urllib3 wraps the http.client error it caught as the second argument.
    if isinstance(exc, urllib3.exceptions.ProtocolError) and len(exc.args) > 1:
        if isinstance(exc.args[1], BaseException):
            exc = exc.args[1]
    if isinstance(exc, http.client.RemoteDisconnected):
        return "server closed the connection without a response"
    if isinstance(exc, http.client.BadStatusLine):
        return f"not an HTTP response (got {_shorten(repr(exc.line))})"
    if isinstance(exc, http.client.IncompleteRead):  # urllib3's has a count, not the bytes
        got = exc.partial if isinstance(exc.partial, int) else len(exc.partial)
        more = f", {exc.expected} more expected" if exc.expected is not None else ""
        return f"connection closed before the end of the body ({got} bytes read{more})"
    if isinstance(exc, urllib3.exceptions.DecodeError):
        return "cannot decode the body (bad Content-Encoding data)"
    if isinstance(exc, ConnectionError):
        return f"connection lost ({type(exc).__name__})"
    text = str(exc)
    return _shorten(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def _format_ranges(ranges: tuple[tuple[int, int], ...]) -> str:
    return ", ".join(str(low) if low == high else f"{low}-{high}" for low, high in ranges)


class _Check:
    """The state of one check in progress: one object per check() call, one thread."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.deadline = _Deadline(target.timeout)
        self.stage = _RESOLVING
        self.https = False
        self.status_code: int | None = None
        self.cert_days_left: int | None = None
        self.secrets: set[str] = set()  # scrubbed from the final error message

    # ---- the whole check

    def run(self, started_at: datetime.datetime) -> Outcome:
        body = None
        response_time_ms = None
        try:
            body = self._follow_redirects()
            response_time_ms = (time.monotonic() - self.deadline.start) * 1000.0
            failure = None
        except _Failure as exc:
            failure = exc

        regex_matched = None
        if failure is None:
            failure = self._judge_status()
            regex_failure, regex_matched = self._judge_regex(body)
            failure = failure or regex_failure

        return Outcome(
            started_at=started_at,
            response_time_ms=response_time_ms,
            status_code=self.status_code,
            regex_matched=regex_matched,
            ok=failure is None,
            error_kind=failure.kind if failure else None,
            error=self._redacted(failure.message) if failure else None,
            cert_days_left=self.cert_days_left,
        )

    def _judge_status(self) -> _Failure | None:
        expected = self.target.expected_status
        if any(low <= self.status_code <= high for low, high in expected):
            return None
        return _Failure("status", f"HTTP {self.status_code}, expected {_format_ranges(expected)}")

    def _judge_regex(self, body: bytes | None) -> tuple[_Failure | None, bool | None]:
        pattern = self.target.regex
        if pattern is None:
            return None, None
        shown = _shorten(repr(pattern))
        if body is None:
            reason = f"a {self.target.method} response has no body"
            return _Failure("regex", f"regex {shown} not checked: {reason}"), None
        try:
            matched = _regex_matches(pattern, body)
        except re2.error as exc:
            reason = exc.args[0] if exc.args else exc
            if isinstance(reason, bytes):  # re2 reports its parse errors as bytes
                reason = reason.decode(errors="replace")
            return _Failure("regex", f"invalid regex {shown}: {reason}"), None
        if matched:
            return None, True
        return _Failure("regex", f"regex {shown} not found in body ({len(body)} bytes)"), False

    def _redacted(self, message: str) -> str:
        # Longest first, so a whole query string goes before the values inside it.
        return scrub(message, sorted(self.secrets, key=len, reverse=True))

    def _remember_secrets(self, url) -> None:
        """Note the secrets a URL carries, in case a server echoes them back."""
        if url.auth:
            self.secrets.add(url.auth)
            self.secrets.add(unquote(url.auth))
            _, _, password = unquote(url.auth).partition(":")
            self.secrets.add(password)
        if url.query:
            self.secrets.add(url.query)
            # Short values ("page=1") would mangle every message; they only appear
            # inside URLs, and URLs in messages always go through redact_url.
            self.secrets.update(value for _, value in parse_qsl(url.query) if len(value) >= 4)
        self.secrets.discard("")

    # ---- redirects

    def _follow_redirects(self) -> bytes | None:
        """Fetch target.url, following redirects; returns the final body (None for HEAD)."""
        url = self.target.url
        visited = {url}
        redirects = 0
        while True:
            # A bad first URL is a configuration problem ("protocol"); a bad Location
            # is the site's doing ("redirects").
            location, body = self._fetch(url, bad_url_kind="protocol" if redirects == 0 else "redirects")
            if location is None:
                return body
            next_url = urljoin(url, location)
            if redirects >= self.target.max_redirects:
                limit = self.target.max_redirects
                raise _Failure("redirects", f"more than {limit} redirects (last: {redact_url(next_url)})")
            if next_url in visited:
                message = f"redirect loop: {redact_url(url)} leads back to {redact_url(next_url)}"
                raise _Failure("redirects", message)
            visited.add(next_url)
            url = next_url
            redirects += 1

    # ---- one hop

    def _fetch(self, url: str, bad_url_kind: str) -> tuple[str | None, bytes | None]:
        """One request on a fresh connection; returns (redirect Location or None, body or None)."""
        try:
            parts = parse_url(url)
        except urllib3.exceptions.LocationParseError:
            raise _Failure(bad_url_kind, f"invalid URL {redact_url(url)}") from None
        self._remember_secrets(parts)
        if parts.scheme not in ("http", "https"):
            raise _Failure(bad_url_kind, f"unsupported URL scheme {parts.scheme!r} in {redact_url(url)}")
        if not parts.host:
            raise _Failure(bad_url_kind, f"no host in URL {redact_url(url)}")

        self.https = parts.scheme == "https"
        host = parts.host.strip("[]")  # IPv6 literals come bracketed
        headers = make_headers(
            accept_encoding=True,  # every encoding this urllib3 can decode
            user_agent=USER_AGENT,
            basic_auth=unquote(parts.auth) if parts.auth else None,
        )
        headers["Connection"] = "close"

        if self.https:
            verify = self.target.verify_tls
            conn = _HTTPSConnection(
                host,
                parts.port or 443,
                probe=self,
                cert_reqs="CERT_REQUIRED" if verify else "CERT_NONE",
                assert_hostname=None if verify else False,
                ssl_context=_ssl_context(verify),
            )
        else:
            conn = _HTTPConnection(host, parts.port or 80, probe=self)
        response = None
        try:
            self.stage = _RESOLVING
            conn.connect()
            self._watch(conn.sock)  # the TLS wrapper replaced the raw socket
            if self.https:
                # Several hops may be https: keep the certificate that expires first.
                days = _days_left(conn.sock)
                if days is not None and (self.cert_days_left is None or days < self.cert_days_left):
                    self.cert_days_left = days

            self.stage = _WAITING
            conn.timeout = self.deadline.left()  # getresponse() applies it to the socket
            conn.request(self.target.method.upper(), parts.request_uri, headers=headers, preload_content=False)
            response = conn.getresponse()
            self.status_code = response.status

            location = response.headers.get("Location") or None
            if response.status not in REDIRECT_STATUSES:
                location = None  # a Location on a 200 or 201 is no redirect
            body = None
            if location is None and self.target.method.upper() != "HEAD":
                self.stage = _READING
                body = self._read_body(response)
            # When the watchdog cut the socket, http.client may have taken the EOF
            # for the end of the headers or of the body: what we have is truncated.
            if self.deadline.passed():
                raise TimeoutError("total deadline passed")
            return location, body
        except _Failure:
            raise
        except Exception as exc:
            raise self._classify(exc, host, conn.port) from None
        finally:
            # Stop watching before closing: once closed, the fd number may be reused
            # by another check's socket.
            self._watch(None)
            if response is not None:
                response.close()  # it holds the socket (http.client's makefile)
            conn.close()

    def open_socket(self, host: str, port: int, socket_options) -> socket.socket:
        """DNS lookup and TCP connect within the deadline (called by the connection)."""
        self.stage = _RESOLVING
        addresses = _resolve(host, port, self.deadline)
        self.stage = _CONNECTING
        error: OSError | None = None
        for family, type_, proto, _, address in addresses:
            sock = socket.socket(family, type_, proto)
            self._watch(sock)
            try:
                for option in socket_options or ():
                    sock.setsockopt(*option)
                sock.settimeout(self.deadline.left())
                sock.connect(address)
                # Left for the TLS handshake, which CPython bounds as a whole.
                sock.settimeout(self.deadline.left())
            except OSError as exc:
                self._watch(None)
                sock.close()
                error = exc
                if isinstance(exc, TimeoutError):
                    break  # the deadline is gone; no time for the next address
                continue
            self.stage = _TLS if self.https else _WAITING
            return sock
        raise error or OSError(f"no address for {host}")

    def _watch(self, sock) -> None:
        _WATCHDOG.watch(self.deadline, sock)

    def _read_body(self, response) -> bytes:
        """Read the decoded body, failing as soon as it exceeds max_body_bytes."""
        limit = self.target.max_body_bytes
        body = bytearray()
        while True:
            # urllib3 >= 2.6 caps the decompressed output of one read(amt) call at
            # about amt, so a gzip bomb is unpacked chunk by chunk, never at once.
            chunk = response.read(BODY_CHUNK_BYTES, decode_content=True)
            if not chunk:
                return bytes(body)
            if len(body) + len(chunk) > limit:
                raise _Failure("body_too_large", f"body exceeds {limit} bytes")
            body += chunk

    def _classify(self, exc: BaseException, host: str, port: int) -> _Failure:
        """Turn an exception from one hop into a _Failure, by what the check was doing."""
        timeouts = (TimeoutError, urllib3.exceptions.TimeoutError)
        if self.deadline.passed() or isinstance(exc, timeouts):
            seconds = float(self.deadline.seconds)
            return _Failure("timeout", f"timed out after {seconds} s (total deadline) while {self.stage}")
        if self.stage == _RESOLVING:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else _describe(exc)
            return _Failure("dns", f"cannot resolve {host}: {reason}")
        if self.stage == _CONNECTING:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else _describe(exc)
            return _Failure("connect", f"cannot connect to {host} port {port}: {reason}")
        if self.stage == _TLS or isinstance(exc, (ssl.SSLError, urllib3.exceptions.SSLError)):
            if isinstance(exc, ssl.SSLCertVerificationError):
                reason = f"certificate verify failed: {exc.verify_message}"
            else:
                reason = _describe(exc)
            return _Failure("tls", f"TLS with {host} failed while {self.stage}: {reason}")
        return _Failure("protocol", f"bad HTTP response while {self.stage}: {_describe(exc)}")


def check(target: Target) -> Outcome:
    """Check one URL. Never raises (except KeyboardInterrupt/SystemExit): every failure is classified."""
    started_at = datetime.datetime.now(datetime.timezone.utc)
    probe = None
    try:
        probe = _Check(target)
        _WATCHDOG.add(probe.deadline)
        return probe.run(started_at)
    except Exception as exc:  # a bug of ours or a library surprise: report it, never crash the worker
        return Outcome(
            started_at=started_at,
            response_time_ms=None,
            status_code=probe.status_code if probe else None,
            regex_matched=None,
            ok=False,
            error_kind="protocol",
            error=f"unexpected error: {type(exc).__name__}",  # the class name only: str(exc) may hold secrets
            cert_days_left=probe.cert_days_left if probe else None,
        )
    finally:
        if probe is not None:
            _WATCHDOG.remove(probe.deadline)


# --------------------------------------------------------------------------- output


def format_outcome(target: Target, outcome: Outcome) -> str:
    """A few human-readable lines, for `sitewatch check`."""
    lines = [
        f"URL:      {redact_url(target.url)}",
        f"Verdict:  {'UP' if outcome.ok else 'DOWN'}",
        f"Status:   {outcome.status_code if outcome.status_code is not None else '-'}",
        f"Time:     {f'{outcome.response_time_ms:.1f} ms' if outcome.response_time_ms is not None else '-'}",
    ]
    if target.regex is not None:
        shown = {True: "matched", False: "not matched", None: "not checked"}[outcome.regex_matched]
        lines.append(f"Regex:    {_shorten(repr(target.regex))} {shown}")
    if outcome.error_kind:
        lines.append(f"Error:    [{outcome.error_kind}] {outcome.error}")
    if outcome.cert_days_left is not None:
        lines.append(f"TLS cert: expires in {outcome.cert_days_left} days")
    lines.append(f"Started:  {outcome.started_at.isoformat()}")
    return "\n".join(lines)


def outcome_to_dict(outcome: Outcome) -> dict:
    """A JSON-serialisable dict (started_at as ISO 8601)."""
    data = dataclasses.asdict(outcome)
    data["started_at"] = outcome.started_at.isoformat()
    return data
