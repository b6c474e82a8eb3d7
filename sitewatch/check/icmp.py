"""The `icmp://HOST` monitor kind: a few echo requests, their loss and mean round trip.

Echo requests go out on unprivileged ICMP datagram sockets (icmplib with privileged=False):
no root, no setuid, no raw packets of our own. Linux allows such sockets only to the groups
in the sysctl `net.ipv4.ping_group_range` (Debian's default `1 0` allows none). Where the
system forbids them, the check is a monitor failure (error_kind `monitor`: this host cannot
check, the host checked is not down), and `available()` says why in one line, for `url add`
and `run` to show.

ECHO_REQUESTS requests are sent a short interval apart; replies are awaited until every
request has one or the check's one deadline (`request.timeout`, which also bounds looking
up a host name) passes. So a host that loses a packet makes its check last the timeout.
`Response.values` holds `("loss", percent)` (rounded to 0.1), and `response_time_ms` is the
mean round trip of the replies. The default verdict: up when any reply came (what `ping`'s
exit code says, and Uptime Kuma's ping monitor); `--assert 'loss == 0'` or `loss < 50` is
stricter. Failures:
* every request lost: `timeout` ("no echo reply from ..."); a starved monitor can miss
  replies too, and the consumer's starvation judging applies to `timeout`;
* no request could be sent (no route to the network): `connect`;
* the host name does not resolve: `dns`;
* unprivileged ICMP forbidden, or the monitor out of descriptors or memory: `monitor`.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import os
import socket
import time
from pathlib import Path

from icmplib import ICMPRequest, ICMPv4Socket, ICMPv6Socket
from icmplib.exceptions import ICMPError, ICMPSocketError, SocketPermissionError, TimeoutExceeded
from icmplib.utils import unique_identifier

from sitewatch.errors import BadInput
from sitewatch.urlspec import MAX_URL_LENGTH

from .address import normalise_host
from .deadline import Deadline
from .engine import Failure, Request, Response, Timings, checked_version, failed, monitor_failure, never_raises
from .resolve import resolve

SCHEME = "icmp"
SUBJECTS = frozenset({"loss", "response_time"})
ECHO_REQUESTS = 3
# Between two requests; at most a tenth of the timeout, so all are sent early in the deadline.
INTERVAL = 0.2
PING_GROUP_RANGE = Path("/proc/sys/net/ipv4/ping_group_range")
ALLOW_HINT = 'allow it with: sysctl -w net.ipv4.ping_group_range="0 2147483647"'


# --------------------------------------------------------------------------- the URL


def _host(url: str) -> str:
    """HOST of icmp://HOST, validated: an IP address (IPv6 without brackets) or a lower-cased IDNA name."""
    if not isinstance(url, str):
        raise BadInput(f"URL must be text, got {type(url).__name__}")
    if len(url) > MAX_URL_LENGTH:
        raise BadInput(f"URL is longer than {MAX_URL_LENGTH} characters ({len(url)})")
    if not url.isprintable() or " " in url:
        raise BadInput("URL contains whitespace or a control character")
    if not url.lower().startswith("icmp://"):
        raise BadInput("an icmp:// URL must start with icmp://")
    rest = url[len("icmp://"):]
    if rest.endswith("/"):
        rest = rest[:-1]
    if any(mark in rest for mark in "/?#@"):
        raise BadInput(f"an icmp:// URL is icmp://HOST alone (no port, path, query or user), got {url!r}")
    if rest.startswith("[") and rest.endswith("]"):
        rest = rest[1:-1]
        try:
            return ipaddress.IPv6Address(rest).compressed
        except ValueError:
            raise BadInput(f"icmp:// host [{rest}] is not an IPv6 address") from None
    if not rest:
        raise BadInput("icmp:// URL has no host")
    if ":" in rest:
        raise BadInput(f"an icmp:// URL takes no port (write IPv6 addresses in brackets), got {url!r}")
    try:
        return ipaddress.IPv4Address(rest).compressed
    except ValueError:
        pass
    try:
        return normalise_host(rest).removesuffix(".")     # tcp:// and tls://'s rules for a name
    except BadInput:
        raise BadInput(f"icmp:// host {rest!r} is not an IP address or a valid host name") from None


def normalise(url: str) -> str:
    """`ICMP://Example.COM/` -> `icmp://example.com`; IPv6 in brackets. Raises BadInput."""
    host = _host(url)
    return f"icmp://[{host}]" if ":" in host else f"icmp://{host}"


# --------------------------------------------------------------------------- may we ping?


def available() -> str | None:
    """None when this process may open unprivileged ICMP sockets; else why not, in one line."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP).close()
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            return _forbidden()
        if exc.errno in (errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT, errno.ESOCKTNOSUPPORT):
            return f"this system has no unprivileged ICMP sockets ({errno.errorcode[exc.errno]}); icmp:// cannot run"
        return None  # out of descriptors or memory: a passing shortage, not a setting
    return None


def _forbidden() -> str:
    try:
        setting = " ".join(PING_GROUP_RANGE.read_text().split())
    except OSError:
        return "unprivileged ICMP sockets are not allowed for this process"
    return (f"unprivileged ICMP sockets are not allowed for this process's group (gid {os.getgid()}): "
            f'net.ipv4.ping_group_range is "{setting}"; {ALLOW_HINT}')


# --------------------------------------------------------------------------- the echo requests


def _address(host: str, ip_version: int | None, deadline: Deadline) -> str | None:
    """The address to ping: HOST itself, or the first of its addresses; None when none is of
    the monitor's ip-version."""
    families = {4: (socket.AF_INET,), 6: (socket.AF_INET6,)}.get(ip_version, (socket.AF_INET, socket.AF_INET6))
    for family, *_, sockaddr in resolve(host, 0, deadline):
        if family in families:
            return sockaddr[0]
    return None


# Called as fetch(request): never_raises gathers the secrets and turns any exception into a
# classified failure (engine.py), so a bug here cannot crash the worker.
@never_raises("the host")
def fetch(request: Request, secrets: set[str]) -> Response:
    deadline = Deadline(request.timeout)
    try:
        host = _host(request.url)
    except BadInput as exc:  # normalise() refuses these before they are stored
        return failed("protocol", str(exc), secrets)
    source = request.source_address
    try:
        # A source address narrows the version, as ip-version does (and must agree with it).
        version = checked_version(request) if source else request.ip_version
    except Failure as exc:
        return failed(exc.kind, exc.message, secrets)
    try:
        address = _address(host, version, deadline)
    except TimeoutError:
        return failed("timeout", f"timed out after {request.timeout:g} s resolving {host}", secrets)
    except OSError as exc:
        exhausted = monitor_failure(exc)
        if exhausted:
            return failed("monitor", f"monitor failure: {exhausted}; the host was not checked", secrets)
        return failed("dns", f"cannot resolve {host}: {exc.strerror or exc}", secrets)
    if address is None:
        why = f"source address {source}" if source else f"ip-version {version}"
        return failed("dns", f"{host} has no IPv{version} address ({why})", secrets)
    looked_up_ms = (time.monotonic() - deadline.start) * 1000 if address != host else None
    shown = address if address == host else f"{address} ({host})"
    try:
        sock = (ICMPv6Socket if ":" in address else ICMPv4Socket)(source, privileged=False)
    except SocketPermissionError:
        return failed("monitor", f"monitor failure: {_forbidden()}; the host was not checked", secrets)
    except ICMPSocketError as exc:
        exhausted = monitor_failure(exc)  # icmplib keeps the OSError as the context
        if exhausted:
            return failed("monitor", f"monitor failure: {exhausted}; the host was not checked", secrets)
        return failed("monitor", f"monitor failure: cannot open an ICMP socket ({exc}); the host was not checked",
                      secrets)
    with sock:
        rtts, sent, problem = _echo(sock, address, deadline, min(INTERVAL, request.timeout / 10))
    timings = Timings(dns_ms=looked_up_ms)
    loss = round(100 * (ECHO_REQUESTS - len(rtts)) / ECHO_REQUESTS, 1)
    values = (("loss", loss),)
    if not sent:
        return failed("connect", f"cannot send an echo request to {shown}: {problem}", secrets, timings=timings)
    if not rtts:
        lost = failed("timeout", f"no echo reply from {shown} within {request.timeout:g} s: "
                      f"{ECHO_REQUESTS} of {ECHO_REQUESTS} requests lost (100% loss)", secrets, timings=timings)
        return dataclasses.replace(lost, values=values)
    return Response(status=None, headers=(), body=None, redirects=0, cert_days_left=None,
                    response_time_ms=sum(rtts) / len(rtts), timings=timings, error_kind=None, error=None,
                    values=values)


def _echo(sock, address: str, deadline: Deadline, interval: float) -> tuple[list[float], int, str | None]:
    """Send ECHO_REQUESTS requests `interval` apart and collect replies until all came or the
    deadline passed: (round trips in ms, requests sent, the last send error)."""
    ident = unique_identifier()  # on Linux the kernel sets the socket's own; icmplib updates the request
    requests: dict[int, ICMPRequest] = {}
    rtts: dict[int, float] = {}
    problem = None
    next_send = time.monotonic()
    for sequence in range(ECHO_REQUESTS):
        _collect(sock, requests, rtts, min(next_send, deadline.at))
        time.sleep(max(0.0, min(next_send, deadline.at) - time.monotonic()))  # every reply came early
        if deadline.passed():
            break
        echo = ICMPRequest(destination=address, id=ident, sequence=sequence)
        try:
            sock.send(echo)
        except ICMPSocketError as exc:  # no route, network unreachable: this one is lost
            if monitor_failure(exc):
                raise
            problem = str(exc)
        else:
            requests[sequence] = echo
        next_send = time.monotonic() + interval
    _collect(sock, requests, rtts, deadline.at)
    return list(rtts.values()), len(requests), problem


def _collect(sock, requests: dict, rtts: dict, until: float) -> None:
    """Read replies to `requests` into `rtts` (by sequence) until `until` (monotonic) or all came."""
    while len(rtts) < len(requests):
        left = until - time.monotonic()
        if left <= 0:
            return
        try:
            reply = sock.receive(None, max(left, 0.001))  # 0 would make the socket non-blocking
        except TimeoutExceeded:
            return
        except ICMPSocketError as exc:
            if monitor_failure(exc):
                raise
            return  # the socket reports an error: no more replies to read
        echo = requests.get(reply.sequence)
        if echo is None or reply.id != echo.id or reply.sequence in rtts:
            continue  # not ours, or a duplicate
        try:
            reply.raise_for_status()  # an ICMP error (unreachable, TTL exceeded) is no reply
        except ICMPError:
            continue
        rtts[reply.sequence] = (reply.time - echo.time) * 1000
