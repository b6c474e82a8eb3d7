"""Running the web app: uvicorn on a socket we bind ourselves.

Binding first lets "address in use" be one clear line (exit 2) before anything
else starts. In `sitewatch run` the same server runs as the supervised `web`
child: uvicorn's tick beats the heartbeat (so a stuck event loop is noticed) and
stops the server when the child is asked to stop or the supervisor dies; the
child context owns the signals, not uvicorn.

Limits (guard.py): a request timeout (web.request_timeout) for silent and half-sent
requests, at most web.max_connections connections (kept under the open-file limit; an idle
one makes room for a new one), a backlog of BACKLOG, and accept() failures logged once a
minute instead of in a flood.
"""

import asyncio
import contextlib
import errno
import signal
import socket
import sys
import time

import uvicorn

from .. import logs
from ..errors import BadInput
from ..operations.listener import parse_listen
from . import guard

GRACEFUL_SHUTDOWN = 5.0     # seconds open requests get to finish on stop
BIND_RETRY = 2.0            # seconds past the grace period the web child waits for its port
BACKLOG = 128               # connections the kernel queues until we accept them (listen() and uvicorn's accept loop)


def bind(listen: str) -> socket.socket:
    """A listening socket on web.listen; BadInput (exit 2) when the address is taken or wrong."""
    host, port = parse_listen(listen)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, proto, _, address = infos[0]
        # getaddrinfo's proto (IPPROTO_TCP), not 0: asyncio sets TCP_NODELAY only on accepted
        # sockets whose proto says TCP, and without it a keep-alive response (headers, then the
        # body: two writes) waited ~40 ms for the client's delayed ACK.
        sock = socket.socket(family, socket.SOCK_STREAM, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except socket.gaierror as e:
        raise BadInput(f"web.listen {listen}: cannot resolve {host}: {e.strerror}") from None
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise BadInput(f"web.listen {listen}: address already in use") from None
        raise BadInput(f"web.listen {listen}: cannot listen: {e.strerror}") from None
    sock.set_inheritable(False)
    return sock


def address_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: our caller decides when to stop."""

    def __init__(self, config, on_tick=None):
        super().__init__(config)
        self._on_tick = on_tick

    @contextlib.contextmanager
    def capture_signals(self):
        yield

    async def serve(self, sockets=None):
        # asyncio logs every failed accept() (out of file descriptors) with a traceback, up to
        # `backlog` times per wakeup: once a minute, with a count, instead.
        asyncio.get_running_loop().set_exception_handler(guard.AcceptErrorLog())
        await super().serve(sockets)

    async def on_tick(self, counter: int) -> bool:
        if self._on_tick is not None and counter % 10 == 0:     # once a second
            if self._on_tick():
                self.should_exit = True
        return await super().on_tick(counter)


def _uvicorn_config(app, cfg) -> uvicorn.Config:
    """uvicorn with the limits of guard.py: a request timeout, at most `cap` connections (an idle
    one makes room for a new one), and limit_concurrency as a backstop above that cap (it
    answers 503 once connections or requests reach it, which the cap keeps from happening)."""
    cap = guard.connection_cap(cfg.web.max_connections)
    return uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", server_header=False,
                          timeout_graceful_shutdown=GRACEFUL_SHUTDOWN, proxy_headers=False,
                          http=guard.protocol_class(cfg.web.request_timeout, cap), ws="none",
                          limit_concurrency=cap + 1, backlog=BACKLOG)


def serve(cfg, dsn: str, sock: socket.socket, on_tick=None) -> None:
    """Serve until on_tick() returns True (child) or SIGTERM/SIGINT (standalone, on_tick None)."""
    from .app import create_app
    app = create_app(cfg, dsn)
    server = _Server(_uvicorn_config(app, cfg), on_tick=on_tick)
    if on_tick is None:
        def stop(signum, frame):             # handler only records; uvicorn's loop acts
            if server.should_exit and signum == signal.SIGINT:
                server.force_exit = True
            server.should_exit = True
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
    try:
        server.run(sockets=[sock])
    finally:
        app.state.pool.close()
        app.state.ping_writer.close()
        if app.state.write_pool is not None:
            app.state.write_pool.close()


def run_child(ctx) -> None:
    """The `web` child of `sitewatch run`."""
    log = logs.get()
    # After SIGHUP the web child being replaced holds the port until it has drained (a second or
    # two): keep trying for a while before calling the address taken.
    deadline = time.monotonic() + ctx.cfg.supervisor.grace_period + BIND_RETRY
    while True:
        try:
            sock = bind(ctx.cfg.web.listen)
            break
        except BadInput as e:
            if "in use" not in str(e) or time.monotonic() >= deadline or ctx.should_stop():
                # Not fatal to monitoring: the supervisor restarts us with backoff, checks go on.
                log.error("web server cannot start", error=str(e))
                sys.exit(1)
        ctx.heartbeat()
        ctx.sleep(0.2)
    log.info("web server listening", url=f"http://{address_of(sock)}/")

    def tick() -> bool:
        ctx.heartbeat()
        return ctx.should_stop()
    serve(ctx.cfg, ctx.dsn, sock, on_tick=tick)
    log.info("web server stopped")


def run_alone(cfg, dsn: str, sock: socket.socket) -> int:
    """`sitewatch web`: the same server in the foreground, on a socket from bind()."""
    print(f"sitewatch web: serving on http://{address_of(sock)}/", flush=True)
    logs.get().info("web server listening", url=f"http://{address_of(sock)}/")
    serve(cfg, dsn, sock)
    return 0
