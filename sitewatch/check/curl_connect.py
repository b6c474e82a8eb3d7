"""A connection made by libcurl, for the kinds that speak no HTTP (tcp://) on the curl loop.

CONNECT_ONLY: libcurl resolves (its threaded resolver), connects with Happy Eyeballs across
the name's addresses, from the host's source address and in the monitor's IP version, all
within the check's deadline, and stops there. The kind then talks on the socket itself
(ACTIVESOCKET), without blocking, while the handle stays in the CurlMulti: libcurl closes the
connection when the handle leaves it. Failures are classified as the blocking path's
(stream.Stream.classify) are, with the curl engine's rules for what is the monitor's own.
"""

from __future__ import annotations

import os
import time

import pycurl

from .address import literal_version
from .curl_engine import _IP_RESOLVE, _KINDS, exhausted_by
from .engine import CONNECTING, RESOLVING, Failure, address_version, checked_version, no_address


class Connect:
    """One connection's setup and outcome; the loop supplies the easy handle (`start`) and
    libcurl's verdict (`socket`)."""

    def __init__(self, stream) -> None:
        self.stream = stream            # stream.Stream: the check's host, port, deadline and marks
        self.handle: pycurl.Curl | None = None

    def start(self, handle: pycurl.Curl) -> None:
        """Set `handle` up to connect; raises Failure when it cannot be tried (an address
        literal of another IP version than the check may use, the deadline gone)."""
        stream, request = self.stream, self.stream.request
        version = checked_version(request) if request.source_address else request.ip_version
        if version is not None and literal_version(stream.host) not in (None, version):
            raise no_address(stream.host, request, version)
        left_ms = int((stream.deadline.at - time.monotonic()) * 1000)
        if left_ms <= 0:
            raise TimeoutError("total deadline passed")
        self.handle = handle
        handle.sitewatch_profile = None     # an HTTP transfer that reuses the handle resets it
        handle.reset()
        handle.setopt(pycurl.NOSIGNAL, 1)
        handle.setopt(pycurl.CONNECT_ONLY, 1)
        handle.setopt(pycurl.TIMEOUT_MS, left_ms)
        handle.setopt(pycurl.CONNECTTIMEOUT_MS, left_ms)
        handle.setopt(pycurl.FRESH_CONNECT, 1)     # never FORBID_REUSE: it closes the connection when connected
        handle.setopt(pycurl.DNS_CACHE_TIMEOUT, 0)
        handle.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP)
        handle.setopt(pycurl.IPRESOLVE, _IP_RESOLVE[request.ip_version])
        if request.source_address:
            handle.setopt(pycurl.INTERFACE, f"host!{request.source_address}")
            handle.setopt(pycurl.IPRESOLVE, _IP_RESOLVE[address_version(request.source_address)])
        host = f"[{stream.host}]" if ":" in stream.host else stream.host
        handle.setopt(pycurl.URL, f"http://{host}:{stream.port}/")   # http: only its connect is used

    def socket(self, code: int, message: str) -> int:
        """The connected socket's descriptor, after libcurl's verdict; raises Failure. Marks the
        stream's dns and connect phases."""
        handle, stream = self.handle, self.stream
        looked_up = handle.getinfo(pycurl.NAMELOOKUP_TIME_T)
        connected = handle.getinfo(pycurl.CONNECT_TIME_T)
        start = stream.deadline.start
        if looked_up > 0:
            stream.mark("dns", start + looked_up / 1e6)
        if code == 0 and connected > 0:
            stream.mark("connect", start + connected / 1e6)
        if code:
            stream.stage = CONNECTING if looked_up > 0 or literal_version(stream.host) else RESOLVING
            raise self._classify(code, message)
        stream.stage = CONNECTING
        fd = handle.getinfo(pycurl.ACTIVESOCKET)
        if fd < 0:
            raise Failure("protocol", f"connection to {stream.host} port {stream.port} was closed at once")
        return fd

    def _classify(self, code: int, message: str) -> Failure:
        stream = self.stream
        os_errno = self.handle.getinfo(pycurl.OS_ERRNO)
        exhausted = exhausted_by(code, message, os_errno)     # the curl engine's rules
        if exhausted:
            return Failure("monitor", f"monitor failure while {stream.stage}: {exhausted}; "
                                      "the site was not checked")
        kind = _KINDS.get(code, "protocol")
        if kind == "timeout" or stream.deadline.passed():
            return Failure("timeout", f"timed out after {stream.deadline.seconds} s (total deadline) "
                                      f"while {stream.stage}")
        if kind == "dns":
            return Failure("dns", f"cannot resolve {stream.host}: {message}")
        if kind == "connect":
            reason = os.strerror(os_errno) if os_errno else message
            return Failure("connect", f"cannot connect to {stream.host} port {stream.port}: {reason}")
        return Failure("protocol", f"connection to {stream.host} port {stream.port} failed while "
                                   f"{stream.stage}: {message}")

