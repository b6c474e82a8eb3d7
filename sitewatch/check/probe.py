"""One availability check of one URL: the HTTP side of sitewatch.

The probe knows HTTP, not the database: `check(Target) -> Outcome` never raises,
and every failure is classified into a short `error_kind` plus a readable,
redacted `error` (see DESIGN.md section 4, "One check").

Why it is built the way it is:

* A fresh connection per check (no pooling): DNS, TCP and TLS are part of what
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
* User regexes run on google-re2 (linear time), never on Python's `re`.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import errno
import functools
import http.client
import logging
import re
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, unquote_to_bytes, urljoin, urlsplit, urlunsplit

import re2
import urllib3
from urllib3.util import make_headers, parse_url

import sitewatch
from sitewatch.redact import REDACTED, printable, redact_url, scrub
from sitewatch.urlspec import compile_regex, parse_expected_status

from . import tls
from .body import ACCEPT_ENCODING, BadEncoding, BodyTooLarge, read_body
from .connect import connect, interleave
from .deadline import WATCHDOG, Deadline
from .resolve import resolve

USER_AGENT = f"sitewatch/{sitewatch.__version__}"

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_INTERIM_RESPONSES = 32  # 1xx responses skipped before the final one
# Cap on the length of a quoted regex inside a message.
MAX_DETAIL_CHARS = 200
# Cap on every `error` (DESIGN.md: a few hundred characters, whatever the server
# sends). Applied after redaction: a cut secret would no longer match and leak.
MAX_ERROR_CHARS = 300
# Secrets shorter than this are only redacted as whole words: a password "0"
# must not turn "HTTP 401" into "HTTP 4***1".
SHORT_SECRET_CHARS = 6


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
    # dns, connect, timeout, tls, redirects, body_too_large, protocol, status, regex; or
    # monitor: the monitor itself failed (out of file descriptors, threads, memory), the site was not checked
    error_kind: str | None
    error: str | None  # human-readable, secrets redacted, printable (see __post_init__)
    cert_days_left: int | None  # smallest days-until-notAfter of the certificates seen (https)
    # ok, but a `degraded` assertion failed (DESIGN.md section 12); `error` names it
    degraded: bool = False

    def __post_init__(self) -> None:
        # Every error that is stored is made here (the consumer's `lost` ones too): it quotes
        # what a site sent, so control characters are escaped (redact.printable: no ESC for a
        # terminal, nothing an XML feed refuses) and the whole is cut to MAX_ERROR_CHARS.
        if self.error is not None:
            object.__setattr__(self, "error", _shorten(printable(self.error), MAX_ERROR_CHARS))


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


def _shorten(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _scrub(text: str, secrets) -> str:
    """Redact every secret in `text`: long ones anywhere, short ones as whole words."""
    # Longest first, so a whole query string goes before the values inside it.
    ordered = sorted(secrets, key=len, reverse=True)
    text = scrub(text, [secret for secret in ordered if len(secret) >= SHORT_SECRET_CHARS])
    for secret in ordered:
        if 0 < len(secret) < SHORT_SECRET_CHARS:
            text = re.sub(rf"(?<![0-9A-Za-z]){re.escape(secret)}(?![0-9A-Za-z])", REDACTED, text)
    return text


def _basic_auth(userinfo: str) -> str:
    """The Authorization value for a URL's (percent-encoded) userinfo.

    Percent-decoded to bytes, so a UTF-8 password is sent as UTF-8 (RFC 7617),
    never re-encoded as Latin-1; `user@host` sends `user:` (an empty password).
    """
    user, _, password = userinfo.partition(":")
    credentials = unquote_to_bytes(user) + b":" + unquote_to_bytes(password)
    return "Basic " + base64.b64encode(credentials).decode("ascii")


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


def _carry_userinfo(old_url: str, new_url: str) -> str:
    """`new_url`, with `old_url`'s userinfo when a redirect stays on the same host.

    urljoin keeps the userinfo only for relative Locations; `http://host/` ->
    `https://host/` must keep it too. Never carried to another host, nor from
    https down to http.
    """
    old, new = urlsplit(old_url), urlsplit(new_url)
    if "@" in new.netloc or "@" not in old.netloc:
        return new_url
    same_host = (old.hostname or "") == (new.hostname or "")
    if not same_host or (old.scheme == "https" and new.scheme != "https"):
        return new_url
    userinfo = old.netloc.rpartition("@")[0]
    return urlunsplit(new._replace(netloc=f"{userinfo}@{new.netloc}"))


# errno values that mean this process or machine ran out of something.
_MONITOR_ERRNOS = {
    errno.EMFILE: "out of file descriptors",
    errno.ENFILE: "the system is out of file descriptors",
    errno.ENOBUFS: "out of socket buffer space",
    errno.ENOMEM: "out of memory",
}


def _monitor_failure(exc: BaseException) -> str | None:
    """What ran out, when `exc` is a failure of the monitor itself rather than of the site.

    Such a failure must never be recorded as the site being down (DESIGN.md
    section 4): the check reports error_kind "monitor" and the consumer retries.
    """
    seen = 0
    while exc is not None and seen < 5:  # also look at what urllib3 or we wrapped
        if isinstance(exc, OSError) and exc.errno in _MONITOR_ERRNOS:
            return f"{_MONITOR_ERRNOS[exc.errno]} ({errno.errorcode[exc.errno]})"
        if isinstance(exc, socket.gaierror) and exc.errno == socket.EAI_MEMORY:
            return "out of memory (EAI_MEMORY)"
        if isinstance(exc, RuntimeError) and "can't start new thread" in str(exc):
            return "cannot start a thread (can't start new thread)"
        if isinstance(exc, MemoryError):
            return "out of memory (MemoryError)"
        wrapped = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], BaseException) else None
        exc = wrapped or exc.__cause__ or exc.__context__
        seen += 1
    return None


def _format_ranges(ranges: tuple[tuple[int, int], ...]) -> str:
    return ", ".join(str(low) if low == high else f"{low}-{high}" for low, high in ranges)


class _Check:
    """The state of one check in progress: one object per check() call, one thread."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.deadline = Deadline(target.timeout)
        self.stage = _RESOLVING
        self.https = False
        self.status_code: int | None = None
        self.cert_days_left: int | None = None
        self._peer: tuple | None = None  # the getaddrinfo() entry of the last connection
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
        """The message as stored: secrets out first, then cut to length."""
        return _shorten(_scrub(message, self.secrets), MAX_ERROR_CHARS)

    def _remember_secrets(self, url) -> None:
        """Note the secrets a URL carries, in case a server echoes them back."""
        if url.auth:
            self.secrets.add(url.auth)
            self.secrets.add(unquote(url.auth))
            _, _, password = url.auth.partition(":")
            self.secrets.update((password, unquote(password)))
            self.secrets.add(_basic_auth(url.auth).partition(" ")[2])  # an echoed Authorization header
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
            try:
                next_url = _carry_userinfo(url, urljoin(url, location))
            except ValueError:  # urljoin: "Invalid IPv6 URL", a port out of range, ...
                raise _Failure("redirects", f"invalid redirect Location {redact_url(location)}") from None
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
        if parts.port == 0:  # `parts.port or 80` would quietly check another port
            raise _Failure(bad_url_kind, f"invalid port 0 in {redact_url(url)}")

        self.https = parts.scheme == "https"
        host = parts.host.strip("[]")  # IPv6 literals come bracketed
        headers = make_headers(accept_encoding=ACCEPT_ENCODING, user_agent=USER_AGENT)  # encodings body.py decodes
        if parts.auth:  # `user@host` too; not an empty `@host`
            headers["Authorization"] = _basic_auth(parts.auth)
        headers["Connection"] = "close"

        if self.https:
            verify = self.target.verify_tls
            conn = _HTTPSConnection(
                host,
                443 if parts.port is None else parts.port,
                probe=self,
                cert_reqs="CERT_REQUIRED" if verify else "CERT_NONE",
                assert_hostname=None if verify else False,
                ssl_context=tls.ssl_context(verify),
            )
        else:
            conn = _HTTPConnection(host, 80 if parts.port is None else parts.port, probe=self)
        response = None
        try:
            self.stage = _RESOLVING
            conn.connect()
            self._watch(conn.sock)  # the TLS wrapper replaced the raw socket
            if self.https:
                self._note_days_left(tls.days_left(conn.sock))

            self.stage = _WAITING
            conn.timeout = self.deadline.left()  # getresponse() applies it to the socket
            conn.request(self.target.method.upper(), parts.request_uri, headers=headers, preload_content=False)
            response = conn.getresponse()
            self.status_code = response.status

            location = response.headers.get("Location") or None
            if response.status not in REDIRECT_STATUSES:
                location = None  # a Location on a 200 or 201 is no redirect
            content = None
            if location is None and self.target.method.upper() != "HEAD":
                self.stage = _READING
                content = self._read_body(response)
            # When the watchdog cut the socket, http.client may have taken the EOF
            # for the end of the headers or of the body: what we have is truncated.
            if self.deadline.passed():
                raise TimeoutError("total deadline passed")
            return location, content
        except _Failure:
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
            sock = connect([self._peer], None, self.deadline)
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
        self.stage = _RESOLVING
        addresses = interleave(resolve(host, port, self.deadline))
        self.stage = _CONNECTING
        sock = connect(addresses, socket_options, self.deadline)
        try:
            peer = sock.getpeername()
            # Left for the TLS handshake, which CPython bounds as a whole.
            sock.settimeout(self.deadline.left())
        except OSError:  # TimeoutError, or the peer is already gone
            sock.close()  # not handed to urllib3 yet: nobody else would
            raise
        self._peer = (sock.family, sock.type, sock.proto, "", peer)
        self._watch(sock)
        self.stage = _TLS if self.https else _WAITING
        return sock

    def _watch(self, sock) -> None:
        WATCHDOG.watch(self.deadline, sock)

    def _read_body(self, response) -> bytearray:
        """Read the decoded body, failing as soon as it exceeds max_body_bytes."""
        try:
            return read_body(response, self.target.max_body_bytes)
        except BodyTooLarge as exc:
            raise _Failure("body_too_large", str(exc)) from None
        except BadEncoding as exc:
            if self.deadline.passed():  # the watchdog's cut looks like an early end
                raise TimeoutError("total deadline passed") from None
            raise _Failure("protocol", str(exc)) from None

    def _classify(self, exc: BaseException, host: str, port: int) -> _Failure:
        """Turn an exception from one hop into a _Failure, by what the check was doing."""
        exhausted = _monitor_failure(exc)
        if exhausted:  # before anything else: it is never the site's doing
            return _Failure("monitor", f"monitor failure while {self.stage}: {exhausted}; the site was not checked")
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
        WATCHDOG.add(probe.deadline)
        return probe.run(started_at)
    except Exception as exc:  # a bug of ours or a library surprise: report it, never crash the worker
        exhausted = _monitor_failure(exc)
        if exhausted:  # e.g. the watchdog thread could not start
            kind, error = "monitor", f"monitor failure: {exhausted}; the site was not checked"
        else:  # the class name only: str(exc) may hold secrets
            kind, error = "protocol", f"unexpected error: {type(exc).__name__}"
        return Outcome(
            started_at=started_at,
            response_time_ms=None,
            status_code=probe.status_code if probe else None,
            regex_matched=None,
            ok=False,
            error_kind=kind,
            error=error,
            cert_days_left=probe.cert_days_left if probe else None,
        )
    finally:
        if probe is not None:
            WATCHDOG.remove(probe.deadline)


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
