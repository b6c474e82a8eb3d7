"""Group commit for pings: the pings that arrive together are written in one transaction.

A ping handler (web/ping.py) hands its ping to PingWriter.record and waits. One writer thread,
with one connection of its own (PingPool), takes everything queued (at most MAX_BATCH), writes
it with pushstore.ping_many in one transaction, and only after the commit answers each waiting
handler: a 200 means the ping's row is committed. While a batch is written the next one
queues, so under load a batch is whatever arrived during the previous commit, and an idle
listener writes a lone ping at once (no waiting for company).

Why: one statement and one commit per ping, on two connections, held the listener to a few
hundred pings a second with PostgreSQL busy; a batch costs one round trip and one commit.

Failures: when the connection is gone, every ping of the batch gets the error (the handler
answers 503, the job retries). Any other error (one ping's bad data, a cron monitor's slot that
kept moving, a lost lock race) rolls the batch back and each of its pings is written again
alone, so one ping cannot fail the others. The queue is bounded by the listener's connection
cap (web.max_connections): each queued ping is a request waiting for its answer.
"""

import asyncio
import concurrent.futures
import queue
import threading

from .. import logs
from ..db import pushstore
from ..db.database import is_connection_error, is_transient
from ..errors import DatabaseUnavailable
from .pool import PingPool

MAX_BATCH = 200     # pings a transaction at most: bounds how long a batch holds its monitors' rows
_STOP = object()


class PingWriter:
    def __init__(self, pool: PingPool, owner: str, alert_defaults: dict):
        self.pool, self.owner, self.alert_defaults = pool, owner, alert_defaults
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    async def record(self, ping: pushstore.Ping) -> bool:
        """Write `ping`; returns whether its token is a monitor's, once the row is committed.
        Raises what the write raised (DatabaseUnavailable, psycopg2 errors, SlotContended)."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:        # not after close(): nothing would answer
            if self._closed:
                raise DatabaseUnavailable("the web server is stopping")
            if self._thread is None:    # lazily, in the process that serves (after spawn)
                self._thread = threading.Thread(target=self._run, name="ping-writer", daemon=True)
                self._thread.start()
            self._queue.put((ping, future))
        return await asyncio.wrap_future(future)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stopping = any(item is _STOP for item in batch)
            # A handler cancelled meanwhile (server stopping) waits for nothing: its ping is not
            # written. The others' futures are then running, and can no longer be cancelled.
            batch = [item for item in batch if item is not _STOP and item[1].set_running_or_notify_cancel()]
            if batch:
                self._write(batch)
        self._fail_queued()

    def _write(self, batch: list) -> None:
        try:
            with self.pool.connection() as conn, conn:      # `with conn`: one transaction, committed here
                found = pushstore.ping_many(conn, [ping for ping, _ in batch], self.owner, self.alert_defaults)
        except Exception as e:       # noqa: BLE001 - every waiting handler gets an answer
            gone = isinstance(e, DatabaseUnavailable) or (is_connection_error(e) and not is_transient(e))
            if len(batch) > 1 and not gone:
                logs.get().warning("ping batch failed: writing its pings one by one", pings=len(batch),
                                   error=str(e).strip()[:200])
                for item in batch:
                    self._write([item])
                return
            if gone:        # whatever psycopg2 raised (the rollback of a dead connection: InterfaceError)
                e = DatabaseUnavailable(f"the ping writer's connection failed: {str(e).strip()[:200]}")
            for _, future in batch:
                future.set_exception(e)
            return
        for (_, future), (is_monitor, _) in zip(batch, found, strict=True):
            future.set_result(is_monitor)

    def _fail_queued(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP and item[1].set_running_or_notify_cancel():
                item[1].set_exception(DatabaseUnavailable("the web server is stopping"))

    def close(self) -> None:
        """Write what is queued, stop the thread, close the connection."""
        with self._lock:
            thread, self._closed = self._thread, True
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout=10)
        self.pool.close()
