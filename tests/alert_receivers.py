"""Real notification receivers on 127.0.0.1 for the alert tests.

* WebhookReceiver: an HTTP server that records every POST (json:// and Mattermost's mmost://
  both POST JSON). Its behaviour can be switched while it runs: answer 200, fail the next N
  requests with 500, hang (read the request, never answer), or black-hole (stop accepting:
  connections wait in the kernel's backlog and are dropped unread on `reopen()`).
* SmtpReceiver: aiosmtpd's real SMTP server (mailto://), recording each message.

    with WebhookReceiver() as hook:
        url = hook.apprise_url("json")        # json://127.0.0.1:PORT/hook
        ... hook.messages()                   # [{"time": ..., "body": {...}}]
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        receiver = self.server.receiver
        try:
            body = json.loads(raw)
        except ValueError:
            body = {"raw": raw.decode("utf-8", "replace")}
        with receiver.lock:
            receiver.requests.append({"time": time.monotonic(), "path": self.path, "body": body})
            fail = receiver.fail_next > 0
            if fail:
                receiver.fail_next -= 1
            hang = receiver.hang
            hold = receiver.hold
        if hang:
            receiver.stopping.wait(3600)
            return
        if hold is not None:        # received; answered (as fail_next says) once the test sets it
            hold.wait(60)
        if fail:
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        with receiver.lock:
            receiver.delivered.append({"time": time.monotonic(), "path": self.path, "body": body})
        payload = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    receiver: WebhookReceiver


class WebhookReceiver:
    def __init__(self, port: int = 0):
        self.lock = threading.Lock()
        self.requests = []       # every POST received (including failed and hung ones)
        self.delivered = []      # POSTs answered 200
        self.fail_next = 0
        self.hang = False
        self.hold = None         # a threading.Event: requests wait for it before they are answered
        self.stopping = threading.Event()
        self.port = port
        self._server = None
        self._blackhole = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        self._server = _Server(("127.0.0.1", self.port), _Handler)
        self._server.receiver = self
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self):
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._blackhole is not None:
            self._blackhole.close()
            self._blackhole = None

    def blackhole(self):
        """Stop serving; listen without ever accepting (a request is sent into the void)."""
        self._server.shutdown()
        self._server.server_close()
        self._server = None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(16)
        self._blackhole = sock

    def reopen(self):
        """Back to normal service on the same port; black-holed connections are dropped unread."""
        if self._blackhole is not None:
            self._blackhole.close()
            self._blackhole = None
        self.stopping = threading.Event()
        self.start()

    def apprise_url(self, scheme: str = "json", path: str = "hook") -> str:
        if scheme == "mmost":
            return f"mmost://127.0.0.1:{self.port}/{path}"
        return f"{scheme}://127.0.0.1:{self.port}/{path}"

    def messages(self) -> list[dict]:
        with self.lock:
            return list(self.delivered)

    def texts(self) -> list[str]:
        """The message text of each delivered notice (json:// 'message', Mattermost 'text')."""
        out = []
        for m in self.messages():
            body = m["body"]
            out.append(str(body.get("message") or body.get("text") or body))
        return out


class SmtpReceiver:
    """A real SMTP server (aiosmtpd) on 127.0.0.1."""

    def __init__(self):
        from aiosmtpd.controller import Controller

        receiver = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                with receiver.lock:
                    receiver.mails.append({"time": time.monotonic(), "to": envelope.rcpt_tos,
                                           "data": envelope.content.decode("utf-8", "replace")})
                return "250 OK"

        self.lock = threading.Lock()
        self.mails = []
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def __enter__(self):
        self._controller.start()
        return self

    def __exit__(self, *exc):
        self._controller.stop()

    def apprise_url(self) -> str:
        return f"mailto://localhost:{self.port}?to=oncall@example.com&from=sitewatch@example.com"

    def messages(self) -> list[dict]:
        with self.lock:
            return list(self.mails)


def refused_port() -> int:
    """A port nothing listens on (connections are refused)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


class _SiteHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        status = self.server.site.next_status(self.path)
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b"ok")
        self.close_connection = True


class Site:
    """A website whose answer the test controls: a script of statuses per path, then a default.

        site.script("/a", [503, 503, 200])   # the next three GETs of /a, then site.status
    """

    def __init__(self, status: int = 200):
        self.status = status
        self.scripts = {}
        self.hits = {}
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _SiteHandler)
        self._server.site = self
        self.port = self._server.server_address[1]

    def __enter__(self):
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, statuses: list[int]) -> None:
        with self.lock:
            self.scripts[path] = list(statuses)

    def next_status(self, path: str) -> int:
        with self.lock:
            self.hits[path] = self.hits.get(path, 0) + 1
            script = self.scripts.get(path)
            return script.pop(0) if script else self.status
