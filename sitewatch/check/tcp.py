"""`tcp://HOST:PORT` monitors: connect; optionally send a line and expect an answer.

Up means the connection was accepted within the deadline (Happy Eyeballs across the name's
addresses, like HTTP: stream.py). With `send`, those bytes are written once connected. With
`expect` (an RE2 regex, stored in the `regex` column and judged by probe.judge like one),
the answer is read until the regex matches, MAX_READ bytes were read, the server closed, or
the deadline passed with something read (then the regex is judged on it: error_kind `regex`);
nothing at all by the deadline is a `timeout`. Without `expect` nothing is read: a server
that speaks only when spoken to (PostgreSQL, Redis) is up when it accepts.

`send` is stored in the `body` column, as the bytes to write (its `\\r\\n` escapes decoded
when it was given: requestspec.validate_send); a ${VAR} in it is read on the checking host, like a body's.
"""

from __future__ import annotations

from ..regex import search_bytes
from .address import normalise_host_port
from .engine import WAITING, Request, Response
from .stream import Stream

SCHEME = "tcp"
SUBJECTS = frozenset({"response_time", "body"})
# Options of a monitor (urlspec.OPTION_NAMES) that mean something for this kind beyond every
# kind's own (period, timeout, name, thresholds, notify, assert, degraded, ip-version).
OPTIONS = frozenset({"send", "expect"})
MAX_READ = 1024     # `expect` looks at the first KiB of the answer (DESIGN.md section 12)
SENDING = "sending"


def normalise(url: str) -> str:
    return normalise_host_port(url, SCHEME)


def fetch(request: Request) -> Response:
    return Stream.run(request, _exchange)


def _exchange(stream: Stream) -> Response:
    request = stream.request
    sock = stream.open()
    try:
        if request.body:
            stream.stage = SENDING
            sock.sendall(request.body)
        body = None
        if request.expect is not None:
            stream.stage = WAITING
            body = _read(stream, sock, request.expect)
        return stream.response(body)
    finally:
        stream.watch(None)     # before closing: the fd number may be reused by another check
        sock.close()


def _read(stream: Stream, sock, pattern: str) -> bytes:
    """The answer, up to MAX_READ bytes: read until `pattern` matches, the server closes, or the
    deadline passes (what was read by then is returned; nothing at all is a timeout). The match
    is probe.judge's (regex.search_bytes: bytes when they are UTF-8, so no decoding in Python)."""
    data = bytearray()
    while len(data) < MAX_READ:
        try:
            sock.settimeout(stream.deadline.left())    # raises TimeoutError once none is left
            chunk = sock.recv(MAX_READ - len(data))
        except OSError:
            if data:
                break           # the expect is judged on what came
            raise
        if not chunk:           # closed by the server, or cut by the watchdog at the deadline
            break
        if not data:
            stream.mark("first_byte")
        data += chunk
        if search_bytes(pattern, bytes(data)):
            break
    if not data and stream.deadline.passed():
        raise TimeoutError("total deadline passed")
    return bytes(data)
