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

The exchange is written once, as steps (steps.py). On the curl engine the consumer's loop
drives them, after libcurl connected (curl_connect.py: the same resolver, Happy Eyeballs and
source address as its HTTP checks); elsewhere (the urllib3 engine, `sitewatch check`) the
stream connects and the steps are driven on the check's own thread.
"""

from __future__ import annotations

import os

from ..regex import search_bytes
from .address import normalise_host_port
from .engine import WAITING, Failure, Request, Response, unexpected
from .steps import READ, WRITE, Wait, run
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
    """The check on this thread (the urllib3 engine's consumers, `sitewatch check`): the
    stream's blocking connect, then the exchange's steps driven here."""
    return Stream.run(request, _exchange)


def steps_on_loop(request: Request) -> bool:
    """Every tcp:// check runs on the curl loop: libcurl's resolver does not block it."""
    return True


def steps(request: Request):
    """The check as steps for the curl loop (steps.py): libcurl connects, then the exchange's
    steps run on its socket. Returns the Response; never raises."""
    stream = None
    try:
        from .curl_connect import Connect  # pycurl: only the curl loop asks for steps
        stream = Stream(request)
        connection = Connect(stream)
        code, message = yield connection
        fd = connection.socket(code, message)
        return (yield from _talk(stream, fd))
    except Failure as exc:
        return stream.failed(exc)
    except Exception as exc:
        if stream is None:   # Stream(request) itself failed: a bug of ours, or out of memory
            return unexpected(exc, "the site", ())
        return stream.failed(stream.classify(exc))


def _exchange(stream: Stream) -> Response:
    sock = stream.open()
    try:
        sock.setblocking(False)
        return run(_talk(stream, sock.fileno()))
    finally:
        stream.watch(None)     # before closing: the fd number may be reused by another check
        sock.close()


def _talk(stream: Stream, fd: int):
    """Steps on a connected, non-blocking socket: send, then read the answer for `expect`."""
    request = stream.request
    if request.body:
        stream.stage = SENDING
        yield from _send(stream, fd, request.body)
    body = None
    if request.expect is not None:
        stream.stage = WAITING
        body = yield from _read(stream, fd, request.expect)
    return stream.response(body)


def _send(stream: Stream, fd: int, data: bytes):
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
            continue
        except BlockingIOError:
            pass
        if not (yield Wait(fd, WRITE, stream.deadline.at)):
            raise TimeoutError("total deadline passed")


def _read(stream: Stream, fd: int, pattern: str):
    """The answer, up to MAX_READ bytes: read until `pattern` matches, the server closes, or the
    deadline passes (what was read by then is returned; nothing at all is a timeout). The match
    is probe.judge's (regex.search_bytes: bytes when they are UTF-8, so no decoding in Python)."""
    data = bytearray()
    while len(data) < MAX_READ:
        try:
            chunk = os.read(fd, MAX_READ - len(data))
        except BlockingIOError:
            if (yield Wait(fd, READ, stream.deadline.at)):
                continue
            break               # the deadline passed: the expect is judged on what came, if anything
        except OSError:
            if data:
                break           # the expect is judged on what came
            raise
        if not chunk:           # closed by the server (or cut by the watchdog at the deadline)
            break
        if not data:
            stream.mark("first_byte")
        data += chunk
        if search_bytes(pattern, bytes(data)):
            break
    if not data and stream.deadline.passed():
        raise TimeoutError("total deadline passed")
    return bytes(data)
