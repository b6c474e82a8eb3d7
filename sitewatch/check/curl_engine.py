"""The curl engine: libcurl (pycurl) does DNS, connect, TLS and HTTP/1.1 in C.

It keeps every promise of the check (engine.py) the way the urllib3 engine does, with these choices:

* Redirects are followed here, hop by hop (FOLLOWLOCATION off), by the same policy object as the urllib3
  engine (redirects.py): libcurl's own following keeps a custom method on a 303, detects no loops, and
  would decide by itself where credentials go. The URL's userinfo is never given to libcurl: the
  Authorization header is made here, like the urllib3 engine's.
* One total deadline: each hop's TIMEOUT_MS is what is left of the check's.
* The body is not decoded by libcurl (HTTP_CONTENT_DECODING off): the write callback pushes the raw
  bytes through body.py, whose caps abort the transfer, and which reports a truncated gzip or deflate
  stream.
* A fresh connection, resolution and TLS session per check: FRESH_CONNECT, FORBID_REUSE,
  DNS_CACHE_TIMEOUT 0, no TLS session cache.
* HTTP/1.1, as the urllib3 engine speaks: a site whose HTTP/2 alone is broken is judged the same by both
  engines.
* Certificate days come from CERTINFO. When verification fails the handshake stops before it, so a
  second, unverified handshake with the same host (CONNECT_ONLY) reads the certificate, within the same
  deadline.

`_Transfer` is one fetch, step by step on one easy handle, so the same code runs under `perform()` on a
caller's thread (CurlEngine.fetch) and in a CurlMulti loop.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import ssl
import threading
import time

import pycurl

from . import tls
from .address import literal_version
from .body import BadEncoding, BodyDecoder, BodyTooLarge
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
    address_version,
    checked_version,
    failed,
    monitor_failure,
    no_address,
    request_headers,
    url_secrets,
)
from .redirects import REDIRECT_STATUSES, Hops
from .resolve import starved

MAX_HEADERS = 100  # like http.client: more in one response is `protocol`
_IP_RESOLVE = {4: pycurl.IPRESOLVE_V4, 6: pycurl.IPRESOLVE_V6, None: pycurl.IPRESOLVE_WHATEVER}
# curl's own defaults that the urllib3 engine does not send: removed (an empty value removes).
_NOT_SENT = ("Accept:", "Expect:")


# libcurl error codes by error_kind (curl/curl.h); anything else is `protocol`.
_KINDS = {
    pycurl.E_COULDNT_RESOLVE_HOST: "dns", pycurl.E_COULDNT_RESOLVE_PROXY: "dns",
    pycurl.E_COULDNT_CONNECT: "connect", pycurl.E_INTERFACE_FAILED: "connect", pycurl.E_OPERATION_TIMEDOUT: "timeout",
    pycurl.E_OUT_OF_MEMORY: "monitor", pycurl.E_FILESIZE_EXCEEDED: "body_too_large",
    **dict.fromkeys((pycurl.E_SSL_CONNECT_ERROR, pycurl.E_PEER_FAILED_VERIFICATION, pycurl.E_SSL_CERTPROBLEM,
                     pycurl.E_SSL_CIPHER, pycurl.E_SSL_CACERT_BADFILE, pycurl.E_SSL_ENGINE_NOTFOUND,
                     pycurl.E_SSL_ENGINE_SETFAILED, pycurl.E_SSL_ENGINE_INITFAILED, pycurl.E_USE_SSL_FAILED,
                     pycurl.E_SSL_CRL_BADFILE, pycurl.E_SSL_ISSUER_ERROR, pycurl.E_SSL_PINNEDPUBKEYNOTMATCH,
                     pycurl.E_SSL_INVALIDCERTSTATUS), "tls"),
}


@functools.cache  # the same for every check without headers, credentials or a body
def _plain_header_lines() -> list[str]:
    return [f"{name}: {value}" for name, value in request_headers(None, ()).values()] + list(_NOT_SENT)


@functools.cache  # it looks at the file system: once per process, not once per check
def ca_paths() -> tuple[str | None, str | None]:
    """The trust store the urllib3 engine uses (Python's OpenSSL defaults, SSL_CERT_FILE honoured).

    pycurl's wheels carry their own libcurl, built elsewhere, whose compiled-in CA
    path may not exist here.
    """
    paths = ssl.get_default_verify_paths()
    return paths.cafile, paths.capath


def _leaf_days_left(handle) -> int | None:
    try:
        chain = handle.getinfo(pycurl.INFO_CERTINFO)
    except pycurl.error:
        return None
    pem = dict(chain[0]).get("Cert") if chain else None
    if not pem:
        return None
    try:
        expires = tls.der_not_after(ssl.PEM_cert_to_DER_cert(pem))
    except ValueError:
        return None
    return None if expires is None else int((expires - time.time()) // 86400)


def exhausted_by(code: int, message: str, os_errno: int) -> str | None:
    """What ran out when libcurl's failure `code` is the monitor's own, not the site's; else None."""
    exhausted = monitor_failure(OSError(os_errno, os.strerror(os_errno))) if os_errno else None
    if not exhausted and _KINDS.get(code) in ("dns", "connect"):
        # libcurl reports a socket() that failed for want of descriptors as a failed connect
        # with no errno: look before blaming the site (as resolve.py does). A refused connect
        # leaves its errno; none means socket() failed (another transfer may have freed a
        # descriptor since the look).
        shortage = starved()
        exhausted = monitor_failure(shortage) if shortage else None
        if not exhausted and _KINDS.get(code) == "connect" and not os_errno:
            exhausted = "could not open a socket (out of file descriptors?)"
    if exhausted or code == pycurl.E_OUT_OF_MEMORY or "thread failed to start" in message:
        return exhausted or message or "out of memory"
    return None


class _Transfer:
    """One fetch on libcurl: `begin()` a hop on the handle, run it, `end()` it; repeat while True."""

    def __init__(self, request: Request, handle: pycurl.Curl) -> None:
        self.request = request
        self.handle = handle
        self.start = time.monotonic()
        self.at = self.start + float(request.timeout)
        self.hops = Hops(request)
        self._urls: list[str] = []  # every hop's URL: their secrets are scrubbed from an error
        self.status: int | None = None
        self.headers: list[tuple[str, str]] = []
        self.cert_days_left: int | None = None
        self.timings = Timings()
        self.result: Response | None = None
        self._looking = False  # the second, unverified handshake that only reads the certificate
        self._hop_failure: Failure | None = None  # raised by a callback; libcurl only saw an abort
        self._pending_failure: Failure | None = None  # reported once the certificate is read
        self._final_headers = False  # the final (non-1xx) response's head is being read
        self._in_body = False  # ...and it has ended: what follows is the body
        self._decoder: BodyDecoder | None = None
        self._host = ""
        self._port = 0
        self._https = False
        self._curl_url = ""

    # ---- the steps

    def begin(self) -> bool:
        """Set the handle up for the next hop; False (and `result` set) when there is none."""
        try:
            self._setup(self.hops.url)
            return True
        except Failure as exc:
            self._fail(exc)
        except Exception as exc:  # pycurl.error on setopt, MemoryError...
            self._unexpected(exc)
        return False

    def end(self, code: int, message: str) -> bool:
        """After a hop ran (code 0 = done): True when another hop has begun, False when `result` is set."""
        try:
            if self._looking:
                self._note_days_left(_leaf_days_left(self.handle))
                raise self._pending_failure
            self.timings = self._read_timings()
            if self._https:
                self._note_days_left(_leaf_days_left(self.handle))
            location = self._location()
            if self._hop_failure is not None and not (location and code == pycurl.E_WRITE_ERROR):
                raise self._hop_failure
            if code and not (location and code == pycurl.E_WRITE_ERROR):  # a redirect's body is never read
                failure = self._classify(code, message)
                if code == pycurl.E_PEER_FAILED_VERIFICATION and self._begin_look():
                    self._pending_failure = failure
                    return True
                raise failure
            if location is None:
                body = None if self.hops.method == "HEAD" else bytes(self._finish_body())
                self._decoder = None  # a spare handle keeps this transfer (its callbacks) until reused
                self.result = Response(
                    status=self.status, headers=tuple(self.headers), body=body, redirects=self.hops.redirects,
                    cert_days_left=self.cert_days_left, response_time_ms=(time.monotonic() - self.start) * 1000.0,
                    timings=self.timings, error_kind=None, error=None)
                return False
            self.hops.follow(self.status, location)
            return self.begin()
        except Failure as exc:
            self._fail(exc)
        except Exception as exc:
            self._unexpected(exc)
        return False

    # ---- setting a hop up

    def _setup(self, url: str) -> None:
        hops, handle = self.hops, self.handle
        self._urls.append(url)
        parts = hops.parse(url)
        self._https = parts.scheme == "https"
        self._host = parts.host.strip("[]")
        self._check_family()
        self._port = parts.port or (443 if self._https else 80)
        left_ms = int((self.at - time.monotonic()) * 1000)
        if left_ms <= 0:
            raise self._timeout(RESOLVING)

        if parts.auth is None and not hops.headers and hops.body is None:
            lines = _plain_header_lines()
        else:
            merged = request_headers(parts.auth, hops.headers)
            lines = [f"{name}: {value}" for name, value in merged.values()] + list(_NOT_SENT)
            if hops.body is not None and "content-type" not in merged:
                lines.append("Content-Type:")  # curl would add a form type the urllib3 engine never sends

        # A GET without a body on a handle whose last hop had the same options keeps them: only
        # the deadline, URL, headers and callbacks change (reset() and the ~15 fixed options
        # were a tenth of the loop's CPU per check). Any other hop resets the handle.
        request = self.request
        profile = (self._https, request.ip_version, request.source_address, request.verify_tls,
                   request.client_cert, request.client_key) if hops.method == "GET" and hops.body is None else None
        if profile is not None and getattr(handle, "sitewatch_profile", None) == profile:
            handle.setopt(pycurl.TIMEOUT_MS, left_ms)
            handle.setopt(pycurl.CONNECTTIMEOUT_MS, left_ms)
        else:
            handle.sitewatch_profile = None  # until the options below are all set
            handle.reset()
            self._common_options(left_ms)
        self._curl_url = (parts if parts.auth is None else parts._replace(auth=None)).url
        handle.setopt(pycurl.URL, self._curl_url)
        handle.setopt(pycurl.HTTPHEADER, lines)
        method = hops.method
        if method == "HEAD":
            handle.setopt(pycurl.NOBODY, 1)
        elif method == "POST":
            handle.setopt(pycurl.POST, 1)
        elif method != "GET" or hops.body is not None:  # a body alone would turn a GET into a POST
            handle.setopt(pycurl.CUSTOMREQUEST, method)
        if hops.body is not None or method in ("POST", "PUT", "PATCH"):
            # pycurl keeps the bytes alive and sets their length (NUL bytes included);
            # no body on these methods is `Content-Length: 0`, as http.client sends.
            handle.setopt(pycurl.POSTFIELDS, hops.body or b"")
        handle.setopt(pycurl.HEADERFUNCTION, self._header_line)
        handle.setopt(pycurl.WRITEFUNCTION, self._write)
        handle.sitewatch_profile = profile
        self.status, self.headers, self._hop_failure = None, [], None
        self._decoder, self._final_headers, self._in_body = None, False, False

    def _check_family(self) -> None:
        # libcurl ignores IPRESOLVE for an address literal and fails to connect;
        # the urllib3 engine finds no address of that version, which is `dns`.
        # A source address narrows the version too (checked_version); a name is then
        # resolved in its family only (IPRESOLVE in _common_options).
        request = self.request
        version = checked_version(request) if request.source_address else request.ip_version
        if version is None:    # any family will do (ip_address() costs a twentieth of a check)
            return
        try:
            literal = ipaddress.ip_address(self._host)
        except ValueError:
            return
        if literal.version != version:
            raise no_address(self._host, request, version)

    def _common_options(self, left_ms: int) -> None:
        handle, request = self.handle, self.request
        handle.setopt(pycurl.NOSIGNAL, 1)  # threads: no SIGALRM; the resolver is threaded
        handle.setopt(pycurl.TIMEOUT_MS, left_ms)
        handle.setopt(pycurl.CONNECTTIMEOUT_MS, left_ms)
        handle.setopt(pycurl.FRESH_CONNECT, 1)
        handle.setopt(pycurl.FORBID_REUSE, 1)
        handle.setopt(pycurl.DNS_CACHE_TIMEOUT, 0)
        handle.setopt(pycurl.SSL_SESSIONID_CACHE, 0)
        handle.setopt(pycurl.FOLLOWLOCATION, 0)
        handle.setopt(pycurl.HTTP_CONTENT_DECODING, 0)
        handle.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
        handle.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        handle.setopt(pycurl.IPRESOLVE, _IP_RESOLVE[request.ip_version])
        if request.source_address:   # "host!": an address, never an interface name; its family only
            handle.setopt(pycurl.INTERFACE, f"host!{request.source_address}")
            handle.setopt(pycurl.IPRESOLVE, _IP_RESOLVE[address_version(request.source_address)])
        if not self._https:
            return  # TLS options cost a call each, and http has no use for them
        handle.setopt(pycurl.SSL_VERIFYPEER, 1 if request.verify_tls else 0)
        handle.setopt(pycurl.SSL_VERIFYHOST, 2 if request.verify_tls else 0)
        cafile, capath = ca_paths()
        if cafile:
            handle.setopt(pycurl.CAINFO, cafile)
        if capath:
            handle.setopt(pycurl.CAPATH, capath)
        handle.setopt(pycurl.OPT_CERTINFO, 1)
        if request.client_cert:
            handle.setopt(pycurl.SSLCERT, request.client_cert)
            if request.client_key:
                handle.setopt(pycurl.SSLKEY, request.client_key)

    def _begin_look(self) -> bool:
        """Set up the unverified handshake that reads a certificate which failed verification.

        It resolves the name again: after a failed handshake libcurl no longer says
        which address it used (PRIMARY_IP is empty).
        """
        try:
            left_ms = int((self.at - time.monotonic()) * 1000)
            if left_ms <= 0:
                return False
            self.handle.sitewatch_profile = None  # CONNECT_ONLY and no verification: reset before reuse
            self.handle.reset()
            self._common_options(left_ms)
            self.handle.setopt(pycurl.SSL_VERIFYPEER, 0)
            self.handle.setopt(pycurl.SSL_VERIFYHOST, 0)
            self.handle.setopt(pycurl.CONNECT_ONLY, 1)
            self.handle.setopt(pycurl.URL, self._curl_url)
        except pycurl.error:
            return False
        self._looking = True
        return True

    # ---- callbacks (libcurl calls them inside perform(); an exception there would be lost)

    def _header_line(self, line: bytes):
        text = line.decode("iso-8859-1")  # as http.client reads header blocks
        if text.startswith("HTTP/"):
            status = text.split(None, 2)[1:2]
            code = int(status[0]) if status and status[0].isdigit() else None
            if code is not None and not (100 <= code < 200 and code != 101):
                self.status = code
                self._final_headers = True
            self.headers = []
            return None
        if not text.strip():
            self._in_body = self._final_headers  # the end of the final response's head
            return None
        if not self._final_headers:
            return None
        if text[0] in " \t" and self.headers:  # an obsolete folded continuation line
            name, value = self.headers[-1]
            self.headers[-1] = (name, f"{value} {text.strip()}")
            return None
        name, sep, value = text.partition(":")
        if sep:
            self.headers.append((name.strip().lower(), value.strip()))
        if len(self.headers) > MAX_HEADERS:
            self._hop_failure = Failure("protocol", f"bad HTTP response while {WAITING}: "
                                                    f"got more than {MAX_HEADERS} headers")
            return 0
        return None

    def _write(self, data: bytes):
        if self._decoder is None:
            if self._location() is not None:  # a redirect: its body is not ours to read
                return 0
            self._decoder = BodyDecoder(self._header("content-encoding") or "", self.request.max_body_bytes)
        try:
            self._decoder.feed(data)
        except BodyTooLarge as exc:
            self._hop_failure = Failure("body_too_large", str(exc))
            return 0
        except BadEncoding as exc:
            self._hop_failure = Failure("protocol", str(exc))
            return 0
        except Exception as exc:  # MemoryError and the like
            self._hop_failure = self._monitor_or_protocol(exc)
            return 0
        return None

    # ---- reading the outcome of a hop

    def _header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def _location(self) -> str | None:
        if self.status not in REDIRECT_STATUSES:
            return None  # a Location on a 200 or 201 is no redirect
        return self._header("location") or None

    def _finish_body(self) -> bytearray:
        if self._decoder is None:  # an empty body: the write callback never ran
            self._decoder = BodyDecoder(self._header("content-encoding") or "", self.request.max_body_bytes)
        try:
            return self._decoder.finish()
        except BadEncoding as exc:
            raise Failure("protocol", str(exc)) from None

    def _read_timings(self) -> Timings:
        """The hop's phases, each as its own duration (libcurl's times are cumulative, in us)."""
        handle = self.handle
        marks = [handle.getinfo(info) for info in (pycurl.NAMELOOKUP_TIME_T, pycurl.CONNECT_TIME_T,
                                                   pycurl.APPCONNECT_TIME_T, pycurl.STARTTRANSFER_TIME_T)]
        values, last = [], 0
        for index, mark in enumerate(marks):
            if mark <= 0 or (index == 2 and not self._https):
                values.append(None)
                continue
            values.append((mark - last) / 1000.0)
            last = mark
        return Timings(*values)

    def _stage(self) -> str:
        timings = self.timings
        # libcurl records the connect time only once TLS is done too; a connection it
        # counted without one is a handshake in progress.
        if timings.connect_ms is None and self._https and self.handle.getinfo(pycurl.NUM_CONNECTS) > 0:
            return TLS_HANDSHAKE
        if timings.connect_ms is None:
            return CONNECTING if timings.dns_ms is not None or literal_version(self._host) else RESOLVING
        if self._https and timings.tls_ms is None:
            return TLS_HANDSHAKE
        return READING if self._in_body else WAITING

    def _timeout(self, stage: str) -> Failure:
        return Failure("timeout", f"timed out after {float(self.request.timeout)} s (total deadline) while {stage}")

    def _classify(self, code: int, message: str) -> Failure:
        stage = self._stage()
        os_errno = self.handle.getinfo(pycurl.OS_ERRNO)
        exhausted = exhausted_by(code, message, os_errno)
        if exhausted:
            return Failure("monitor", f"monitor failure while {stage}: {exhausted}; the site was not checked")
        kind = _KINDS.get(code, "protocol")
        if kind == "timeout" or time.monotonic() >= self.at:
            return self._timeout(stage)
        if kind == "dns":
            return Failure("dns", f"cannot resolve {self._host}: {message}")
        if kind == "connect":
            reason = os.strerror(os_errno) if os_errno else message
            return Failure("connect", f"cannot connect to {self._host} port {self._port}: {reason}")
        if kind == "tls":
            if code == pycurl.E_PEER_FAILED_VERIFICATION:
                message = "certificate verify failed: " + message.removeprefix("SSL certificate problem: ")
            return Failure("tls", f"TLS with {self._host} failed while {TLS_HANDSHAKE}: {message}")
        if code == pycurl.E_GOT_NOTHING:
            message = "server closed the connection without a response"
        elif code == pycurl.E_PARTIAL_FILE:
            got = self._decoder.raw_total if self._decoder else 0
            message = f"connection closed before the end of the body ({got} bytes read): {message}"
        return Failure(kind, f"bad HTTP response while {stage}: {message}")

    def _note_days_left(self, days: int | None) -> None:
        if days is not None and (self.cert_days_left is None or days < self.cert_days_left):
            self.cert_days_left = days

    def _monitor_or_protocol(self, exc: BaseException) -> Failure:
        exhausted = monitor_failure(exc)
        if exhausted:
            return Failure("monitor", f"monitor failure: {exhausted}; the site was not checked")
        return Failure("protocol", f"unexpected error: {type(exc).__name__}")  # str(exc) may hold secrets

    def _fail(self, failure: Failure) -> None:
        # The secrets are worked out only now: most checks never fail.
        secrets = set(self.request.secrets).union(*(url_secrets(url) for url in self._urls))
        self.result = failed(failure.kind, failure.message, secrets, status=self.status,
                             redirects=self.hops.redirects, cert_days_left=self.cert_days_left,
                             timings=self.timings)

    def _unexpected(self, exc: BaseException) -> None:
        self._fail(self._monitor_or_protocol(exc))


class CurlEngine:
    """One fetch per call on the calling thread, on that thread's own easy handle."""

    name = "curl"

    def __init__(self) -> None:
        self._local = threading.local()

    def _handle(self) -> pycurl.Curl:
        handle = getattr(self._local, "handle", None)
        if handle is None:
            handle = self._local.handle = pycurl.Curl()
        return handle

    def fetch(self, request: Request) -> Response:
        try:
            transfer = _Transfer(request, self._handle())
        except Exception as exc:  # pycurl.Curl() out of memory, ...
            exhausted = monitor_failure(exc) or f"cannot start a transfer ({type(exc).__name__})"
            return failed("monitor", f"monitor failure: {exhausted}; the site was not checked", ())
        running = transfer.begin()
        while running:
            try:
                transfer.handle.perform()
                code, message = 0, ""
            except pycurl.error as exc:
                code, message = exc.args[0], str(exc.args[1]) if len(exc.args) > 1 else ""
            running = transfer.end(code, message)
        return transfer.result


CURL = CurlEngine()
