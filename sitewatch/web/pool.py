"""The web child's own small pools of connections: read-only ones for the pages, a writable
one for pings (PingPool), and, with a write token, two for the write API (WritePool).

Opened lazily in the process that serves (after spawn), shared by the request
threads. Every connection of ReadOnlyPool is read-only at the session level
(default_transaction_read_only), so no page, read API or badge code path can write; the
only writes are a push monitor's pings, a batch a transaction (web/pingwriter.py), and the
write API's changes, each recorded in the audit log (web/writes.py). All run in UTC so hour
and day buckets match the rollups'.
"""

import queue
import threading
from contextlib import contextmanager

from ..db.database import connect, is_connection_error
from ..errors import DatabaseUnavailable

POOL_SIZE = 4     # connections at most: the web must not crowd out the producer and consumers


class ReadOnlyPool:
    READ_ONLY = True

    def __init__(self, dsn: str, timeout: float, size: int = POOL_SIZE):
        self.dsn, self.timeout = dsn, timeout
        self._idle: queue.LifoQueue = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)

    def _open(self):
        conn = connect(self.dsn, self.timeout, "web", autocommit=True)
        with conn.cursor() as cur:
            # Short queries: parallel workers and JIT compilation cost more than they save, and
            # workers would take backends and CPU from the producer and consumers.
            cur.execute(f"SET default_transaction_read_only = {'on' if self.READ_ONLY else 'off'}; "
                        "SET TIME ZONE 'UTC'; "
                        "SET max_parallel_workers_per_gather = 0; SET jit = off")
        return conn

    @contextmanager
    def connection(self):
        """A connection for one request; broken ones are dropped, not returned to the pool."""
        if not self._slots.acquire(timeout=self.timeout):
            raise DatabaseUnavailable("all database connections of the web server are busy")
        conn = None
        try:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = self._open()
            yield conn
        except Exception as e:
            if conn is not None and is_connection_error(e):
                conn.close()
            raise
        finally:
            if conn is not None and not conn.closed:
                self._idle.put(conn)
            self._slots.release()

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


class WritePool(ReadOnlyPool):
    """The write API's connections (web/writes.py), open only when a write token is configured:
    not autocommit, for the store's `with conn:` transactions take the change and its audit row
    together. Few: writes are rare, and each is short."""

    READ_ONLY = False

    def _open(self):
        conn = super()._open()
        conn.autocommit = False
        return conn


class PingPool(WritePool):
    """The web's connection for a push monitor's pings (web/pingwriter.py: one writer thread
    writes each batch of pings in one transaction). Its own, so the read-only pool stays
    read-only and pings never wait behind pages."""
