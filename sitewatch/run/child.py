"""The child side of `sitewatch run` (gunicorn's workers/base.py): what every
producer and consumer process does before and around its own loop.

A child starts clean (spawn start method): default signal handlers, then its
own; SIGINT ignored (the supervisor owns Ctrl-C); logging set up for its role;
database connections opened only here, after the process exists.
"""

import ctypes
import os
import pickle
import random
import select
import signal
import sys
import time

from .. import logs
from ..errors import SchemaTooNew
from ..operations import sentry

# Exit codes a child uses to talk to the supervisor.
EXIT_STOPPED = 0          # asked to stop, stopped
EXIT_BOOT_ERROR = 3       # cannot run, and restarting will not help (schema too new, bad config)

STATS_INTERVAL = 5.0      # seconds between stats messages to the supervisor
# A stats message is written to the pipe in one write of at most PIPE_BUF bytes, which the
# kernel makes atomic: a child killed or stopped mid-send never leaves half a message that
# would block the supervisor's read.
MAX_STATS_BYTES = getattr(select, "PIPE_BUF", 512) - 8

_PR_SET_PDEATHSIG = 1


class ChildContext:
    """What a child's loop needs from its process: stop requests, sleeping, heartbeats, stats."""

    def __init__(self, role: str, cfg, dsn: str, heartbeat, stats_conn, parent_pid: int):
        self.role = role
        self.cpu = None            # the CPU a consumer is pinned to, if any
        # The roles read it here, not from this module: child.run() imports them.
        self.stats_interval = STATS_INTERVAL
        self.cfg = cfg
        self.dsn = dsn
        self._heartbeat = heartbeat
        self._stats_conn = stats_conn     # write end of this child's own pipe to the supervisor
        self._parent_pid = parent_pid
        self.stop_requested = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    # Signal handling: the handler only records; the loop acts.
    def install_signals(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, self._handle_term)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)

    def _handle_term(self, signum, frame):
        self.stop_requested = True

    def should_stop(self) -> bool:
        if not self.stop_requested and os.getppid() != self._parent_pid:
            # The supervisor died (even kill -9): nobody would restart or stop us.
            logs.get().warning("supervisor gone, stopping")
            self.stop_requested = True
        return self.stop_requested

    def wake(self) -> None:
        """Interrupt sleep(); safe from any thread."""
        try:
            os.write(self._wake_w, b"w")
        except BlockingIOError:
            pass  # the pipe is full: a wake-up is already pending

    def sleep(self, seconds: float, fds=()) -> list:
        """Sleep until `seconds` pass, wake() is called, a signal arrives or an fd is readable.

        poll(), not select(): select() refuses descriptors of 1024 and more, which a
        consumer with a thousand check sockets open gets for its database connection.
        """
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        by_number = {}
        for fd in fds:
            number = fd if isinstance(fd, int) else fd.fileno()
            by_number[number] = fd
            poller.register(number, select.POLLIN)
        try:
            events = poller.poll(max(0.0, seconds) * 1000.0)
        except InterruptedError:
            events = []
        ready = {number for number, _ in events}
        if self._wake_r in ready:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
        return [fd for number, fd in by_number.items() if number in ready and number != self._wake_r]

    def heartbeat(self) -> None:
        self._heartbeat.value = time.monotonic()

    def send_stats(self, stats: dict) -> None:
        data = pickle.dumps((self.role, stats))
        if self._stats_conn is None:
            return
        if len(data) > MAX_STATS_BYTES:     # a bug, not a condition: say so instead of losing counts
            logs.get().error("stats message too large for one pipe write; dropped",
                             size=len(data), limit=MAX_STATS_BYTES, keys=sorted(stats))
            return
        try:
            self._stats_conn.send_bytes(data)
        except Exception:  # the supervisor is gone (EPIPE): stats must never stop checking
            self._stats_conn = None


def _die_with_parent() -> None:
    """Linux: get SIGTERM when the supervisor dies, so no orphan keeps checking sites."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            pass  # getppid() polling in should_stop() still covers it


def pin_to_cpu(index: int) -> int | None:
    """Keep this process on one CPU (the index-th we may use); returns it, or None if unsupported.

    A consumer's check threads hand the GIL to each other thousands of times a second;
    when they run on different cores every hand-off crosses cores, which measured twice
    as slow as the same threads kept on one core (bench/throughput.py, docs/benchmarks.md).
    """
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    cpu = cpus[index % len(cpus)]
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:
        return None
    return cpu


def run(role: str, cfg, dsn: str, heartbeat, stats_conn, parent_pid: int) -> None:
    """Entry point of a child process (multiprocessing target)."""
    _die_with_parent()
    random.seed()
    try:
        import setproctitle
        setproctitle.setproctitle(f"sitewatch: {role.replace('-', ' ')}")
    except ImportError:
        pass
    logs.configure(cfg.log.level, cfg.log.format, role=role)
    sentry.init(cfg.sentry.dsn, role, dsn)   # every role reports (when configured), flushed below
    ctx = ChildContext(role, cfg, dsn, heartbeat, stats_conn, parent_pid)
    ctx.install_signals()
    ctx.heartbeat()
    if ctx.should_stop():
        sys.exit(EXIT_STOPPED)
    log = logs.get()
    try:
        if role == "producer":
            from .producer import Producer
            Producer(ctx).run()
        elif role == "maintenance":
            from ..history.maintenance import Maintenance
            Maintenance(ctx).run()
        elif role == "notifier":
            from ..alerts.notifier import Notifier
            Notifier(ctx).run()
        elif role == "web":
            from ..web.server import run_child
            run_child(ctx)
        else:
            from .consumer import Consumer
            if cfg.consumer.pin_cpu:
                ctx.cpu = pin_to_cpu(int(role.rpartition("-")[2]) - 1)
            Consumer(ctx).run()
    except SchemaTooNew as e:
        log.error("cannot run", error=str(e))
        sys.exit(EXIT_BOOT_ERROR)
    except Exception:
        log.exception("crashed")
        sys.exit(1)
    finally:
        sentry.flush()
    sys.exit(EXIT_STOPPED)
