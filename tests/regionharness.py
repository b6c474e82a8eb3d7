"""A harness for multi-region tests (issue 21): several `sitewatch run` on one machine, each a
"region" with its own source address (127.0.0.2, .3, .4: all of 127.0.0.0/8 is this host's),
against one target that can refuse some of them.

* SourceFilteringServer: HTTP on 127.0.0.1 that answers 200 to every peer except those whose
  source address is in `server.refuse` (changeable at any time), whose connections are
  accepted and reset at once (SO_LINGER 0: an RST, as a firewall's reject does). It counts
  what it saw per source address: `server.answered`, `server.refused`.
* SitewatchRun / start_run: the real `sitewatch run` as a subprocess in its own session, for
  one DSN, with environment overrides (`SITEWATCH_REGION`, `check.source_address`, small
  consumer counts, short timings), its JSON log in a file; `stop()` sends SIGTERM, waits, and
  kills the process group when the wait times out.
* import_urls: `sitewatch url import -` of a YAML list, as a user would.

Modelled on tests/test_run.py (Run, BASE_ENV), without its pytest fixtures, so a test module
or a script can use it.
"""

from __future__ import annotations

import collections
import http.server
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.conftest import clean_env
from tests.test_run import BASE_ENV

SOURCE_ADDRESS_ENV = "SITEWATCH_CHECK__SOURCE_ADDRESS"
REGION_ENV = "SITEWATCH_REGION"      # DESIGN.md section 12: the host's region
# Short timings and one small consumer, as the run tests use: several runs side by side on 2 cores.
RUN_ENV = dict(BASE_ENV)
# What a check refused by SourceFilteringServer reports, by when the RST met it: "Connection reset
# by peer" (connect, or curl's "Recv failure: ..."), urllib3's "connection lost
# (ConnectionResetError)", or, reset before its getpeername(), "Transport endpoint is not
# connected". Never "closed without a response": that would be a FIN.
RESET_ERROR = re.compile(r"reset|not connected", re.IGNORECASE)
STOP_TIMEOUT = 15.0     # SIGTERM, then this long (above the grace period) before SIGKILL
_RESET = struct.pack("ii", 1, 0)      # SO_LINGER on, 0 s: close() sends RST, not FIN


class _Answer(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args) -> None:
        pass

    def do_GET(self) -> None:
        owner = self.server.owner
        owner._count(owner.answered, self.client_address[0])
        owner._count(owner.paths, (self.client_address[0], self.path))
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.close_connection = True

    do_HEAD = do_GET


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: SourceFilteringServer

    def process_request(self, request, client_address) -> None:
        # In the accept loop, before a handler thread: a refused peer gets an RST at once
        # (no shutdown(), which would send a FIN first).
        owner = self.owner
        if client_address[0] in owner.refuse:
            owner._count(owner.refused, client_address[0])
            request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            request.close()
            return
        super().process_request(request, client_address)


class SourceFilteringServer:
    """HTTP on 127.0.0.1 (a free port): 200 "ok" to every source address but those in `refuse`,
    which are reset at once. `answered` and `refused` count requests and connections by source
    address, `paths` the answered requests by (source address, path). A context manager; `url(path)` is its address."""

    def __init__(self, refuse=(), host: str = "127.0.0.1") -> None:
        self.refuse: set[str] = set(refuse)     # replace or change at any time
        self.answered: collections.Counter = collections.Counter()
        self.refused: collections.Counter = collections.Counter()
        self.paths: collections.Counter = collections.Counter()     # (source address, path) answered
        self._lock = threading.Lock()
        self._server = _Server((host, 0), _Answer)
        self._server.owner = self
        self.host, self.port = host, self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="source-filtering-server",
                                        daemon=True)
        self._thread.start()

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def _count(self, counter: collections.Counter, source: str) -> None:
        with self._lock:
            counter[source] += 1

    def counts(self) -> tuple[dict, dict]:
        """A snapshot: (answered, refused), each {source address: count}."""
        with self._lock:
            return dict(self.answered), dict(self.refused)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> SourceFilteringServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_env(tmp_path, dsn: str, *, region: str | None = None, source_address: str | None = None,
            env: dict | None = None) -> dict:
    """The environment of one `sitewatch run`: nothing inherited that configures sitewatch, the
    DSN, RUN_ENV, the region and source address when given, then `env` (None removes a key)."""
    full = clean_env(tmp_path, DB_DSN=dsn, **RUN_ENV)
    if region is not None:
        full[REGION_ENV] = region
    if source_address is not None:
        full[SOURCE_ADDRESS_ENV] = source_address
    for key, value in (env or {}).items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = str(value)
    return full


class SitewatchRun:
    """One `sitewatch run` process in its own session (its children share its process group)."""

    def __init__(self, tmp_path, dsn: str, *, name: str = "run", region: str | None = None,
                 source_address: str | None = None, env: dict | None = None, args=()) -> None:
        self.name = name
        self.log_path = Path(tmp_path) / f"{name}.log"
        environment = run_env(tmp_path, dsn, region=region, source_address=source_address, env=env)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sitewatch", "--log-format", "json", "run", *args],
                env=environment, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid        # also its process group's id

    def text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def events(self, event: str) -> list[dict]:
        """The complete JSON log lines with this event."""
        found = []
        for raw in self.text().splitlines(keepends=True):
            if not raw.endswith("\n"):
                break       # still being written
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict) and line.get("event") == event:
                found.append(line)
        return found

    def wait_started(self, timeout: float = 30.0, consumers: int = 1) -> None:
        """Until the producer and `consumers` consumers have logged their start; raises
        RuntimeError (with the log's end) when the run exits first or the time is up."""
        deadline = time.monotonic() + timeout
        while not (self.events("producer started") and len(self.events("consumer started")) >= consumers):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.text()[-3000:]}")
            if time.monotonic() >= deadline:
                raise RuntimeError(f"{self.name} not started after {timeout} s:\n{self.text()[-3000:]}")
            time.sleep(0.2)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM and wait, as an operator stops it; SIGKILL to the whole group when it has not
        exited within `timeout`, or children outlive it. Returns the exit code (None if killed)."""
        code = None
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.pid, signal.SIGKILL)     # children left behind, or a hung supervisor
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        return code

    def __enter__(self) -> SitewatchRun:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_run(tmp_path, dsn: str, **kwargs) -> SitewatchRun:
    """Start `sitewatch run` (SitewatchRun's keywords) and wait until its consumer is up."""
    run = SitewatchRun(tmp_path, dsn, **kwargs)
    try:
        run.wait_started()
    except BaseException:
        run.stop()
        raise
    return run


def wait_until(condition, timeout: float, what: str, interval: float = 0.2):
    """Poll `condition` until it returns something truthy; TimeoutError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def import_urls(tmp_path, dsn: str, entries: list[dict], env: dict | None = None) -> None:
    """`sitewatch url import -` with a YAML (JSON-compatible) list of entries."""
    full = clean_env(tmp_path, DB_DSN=dsn, MIN_PERIOD=1, **(env or {}))
    done = subprocess.run([sys.executable, "-m", "sitewatch", "url", "import", "-"], input=json.dumps(entries),
                          env=full, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"url import failed ({done.returncode}): {done.stderr.strip()[-500:]}")
