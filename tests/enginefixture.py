"""An echo server for engine tests: any method; answers with what it received, as JSON.

    /echo                      200, {"method", "path", "headers", "body", "client", "client_cert"}
    /redirect/<status>?<url>   <status> with Location: <url>
"""

from __future__ import annotations

import http.server
import json
import ssl
import threading
from urllib.parse import unquote, urlsplit


class _Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args) -> None:
        pass

    def _answer(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if parts.path.startswith("/redirect/"):
            status = int(parts.path.rsplit("/", 1)[1])
            self._send(status, b"", {"Location": unquote(parts.query)})
            return
        peer_cert = self.request.getpeercert() if isinstance(self.request, ssl.SSLSocket) else None
        echo = {"method": self.command, "path": self.path, "headers": [[k.lower(), v] for k, v in self.headers.items()],
                "body": body.decode("latin-1"), "client": self.client_address[0], "client_cert": bool(peer_cert)}
        self._send(200, json.dumps(echo).encode(), {"Content-Type": "application/json", "X-Echo": "yes"})

    def _send(self, status: int, body: bytes, headers: dict) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _answer


class EchoServer:
    def __init__(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        server_class = type("Server", (http.server.ThreadingHTTPServer,), {"daemon_threads": True})
        if ":" in host:
            import socket
            server_class.address_family = socket.AF_INET6
        self.server = server_class((host, 0), _Echo)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.scheme = "https" if tls else "http"
        self.host = f"[{host}]" if ":" in host else host
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/echo") -> str:
        return f"{self.scheme}://{self.host}:{self.server.server_address[1]}{path}"

    def __enter__(self) -> EchoServer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.shutdown()
        self.server.server_close()
