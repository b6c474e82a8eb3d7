"""A real, deliberately hostile HTTP server on 127.0.0.1 for probe tests.

Each path is one way a website can misbehave (hang, dribble, never end, bomb,
lie about being HTTP, ...). The server runs in background daemon threads;
`stop()` wakes every sleeping handler and shuts every open socket down, so it
returns promptly even while handlers are in the middle of hanging.

    with HostileServer() as server:
        check(Target(server.url("/hang"), timeout=2))

Pass an `ssl.SSLContext` (server side) to serve the same paths over HTTPS.
"""

from __future__ import annotations

import functools
import http.server
import socket
import ssl
import threading
import zlib
from urllib.parse import unquote, urlsplit

OK_BODY = b"hello sitewatch"
NON_UTF8_BODY = b"\xff\xfe caf\xe9 \x00 latin1 text"
REGEX_BOMB_BODY = b"a" * 100_000 + b"!"
GZIP_BOMB_DECODED_BYTES = 100 * 1024 * 1024
DRIBBLE_INTERVAL = 0.5  # seconds between bytes on the dribbling endpoints


@functools.cache
def gzip_bomb() -> bytes:
    """~100 KB of gzip that inflates to 100 MiB of zeros (computed once, ~0.3 s)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1024 * 1024)
    parts = [compressor.compress(zeros) for _ in range(GZIP_BOMB_DECODED_BYTES // len(zeros))]
    return b"".join(parts) + compressor.flush()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    # ---- plumbing

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            # Handshake here, in the handler thread, so a client that never
            # completes it cannot block the accept loop.
            self.request.settimeout(5)
            self.request.do_handshake()
            self.request.settimeout(None)
        super().setup()
        self.server.track(self.request)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.request)

    def log_message(self, format, *args) -> None:
        pass  # keep test output clean

    def pause(self, seconds: float) -> bool:
        """Sleep, but wake up at once when the server stops or the test ends (release_hanging());
        False when it has."""
        if self.server.released.wait(seconds):
            self.close_connection = True      # no response: close rather than wait for another request
            return False
        return True

    def respond(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.close_connection = True

    def raw(self, data: bytes) -> None:
        """Write bytes straight to the socket, bypassing any HTTP framing."""
        self.wfile.write(data)
        self.wfile.flush()
        self.close_connection = True

    # ---- routing

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        name, _, arg = parts.path.strip("/").partition("/")
        route = getattr(self, "route_" + name.replace("-", "_"), None)
        if route is None:
            self.respond(404, b"no such endpoint")
        else:
            route(arg, parts.query)

    do_HEAD = do_GET

    # ---- well-behaved

    def route_ok(self, arg, query) -> None:
        self.respond(200, OK_BODY, {"Content-Type": "text/plain; charset=utf-8"})

    def route_status(self, arg, query) -> None:
        self.respond(int(arg), f"status {arg}".encode())

    def route_slow(self, arg, query) -> None:
        if self.pause(float(arg)):
            self.respond(200, OK_BODY)

    def route_non_utf8(self, arg, query) -> None:
        self.respond(200, NON_UTF8_BODY, {"Content-Type": "text/plain"})

    def route_regex_bomb(self, arg, query) -> None:
        self.respond(200, REGEX_BOMB_BODY)

    def route_gzip(self, arg, query) -> None:
        self.respond(200, zlib.compress(OK_BODY, wbits=16 + zlib.MAX_WBITS), {"Content-Encoding": "gzip"})

    def route_big(self, arg, query) -> None:
        """/big/<n>: a body of exactly n bytes."""
        self.respond(200, b"x" * int(arg))

    def route_echo_headers(self, arg, query) -> None:
        self.respond(200, str(self.headers).encode("latin-1"))

    # ---- redirects

    def route_redirect(self, arg, query) -> None:
        """/redirect/<n>: a chain of n redirects ending at /ok."""
        n = int(arg)
        self.respond(302, headers={"Location": f"/redirect/{n - 1}" if n > 1 else "/ok"})

    def route_redirect_loop(self, arg, query) -> None:
        # Keeps its query string, so tests can check that it never shows in errors.
        self.respond(302, headers={"Location": "/redirect-loop" + (f"?{query}" if query else "")})

    def route_redirect_to(self, arg, query) -> None:
        """/redirect-to?<url>: one redirect to whatever the query says (percent-decoded)."""
        self.respond(301, headers={"Location": unquote(query)})

    # ---- never finishing

    def route_hang(self, arg, query) -> None:
        self.pause(3600)

    def route_dribble_headers(self, arg, query) -> None:
        self.raw(b"HTTP/1.1 200 OK\r\nX-Dribble: ")
        while self.pause(DRIBBLE_INTERVAL):
            self.raw(b"a")

    def route_dribble_body(self, arg, query) -> None:
        self.raw(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n")
        while self.pause(DRIBBLE_INTERVAL):
            self.raw(b"a")

    def route_dribble_gzip(self, arg, query) -> None:
        """A gzip body without Content-Length (it ends at EOF), valid but dribbled."""
        self.raw(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nConnection: close\r\n\r\n")
        data = zlib.compress(OK_BODY * 1000, wbits=16 + zlib.MAX_WBITS)
        self.raw(data[:20])
        for at in range(20, len(data)):
            if not self.pause(DRIBBLE_INTERVAL):
                return
            self.raw(data[at:at + 1])

    def route_endless(self, arg, query) -> None:
        self.raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (64 * 1024, b"z" * 64 * 1024)
        while not self.server.stopping.is_set():
            self.raw(chunk)  # ends with BrokenPipe/ConnectionReset once the client gives up

    def route_gzip_bomb(self, arg, query) -> None:
        self.respond(200, gzip_bomb(), {"Content-Encoding": "gzip"})

    # ---- not quite HTTP

    def route_huge_header(self, arg, query) -> None:
        self.respond(200, OK_BODY, {"X-Huge": "h" * 100 * 1024})

    def route_many_headers(self, arg, query) -> None:
        self.respond(200, OK_BODY, {f"X-Header-{i}": str(i) for i in range(250)})

    def route_close_early(self, arg, query) -> None:
        self.close_connection = True  # say nothing; finish() closes the socket

    def route_not_http(self, arg, query) -> None:
        self.raw(b"SSH-2.0-OpenSSH_9.6\r\n")

    def route_echo_request_line(self, arg, query) -> None:
        # Like a confused non-HTTP service echoing input: the request line, with
        # its query string, comes back where a status line should be.
        self.raw(self.requestline.encode("latin-1") + b"\r\n\r\n")

    def route_echo_auth_line(self, arg, query) -> None:
        # Our Authorization header echoed back where a status line should be.
        self.raw(b"AUTH " + self.headers.get("Authorization", "").encode("latin-1") + b"\r\n\r\n")

    def route_bad_header_line(self, arg, query) -> None:
        # A header line without a colon: http.client keeps going, urllib3 logs a warning.
        self.raw(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nthis line has no colon\r\nX-After: 1\r\n\r\nok")

    def route_truncated_body(self, arg, query) -> None:
        self.raw(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\nonly ten b")

    def route_bad_gzip(self, arg, query) -> None:
        self.respond(200, b"this is not gzip at all", {"Content-Encoding": "gzip"})

    def route_truncated_gzip(self, arg, query) -> None:
        """A gzip body cut before its end, with a Content-Length that matches the cut."""
        whole = zlib.compress(OK_BODY * 100, wbits=16 + zlib.MAX_WBITS)
        self.respond(200, whole[: len(whole) // 2], {"Content-Encoding": "gzip"})

    def route_truncated_deflate(self, arg, query) -> None:
        whole = zlib.compress(OK_BODY * 100)
        self.respond(200, whole[: len(whole) // 2], {"Content-Encoding": "deflate"})

    def route_deflate(self, arg, query) -> None:
        """/deflate/raw or /deflate/zlib: the OK body in either deflate form."""
        wbits = -zlib.MAX_WBITS if arg == "raw" else zlib.MAX_WBITS
        compressor = zlib.compressobj(wbits=wbits)
        self.respond(200, compressor.compress(OK_BODY) + compressor.flush(), {"Content-Encoding": "deflate"})

    def route_gzip_members(self, arg, query) -> None:
        """Two concatenated gzip members: one body."""
        member = zlib.compress(OK_BODY, wbits=16 + zlib.MAX_WBITS)
        self.respond(200, member + member, {"Content-Encoding": "gzip"})

    def route_deflate_empty_blocks(self, arg, query) -> None:
        """A zlib header, then endless empty stored blocks: input that never yields output."""
        self.raw(b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nTransfer-Encoding: chunked\r\n"
                 b"Connection: close\r\n\r\n")
        self.raw(b"2\r\n\x78\x01\r\n")
        blocks = b"\x00\x00\x00\xff\xff" * 13107  # 64 KiB of empty blocks
        chunk = b"%x\r\n%s\r\n" % (len(blocks), blocks)
        while not self.server.stopping.is_set():
            self.raw(chunk)

    def route_interim(self, arg, query) -> None:
        """/interim/<codes>: interim responses (e.g. 103,102) before a 200."""
        for code in arg.split(","):
            self.raw(b"HTTP/1.1 %s Interim\r\nLink: </style.css>; rel=preload\r\n\r\n" % code.encode())
        self.respond(200, OK_BODY)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True  # a hanging handler must never keep the interpreter alive
    block_on_close = False  # stop() shuts sockets down instead of joining threads
    # The default backlog (5) drops SYNs when dozens of checks connect at once, and
    # a dropped SYN is retried only after 1 s: a fake timeout in concurrent tests.
    request_queue_size = 256

    def __init__(self, tls: ssl.SSLContext | None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.tls = tls
        self.stopping = threading.Event()
        self.released = threading.Event()     # set, then replaced, at the end of each test
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()

    def get_request(self):
        sock, address = super().get_request()
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def track(self, sock) -> None:
        with self._lock:
            self._open.add(sock)

    def untrack(self, sock) -> None:
        with self._lock:
            self._open.discard(sock)

    def shut_all(self) -> None:
        with self._lock:
            for sock in self._open:
                try:
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                except OSError:
                    pass

    def handle_error(self, request, client_address) -> None:
        pass  # clients hanging up on hostile endpoints is the normal case here


_RUNNING: set = set()       # the started servers, for release_all_hanging()


def release_all_hanging() -> None:
    """At the end of every test (tests/conftest_http.py): no hanging handler outlives its test."""
    for server in list(_RUNNING):
        server.release_hanging()


class HostileServer:
    """Start/stop wrapper; also a context manager."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self._tls = tls
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> HostileServer:
        gzip_bomb()  # precompute outside any test's deadline
        self._server = _Server(self._tls)
        # A short poll interval makes shutdown() (and so stop()) quick.
        serve = functools.partial(self._server.serve_forever, poll_interval=0.05)
        self._thread = threading.Thread(target=serve, name="hostile-server", daemon=True)
        self._thread.start()
        _RUNNING.add(self)
        return self

    def release_hanging(self) -> None:
        """End the handlers sleeping in pause() (/hang, /slow, the dribbles): they hold a thread
        and a socket each, for an hour for /hang, long after the test that asked for them."""
        if self._server is not None:
            released, self._server.released = self._server.released, threading.Event()
            released.set()

    def stop(self) -> None:
        if self._server is None:
            return
        _RUNNING.discard(self)
        self._server.stopping.set()
        self._server.released.set()  # wakes every handler sleeping in pause()
        self._server.shutdown()  # ends serve_forever
        self._server.shut_all()  # unblocks handlers stuck writing to a slow client
        self._server.server_close()
        self._thread.join(timeout=5)
        self._server = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, path: str = "/", *, userinfo: str | None = None) -> str:
        scheme = "https" if self._tls is not None else "http"
        at = f"{userinfo}@" if userinfo else ""
        return f"{scheme}://{at}127.0.0.1:{self.port}{path}"

    def __enter__(self) -> HostileServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
