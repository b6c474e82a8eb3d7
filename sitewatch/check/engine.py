"""The engine boundary: one request specification in, one response or error out.

An engine fetches; it never judges. probe.py turns (Target, Response) into an
Outcome (status ranges, regex, assertions), so every engine is judged the same
way and a check option is written once, in the Request, then mapped per engine
(urllib3_engine.py, curl_engine.py). What every engine promises (README "One
check"): one total deadline across all hops, the decoded and raw body caps, 1xx
skipped, credentials only to the same host and never from https down to http,
secrets scrubbed from every error before it is cut, certificate days even when
verification fails, and the monitor's own failures reported as `monitor`.
"""

from __future__ import annotations

import base64
import errno
import functools
import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qsl, unquote, unquote_to_bytes, urlsplit

import sitewatch
from sitewatch.redact import REDACTED, scrub

from .body import ACCEPT_ENCODING

USER_AGENT = f"sitewatch/{sitewatch.__version__}"
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
ERROR_KINDS = ("dns", "connect", "timeout", "tls", "redirects", "body_too_large", "protocol", "monitor")
# What a fetch was doing, in the words of every engine's messages ("timed out ... while connecting").
RESOLVING = "resolving the host name"
CONNECTING = "connecting"
TLS_HANDSHAKE = "doing the TLS handshake"
WAITING = "waiting for the response"
READING = "reading the body"
# Cap on every `error` (DESIGN.md: a few hundred characters, whatever the server
# sends). Applied after redaction: a cut secret would no longer match and leak.
MAX_ERROR_CHARS = 300
# Secrets shorter than this are only redacted as whole words: a password "0"
# must not turn "HTTP 401" into "HTTP 4***1".
SHORT_SECRET_CHARS = 6


@dataclass(frozen=True)
class Request:
    """One request specification, engine-neutral."""

    url: str
    method: str = "GET"  # any of METHODS
    headers: tuple[tuple[str, str], ...] = ()  # final values (any ${VAR} already expanded by the caller)
    body: bytes | None = None
    timeout: float = 10.0  # ONE total deadline: DNS+connect+TLS+headers+body, all redirect hops
    max_redirects: int = 5
    verify_tls: bool = True
    client_cert: str | None = None  # file paths (mTLS)
    client_key: str | None = None
    ip_version: int | None = None  # 4, 6, or None = any
    source_address: str | None = None  # the host's check.source_address: the local address every connection binds to
    max_body_bytes: int = 1_048_576  # decoded cap; raw cap twice that
    secrets: frozenset[str] = frozenset()  # extra values to scrub from every error (bearer tokens...)
    expect: str | None = None  # tcp:// monitors: the RE2 that ends the read (the stored regex)


@dataclass(frozen=True)
class Timings:
    """Milliseconds from the start of the final hop's transfer to the end of each phase."""

    dns_ms: float | None = None
    connect_ms: float | None = None
    tls_ms: float | None = None
    first_byte_ms: float | None = None


@dataclass(frozen=True)
class Response:
    """What one fetch got: a response, or an error."""

    status: int | None
    headers: tuple[tuple[str, str], ...]  # the final response's headers, names lower-cased
    body: bytes | None  # decoded; None when not completely read
    redirects: int  # redirects followed
    cert_days_left: int | None
    response_time_ms: float | None  # total, start to end of the final body read
    timings: Timings
    error_kind: str | None  # None when the transport succeeded; else one of ERROR_KINDS
    error: str | None  # redacted, short
    values: tuple[tuple[str, object], ...] = ()  # a monitor kind's own subjects (rcode, answer, loss), for assertions


class Engine(Protocol):
    name: str

    def fetch(self, request: Request) -> Response: ...


# --------------------------------------------------------------------------- helpers every engine uses


class Failure(Exception):
    """A classified transport failure: an error_kind and a readable (unredacted) message."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def basic_auth(userinfo: str) -> str:
    """The Authorization value for a URL's (percent-encoded) userinfo.

    Percent-decoded to bytes, so a UTF-8 password is sent as UTF-8 (RFC 7617),
    never re-encoded as Latin-1; `user@host` sends `user:` (an empty password).
    """
    user, _, password = userinfo.partition(":")
    credentials = unquote_to_bytes(user) + b":" + unquote_to_bytes(password)
    return "Basic " + base64.b64encode(credentials).decode("ascii")


def request_headers(userinfo: str | None, headers) -> dict[str, tuple[str, str]]:
    """The headers every engine sends, by lower-cased name: ours, then the request's own (which win).

    Accept-Encoding offers only what body.py decodes; userinfo (`user@host` too, not
    an empty `@host`) becomes UTF-8 Basic auth; one connection per check.
    """
    ours = [("User-Agent", USER_AGENT), ("Accept-Encoding", ACCEPT_ENCODING)]
    if userinfo:
        ours.append(("Authorization", basic_auth(userinfo)))
    return {name.lower(): (name, value) for name, value in [*ours, *headers, ("Connection", "close")]}


def url_secrets(url: str) -> set[str]:
    """The secrets a URL carries (userinfo, query), in case a server echoes them back."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return set()
    secrets: set[str] = set()
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    if userinfo:
        secrets.add(userinfo)
        secrets.add(unquote(userinfo))
        _, _, password = userinfo.partition(":")
        secrets.update((password, unquote(password)))
        secrets.add(basic_auth(userinfo).partition(" ")[2])  # an echoed Authorization header
    # Only an http(s) URL's query may carry a key: a dns:// URL's is its ?type=, and redacting
    # "AAAA" or "CNAME" would blank the question out of every message.
    if parts.query and parts.scheme in ("http", "https"):
        secrets.add(parts.query)
        # Short values ("page=1") would mangle every message; they only appear
        # inside URLs, and URLs in messages always go through redact_url.
        secrets.update(value for _, value in parse_qsl(parts.query) if len(value) >= 4)
    secrets.discard("")
    return secrets


def scrub_secrets(text: str, secrets) -> str:
    """Redact every secret in `text`: long ones anywhere, short ones as whole words."""
    # Longest first, so a whole query string goes before the values inside it.
    ordered = sorted(secrets, key=len, reverse=True)
    text = scrub(text, [secret for secret in ordered if len(secret) >= SHORT_SECRET_CHARS])
    for secret in ordered:
        if 0 < len(secret) < SHORT_SECRET_CHARS:
            text = re.sub(rf"(?<![0-9A-Za-z]){re.escape(secret)}(?![0-9A-Za-z])", REDACTED, text)
    return text


def redacted(message: str, secrets) -> str:
    """An error as an engine returns it: secrets out first, then cut to length."""
    return shorten(scrub_secrets(message, secrets), MAX_ERROR_CHARS)


@functools.lru_cache(maxsize=16)
def address_version(address: str) -> int:
    """4 or 6: the version of an IP address literal (config.py accepts no other source address)."""
    return ipaddress.ip_address(address).version


def checked_version(request: Request) -> int | None:
    """The IP version a check may use: the monitor's ip-version, narrowed by the host's source
    address (a socket bound to an IPv4 address cannot reach an IPv6 one). Callers test
    `request.source_address` first, so a host without one pays nothing."""
    source = request.source_address
    if not source:
        return request.ip_version
    version = address_version(source)
    if request.ip_version not in (None, version):
        raise Failure("connect", f"ip-version {request.ip_version} cannot be used from this host's "
                                 f"source address {source} (IPv{version}; check.source_address)")
    return version


def no_address(host: str, request: Request, version: int) -> Failure:
    """The `dns` failure of a host with no address of the version the check may use."""
    source = request.source_address
    reach = f" to reach from source address {source}" if source else ""
    return Failure("dns", f"cannot resolve {host}: no IPv{version} address{reach}")


# errno values that mean this process or machine ran out of something.
_MONITOR_ERRNOS = {
    errno.EMFILE: "out of file descriptors",
    errno.ENFILE: "the system is out of file descriptors",
    errno.ENOBUFS: "out of socket buffer space",
    errno.ENOMEM: "out of memory",
}


def monitor_failure(exc: BaseException) -> str | None:
    """What ran out, when `exc` is a failure of the monitor itself rather than of the site.

    Such a failure must never be recorded as the site being down (DESIGN.md
    section 4): the check reports error_kind "monitor" and the consumer retries.
    """
    seen = 0
    while exc is not None and seen < 5:  # also look at what a library or we wrapped
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


def failed(kind: str, message: str, secrets, *, status: int | None = None, redirects: int = 0,
           cert_days_left: int | None = None, timings: Timings = Timings()) -> Response:
    """The Response for a transport failure, its message redacted and cut."""
    return Response(status=status, headers=(), body=None, redirects=redirects, cert_days_left=cert_days_left,
                    response_time_ms=None, timings=timings, error_kind=kind, error=redacted(message, secrets))


def never_raises(what: str):
    """Decorate a kind's `_fetch(request, secrets) -> Response` into its `fetch(request)`: the
    URL's and request's secrets gathered once, and any exception (a bug of ours or a library's
    must not crash the worker) turned into a classified failure: `monitor` when the host ran
    out of something, else `protocol` with the class name only (str(exc) may hold secrets)."""
    def decorate(inner):
        @functools.wraps(inner)
        def fetch(request: Request) -> Response:
            secrets = url_secrets(request.url) | request.secrets
            try:
                return inner(request, secrets)
            except Exception as exc:
                return unexpected(exc, what, secrets)
        return fetch
    return decorate


def unexpected(exc: BaseException, what: str, secrets) -> Response:
    """The failure of a fetch that raised (never_raises): `monitor` when the host ran out of
    something, else `protocol` with the class name only (str(exc) may hold secrets)."""
    exhausted = monitor_failure(exc)
    if exhausted:
        return failed("monitor", f"monitor failure: {exhausted}; {what} was not checked", secrets)
    return failed("protocol", f"unexpected error: {type(exc).__name__}", secrets)

