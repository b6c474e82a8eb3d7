"""TCP connect across a host's addresses, Happy Eyeballs style (RFC 8305).

A name often has several addresses, and one of them may be blackholed (a broken
IPv6 AAAA is the classic): trying them one after another would spend the whole
deadline on the first and report `timeout` while the next one works. So the
addresses are tried in interleaved family order, and the next attempt starts
when the previous one has not connected after ATTEMPT_DELAY, or at once when it
failed; the first connection to succeed wins and the others are closed.

Attempts are non-blocking sockets waited on with poll(), which needs no extra
descriptor and has no FD_SETSIZE limit; the wait is bounded by the check's
deadline.
"""

from __future__ import annotations

import errno
import math
import os
import select
import socket
import time

from .deadline import Deadline

# RFC 8305 section 5 recommends 250 ms between connection attempts.
ATTEMPT_DELAY = 0.25
# With a source address, bind() would pick the local port before the peer is known, so every
# check of the host shares one address's ~28,000 ephemeral ports (TIME_WAIT ones included);
# Linux's IP_BIND_ADDRESS_NO_PORT defers the choice to connect(), per peer, as libcurl does.
_BIND_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", None)

_IN_PROGRESS = (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK, errno.EALREADY)
_FAILED = select.POLLERR | select.POLLHUP | select.POLLNVAL


def interleave(addresses: list) -> list:
    """getaddrinfo() results with families alternating, the first family first (RFC 8305 section 4)."""
    families: dict[int, list] = {}
    for address in addresses:
        families.setdefault(address[0], []).append(address)
    queues = list(families.values())
    ordered = []
    while queues:
        ordered += [queue.pop(0) for queue in queues]
        queues = [queue for queue in queues if queue]
    return ordered


def connect(addresses: list, socket_options, deadline: Deadline, source_address: str | None = None) -> socket.socket:
    """A socket connected to the first of `addresses` that answers, in blocking mode.

    Raises the first connection error when every address fails, and
    TimeoutError when the deadline passes first.
    """
    waiting = list(addresses)
    attempts: dict[int, socket.socket] = {}  # by fd: connecting now
    errors: list[OSError] = []
    poller = select.poll()
    next_attempt = time.monotonic()
    winner = None
    try:
        while True:
            now = time.monotonic()
            if waiting and (now >= next_attempt or not attempts):
                sock = _start(waiting.pop(0), socket_options, errors, source_address)
                if sock is None:
                    continue  # failed at once: the next address now
                if sock.fileno() in attempts:  # cannot happen; never lose track of a socket
                    raise RuntimeError("duplicate descriptor")
                attempts[sock.fileno()] = sock
                poller.register(sock, select.POLLOUT)
                next_attempt = now + ATTEMPT_DELAY
                continue
            if not attempts:
                raise errors[0] if errors else OSError("no address to connect to")
            wait = deadline.left()  # raises TimeoutError once none is left
            if waiting:
                wait = min(wait, max(0.0, next_attempt - now))
            for fd, events in poller.poll(math.ceil(wait * 1000)):
                sock = attempts.pop(fd)
                poller.unregister(fd)
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error == 0 and not events & _FAILED:
                    winner = sock
                    sock.setblocking(True)
                    return sock
                sock.close()
                errors.append(OSError(error or errno.ECONNREFUSED, os.strerror(error or errno.ECONNREFUSED)))
                next_attempt = time.monotonic()  # a failure starts the next attempt at once
    finally:
        for sock in attempts.values():
            if sock is not winner:
                sock.close()


def _start(address, socket_options, errors: list, source_address: str | None) -> socket.socket | None:
    """A non-blocking connect to one getaddrinfo() entry; None (error noted) if it failed at once."""
    family, type_, proto, _, sockaddr = address
    sock = socket.socket(family, type_, proto)  # EMFILE and the like propagate: the monitor's failure
    try:
        for option in socket_options or ():
            sock.setsockopt(*option)
        if source_address:  # the host's check.source_address (a region's); the port chosen at connect()
            if _BIND_NO_PORT is not None:
                sock.setsockopt(socket.IPPROTO_IP, _BIND_NO_PORT, 1)
            sock.bind((source_address, 0))
        sock.setblocking(False)
        error = sock.connect_ex(sockaddr)
    except OSError as exc:
        sock.close()
        errors.append(exc)
        return None
    if error in _IN_PROGRESS or error == 0:
        return sock  # 0 (connected at once) is reported writable by poll() too
    sock.close()
    errors.append(OSError(error, os.strerror(error)))
    return None
