"""The web listener's one write: a push monitor's pings, /ping/TOKEN[/start|/fail|/EXIT_CODE].

GET, HEAD and POST, as Healthchecks takes them (curl, wget and a browser all work). The slot
rules are check/push.py's; the statement is db/push.sql's `ping`.

It sits outside the pages' layers (PingEndpoint is the outermost middleware): a job proves
itself with its token, not with web.auth; the response cache would answer the next ping of a
job with the first one's 200 and record nothing; and the pages' security headers mean nothing
to curl. A misbehaving script cannot load the database: a token of the wrong shape is refused
before anything, each token has its budget (web.ping_rate_limit a minute, else 429), a body over
10 KB is refused (413) before it is read whole, and pings are written by one thread on one
connection of their own, the pings that arrive together in one transaction (web/pingwriter.py);
a 200 is sent only once the ping's row is committed.
"""

import os
import socket

import psycopg2
from starlette.responses import PlainTextResponse

from .. import logs
from ..alerts.settings import alert_defaults
from ..check import push
from ..db import pushstore
from ..errors import DatabaseUnavailable
from .pingwriter import PingWriter
from .pool import PingPool
from .ratelimit import RateLimiter, TooMany

PREFIX = "/ping/"
PING_POOL_SIZE = 1          # the writer's connection: pings must not crowd out the producer and consumers
METHODS = ("GET", "HEAD", "POST")


def _text(status: int, text: str, headers: dict | None = None) -> PlainTextResponse:
    return PlainTextResponse(text + "\n", status_code=status,
                             headers={"Cache-Control": "no-store", **(headers or {})})


NOT_FOUND = "not found"     # no detail: an unknown token and a malformed path look the same


class PingEndpoint:
    """ASGI middleware: answers /ping/..., passes everything else to the pages."""

    def __init__(self, app, cfg, writer: PingWriter):
        self.app = app
        self.writer = writer
        self.limiter = RateLimiter(cfg.web.ping_rate_limit)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            return await self.app(scope, receive, send)
        response = await self.answer(scope, receive)
        if response is not None:          # None: the client went away while sending its body
            await response(scope, receive, send)

    async def answer(self, scope, receive):
        if scope["method"] not in METHODS:
            return _text(405, "method not allowed: use GET, HEAD or POST", {"Allow": ", ".join(METHODS)})
        parts = scope["path"][len(PREFIX):].split("/")
        token = parts[0]
        signal = push.parse_signal(parts[1] if len(parts) == 2 else None) if len(parts) <= 2 else None
        if signal is None or not push.TOKEN_FORM.fullmatch(token):
            return _text(404, NOT_FOUND)
        token_hash = push.token_hash(token)
        try:
            self.limiter.take(token_hash.hex())
        except TooMany as e:
            return _text(429, f"too many pings for this token: retry in {e.retry_after} s",
                         {"Retry-After": str(e.retry_after)})
        body = await _read_body(scope, receive)
        if body is None:
            return None
        if body is False:
            return _text(413, f"request body over {push.MAX_MESSAGE_BYTES // 1024} KB")
        kind, code = signal
        said = push.message(body)
        error_kind = error = None
        if kind == push.FAILURE:
            error_kind, error = push.ERROR_KIND_FAILED, push.failure_error(code, said)
        try:
            found = await self.writer.record(pushstore.Ping(token_hash, kind, error_kind, error, said))
        except (DatabaseUnavailable, psycopg2.OperationalError) as e:
            logs.get().warning("ping not recorded: database unavailable", error=str(e).strip()[:200])
            return _text(503, "database unavailable")
        except pushstore.SlotContended as e:
            logs.get().warning("ping not recorded: its slot kept moving; the job is told to retry", error=str(e))
            return _text(503, "busy: retry the ping", {"Retry-After": "1"})
        return _text(200, "OK") if found else _text(404, NOT_FOUND)


def ping_writer(cfg, dsn: str) -> PingWriter:
    """The listener's writer of pings, on a PingPool of its own."""
    return PingWriter(PingPool(dsn, cfg.database.timeout, size=PING_POOL_SIZE),
                      owner=f"{socket.gethostname()}:web:{os.getpid()}",      # checked_by of the results
                      alert_defaults=alert_defaults(cfg))


async def _read_body(scope, receive):
    """The request body, at most MAX_MESSAGE_BYTES: bytes; False when longer (checked on the
    Content-Length first, else while reading, so a big body is never held); None when the client
    disconnected."""
    limit = push.MAX_MESSAGE_BYTES
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            if not value.isdigit() or int(value) > limit:
                return False
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if len(body) > limit:
            return False
        if not message.get("more_body", False):
            return bytes(body)
