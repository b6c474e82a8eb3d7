"""The HTTP listener on metrics.listen: /metrics, /healthz, /readyz.

A small threaded http.server in the supervisor: scrapes and probes are rare and
cheap, and serving them on their own threads keeps the supervisor's main loop
(reaping, restarting, heartbeats) free of network I/O.
"""

import errno
import http.server
import socket
import sys
import threading

from .. import logs
from ..errors import BadInput


def parse_listen(text: str) -> tuple[str, int]:
    """'HOST:PORT', '[V6]:PORT' or ':PORT' (all interfaces) -> (host, port); ValueError when malformed."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:9464 (empty: off)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("an IPv6 address must be in brackets, e.g. [::1]:9464")
    if any(c.isspace() or not c.isprintable() for c in host):
        raise ValueError("the host must not contain spaces or control characters")
    return host or "0.0.0.0", int(port)


def check_listen(text: str) -> str | None:
    """A config check: None when fine, else the complaint."""
    if text.strip() == "":
        return None
    try:
        parse_listen(text)
    except ValueError as e:
        return str(e)
    return None


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True   # a restart may rebind while old connections sit in TIME_WAIT

    def handle_error(self, request, client_address):
        # socketserver would print a traceback to stderr (a scraper hanging up mid-reply):
        # one debug line instead, in the log's format.
        logs.get().debug("metrics listener: request failed", error=repr(sys.exc_info()[1]))


class Listener:
    """Serves the registry and the health checks on `address` from a daemon thread."""

    def __init__(self, address: str, registry, health):
        self.address = address
        from prometheus_client.exposition import choose_encoder
        host, port = parse_listen(address)
        registry_, health_ = registry, health

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                    self._reply(200, encoder(registry_), content_type)
                elif path in ("/healthz", "/readyz"):
                    ok, why = health_.live() if path == "/healthz" else health_.ready()
                    self._reply(200 if ok else 503, f"{why}\n".encode(), "text/plain; charset=utf-8")
                else:
                    self._reply(404, b"not found: try /metrics, /healthz or /readyz\n",
                                "text/plain; charset=utf-8")

            def _reply(self, code, body, content_type):
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass   # one line per scrape would drown the log

        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        except socket.gaierror as e:
            raise BadInput(f"metrics.listen {address}: cannot resolve {host}: {e.strerror}") from None
        server_class = type("Server", (_Server,), {"address_family": family})
        try:
            self.server = server_class((host, port), Handler)
        except OSError as e:
            why = "address already in use" if e.errno == errno.EADDRINUSE else e.strerror
            raise BadInput(f"metrics.listen {address}: {why}") from None
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="metrics-listener",
                                        kwargs={"poll_interval": 0.5}, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self.server.shutdown()
        self.server.server_close()
