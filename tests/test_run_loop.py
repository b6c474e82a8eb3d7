"""The run loop's own mechanics, in-process against the real database and real sockets:
the child's sleep, a consumer's claim/record cycle, the producer's pacing.

A consumer or producer here is the real class, given the real ChildContext a child
process builds; only the process around it is this test's (no supervisor, no fork).
Whole-program behaviour (signals, orphans, reloads) is in tests/test_run.py and
tests/test_faults.py, through the real `sitewatch run`.
"""

import os
import resource
import socket
import time
from types import SimpleNamespace

import pytest

from sitewatch import config
from sitewatch.run.child import ChildContext
from tests.test_run import query, scalar, wait_until


def make_ctx(dsn: str, role: str = "consumer-1", **settings) -> ChildContext:
    """The context a child process gets, with settings given as SITEWATCH_* environment."""
    env = {"MIN_PERIOD": "1", **{f"SITEWATCH_{k.upper()}": str(v) for k, v in settings.items()}}
    cfg = config.load(env)
    return ChildContext(role, cfg, dsn, SimpleNamespace(value=0.0), None, os.getppid())


@pytest.fixture
def high_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"hard RLIMIT_NOFILE {hard} < 2048")
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096) if hard != resource.RLIM_INFINITY else 4096, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# --- A1: descriptors of 1024 and more ---------------------------------------------------------


def test_child_sleep_wakes_on_a_socket_numbered_above_1023(dsn, high_fd_limit):
    # A consumer with a thousand check sockets open gets fd 1100 for its database connection
    # after a reconnect; select.select() raised "filedescriptor out of range" and the consumer died.
    ctx = make_ctx(dsn)
    a, b = socket.socketpair()
    high = os.dup2(a.fileno(), 1500)
    try:
        high_sock = socket.socket(fileno=high)
        assert ctx.sleep(0.05, [high_sock]) == []                # nothing to read: times out
        b.send(b"x")
        t0 = time.monotonic()
        assert ctx.sleep(5.0, [high_sock]) == [high_sock]       # readable: returned at once
        assert time.monotonic() - t0 < 1.0
        ctx.wake()
        assert ctx.sleep(5.0, []) == []                         # wake() still interrupts
        assert time.monotonic() - t0 < 2.0
    finally:
        high_sock.close()
        a.close()
        b.close()
