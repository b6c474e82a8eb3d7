"""Local HTTP targets for the benchmarks: nginx when installed, a Python fallback
otherwise; a "delay" server that answers each URL after its own delay (internet-like
latency); and a "hanging" server that accepts connections and never answers.

Everything listens on 127.0.0.1 only.
"""

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NGINX_CONF = """
{head}
worker_processes {workers};
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 32768; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_timeout 5;
    server {{
        listen 127.0.0.1:{port} backlog=8192 reuseport;
        {location}
    }}
}}
"""


FAST_LOCATION = 'location / { default_type text/plain; return 200 "sitewatch bench ok\\n"; }'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port}")


def stop_process(proc) -> None:
    if proc:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def serve_in_thread(handle, port: int, backlog: int) -> asyncio.AbstractEventLoop:
    """Run an asyncio server calling `handle(reader, writer)` on 127.0.0.1:port in a daemon
    thread; returns its loop (stop it with loop.call_soon_threadsafe(loop.stop))."""
    ready = threading.Event()
    loop = asyncio.new_event_loop()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=backlog)
        ready.set()
        async with server:
            await server.serve_forever()

    def run():
        try:
            loop.run_until_complete(main())
        except RuntimeError:
            pass  # loop stopped

    threading.Thread(target=run, daemon=True).start()
    ready.wait(10)
    return loop


class FastTarget:
    """nginx returning 200 for every path, or a threaded Python server when nginx is absent."""

    def __init__(self, workers: int = 1):
        self.workers = workers
        self.port = free_port()
        self.kind = None
        self._proc = None
        self._server = None
        self._dir = None

    def start(self) -> "FastTarget":
        nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
        if nginx:
            self._dir = tempfile.mkdtemp(prefix="sitewatch-nginx-")
            conf = os.path.join(self._dir, "nginx.conf")
            with open(conf, "w") as f:
                f.write(NGINX_CONF.format(head="", workers=self.workers, prefix=self._dir, port=self.port,
                                          location=FAST_LOCATION))
            self._proc = subprocess.Popen([nginx, "-c", conf, "-p", self._dir],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.kind = f"nginx ({self.workers} worker{'s' if self.workers > 1 else ''})"
        else:
            class Handler(BaseHTTPRequestHandler):
                def do_GET(self):
                    body = b"sitewatch bench ok\n"
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

                def log_message(self, *args):
                    pass
            self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
            self._server.daemon_threads = True
            threading.Thread(target=self._server.serve_forever, daemon=True).start()
            self.kind = "python ThreadingHTTPServer (fallback: nginx not installed)"
        wait_for_port(self.port)
        return self

    def pids(self) -> list[int]:
        return [self._proc.pid] if self._proc else []

    def stop(self) -> None:
        stop_process(self._proc)
        if self._server:
            self._server.shutdown()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)


class HangingTarget:
    """Accepts connections, reads what comes, never answers: every check to it times out."""

    def __init__(self):
        self.port = free_port()
        self._loop = None

    def start(self) -> "HangingTarget":
        async def hold(reader, writer):
            try:
                while await reader.read(65536):
                    pass
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        self._loop = serve_in_thread(hold, self.port, backlog=4096)
        return self

    def stop(self) -> None:
        if self._loop:
            self._loop.call_soon_threadsafe(self._loop.stop)


ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"   # Debian: libnginx-mod-http-echo

# /d/<seconds>/<anything>: answer 200 after <seconds>; echo_sleep is a timer, no CPU.
DELAY_LOCATION = 'location ~ ^/d/(?<delay>[0-9.]+)/ { default_type text/plain; echo_sleep $delay; echo "ok"; }'


class DelayTarget:
    """Answers /d/<seconds>/... with 200 after <seconds>: nginx with the echo module's echo_sleep
    (no CPU while waiting) when installed, else an asyncio server (reported as such)."""

    def __init__(self):
        self.port = free_port()
        self.kind = None
        self._proc = None
        self._dir = None
        self._loop = None

    def url(self, delay: float, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/d/{delay:g}/{name}"

    def start(self) -> "DelayTarget":
        nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
        if nginx and os.path.exists(ECHO_MODULE):
            self._dir = tempfile.mkdtemp(prefix="sitewatch-nginx-delay-")
            conf = self._write_conf(DELAY_LOCATION)
            self._proc = subprocess.Popen([nginx, "-c", conf, "-p", self._dir],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.kind = "nginx + echo_sleep (1 worker)"
        else:
            self._start_asyncio()
            self.kind = "python asyncio delay server (fallback: nginx or libnginx-mod-http-echo not installed)"
        wait_for_port(self.port)
        return self

    def _write_conf(self, location: str) -> str:
        conf = os.path.join(self._dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(head=f"load_module {ECHO_MODULE};", workers=1, prefix=self._dir,
                                      port=self.port, location=location))
        return conf

    def deny(self, address: str) -> None:
        """From now on answer 403 to requests from `address` (a region's source address: its
        network to every site "down"), by reloading nginx (SIGHUP). nginx only."""
        if self._proc is None:
            raise RuntimeError("deny needs nginx (libnginx-mod-http-echo)")
        self._write_conf(f"deny {address}; {DELAY_LOCATION}")
        self._proc.send_signal(signal.SIGHUP)

    def _start_asyncio(self) -> None:
        async def answer(reader, writer):
            try:
                request = await reader.readuntil(b"\r\n\r\n")
                path = request.split(b" ", 2)[1].decode()
                parts = path.split("/")
                await asyncio.sleep(float(parts[2]) if len(parts) > 2 and parts[1] == "d" else 0)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
                await writer.drain()
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                pass
            finally:
                writer.close()

        self._loop = serve_in_thread(answer, self.port, backlog=8192)

    def pids(self) -> list[int]:
        return [self._proc.pid] if self._proc else []

    def stop(self) -> None:
        stop_process(self._proc)
        if self._loop:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
