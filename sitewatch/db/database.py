"""Opening database connections, and deciding which database to use.

Connections are opened by the process that uses them, after any fork.
"""

import socket

import psycopg2
import psycopg2.extensions

from ..errors import DatabaseUnavailable, SchemaTooNew
from ..redact import redact_dsn, scrub, written_passwords
from . import embedded


class Database:
    """Where the data lives: a configured DSN, or an embedded server we hold."""

    def __init__(self, dsn: str, timeout: float, server: embedded.EmbeddedServer | None = None):
        self.dsn = dsn
        self.timeout = timeout
        self.server = server

    @classmethod
    def open(cls, cfg) -> "Database":
        if cfg.database.dsn:
            return cls(cfg.database.dsn, cfg.database.timeout)
        server = embedded.start(cfg.database.data_dir)
        return cls(server.dsn, cfg.database.timeout, server)

    def describe(self) -> str:
        """For logs: never the password."""
        if self.server is not None:
            return f"embedded PostgreSQL at {self.server.data_dir}"
        return redact_dsn(self.dsn)

    def connect(self, role: str, autocommit: bool = False):
        return connect(self.dsn, self.timeout, role, autocommit)

    def close(self) -> None:
        if self.server is not None:
            self.server.release()
            self.server = None


def tcp_user_timeout_ms(timeout: float) -> int:
    """How long sent data may stay unacknowledged before the connection counts as dead."""
    return int(max(10.0, 2 * timeout) * 1000)


def connect(dsn: str, timeout: float, role: str, autocommit: bool = False):
    """A psycopg2 connection in UTC with connect and statement timeouts; DatabaseUnavailable on failure."""
    try:
        conn = psycopg2.connect(
            dsn,
            connect_timeout=max(1, int(round(timeout))),
            application_name=f"sitewatch {role}"[:63],
            options=f"-c statement_timeout={int(timeout * 1000)}",
            # Notice a dead server within seconds, not after the kernel's two hours: keepalives
            # for an idle connection, tcp_user_timeout for one with data unacknowledged (a
            # write or a query to a host gone silent; keepalives do not cover that case, and
            # the kernel would retransmit for about 15 minutes).
            keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=3,
            tcp_user_timeout=tcp_user_timeout_ms(timeout),
        )
    except psycopg2.Error as e:
        raise DatabaseUnavailable(f"cannot connect to the database {redact_dsn(dsn)}: "
                                  f"{describe_error(e, dsn)}") from None
    try:
        # UTC whatever PGTZ or the server's TimeZone say: retention cutoffs (`day - N days` is
        # computed in the session's zone, an hour off across a DST change) and the times the
        # commands print as UTC must not follow the session's zone. A SET, not `-c TimeZone`
        # in options: libpq sends PGTZ after the options, and it would win.
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SET TIME ZONE 'UTC'")
    except psycopg2.Error as e:
        conn.close()
        raise DatabaseUnavailable(f"cannot connect to the database {redact_dsn(dsn)}: "
                                  f"{describe_error(e, dsn)}") from None
    conn.autocommit = autocommit
    return conn


def describe_error(error: BaseException, dsn: str | None = None) -> str:
    """One line from a psycopg2 error, with any password scrubbed."""
    text = " ".join(str(error).split()) or type(error).__name__
    if dsn:
        params = {}
        try:
            params = psycopg2.extensions.parse_dsn(dsn)
        except psycopg2.Error:
            pass
        # libpq quotes a DSN it cannot parse back in its error, whole ('... in URI: "postgresql://u:pw@[::1/db"')
        # or in part ('invalid percent-encoded token: "pw%zz"'), and parse_dsn fails on the same DSN: scrub
        # the whole DSN and the password as written too, not only the one libpq would have used.
        text = text.replace(dsn, redact_dsn(dsn))
        text = scrub(text, sorted({params.get("password"), *written_passwords(dsn)} - {None, ""},
                                  key=len, reverse=True))
    return text


def is_connection_error(error: BaseException) -> bool:
    """True for errors that mean "the connection is gone": reconnect and retry."""
    if isinstance(error, (psycopg2.OperationalError, psycopg2.InterfaceError, socket.error)):
        return True
    return isinstance(error, psycopg2.Error) and getattr(error, "pgcode", None) in (
        "57P01", "57P02", "57P03", "08000", "08003", "08006", "08001", "08004")

# Errors that a retry of the same statement cures: it lost a lock race or was cancelled.
TRANSIENT_PGCODES = {"40P01": "deadlock detected", "40001": "serialization failure",
                     "55P03": "lock not available", "57014": "statement cancelled"}


def is_transient(error: BaseException) -> bool:
    """True for a database error worth retrying as is (deadlock, lock timeout, cancel)."""
    return isinstance(error, psycopg2.Error) and getattr(error, "pgcode", None) in TRANSIENT_PGCODES


def is_missing_partition(error: BaseException) -> bool:
    """True for a write to task_result whose slot has no partition (history/partitions.py).

    Not the site's fault nor the connection's: keep the results and retry once the
    maintenance job has created the partition.
    """
    return (isinstance(error, psycopg2.Error) and getattr(error, "pgcode", None) == "23514"
            and "no partition of relation" in str(error))


class Reconnecting:
    """A connection that is reopened with exponential backoff after the database goes away.

    Used by the long-running loops. Logging is rate-limited: one line when the
    database goes away, one every `log_every` seconds while it stays away, one
    when it is back.
    """

    def __init__(self, dsn: str, timeout: float, role: str, log, on_connect=None,
                 backoff_max: float = 5.0, log_every: float = 30.0, clock=None):
        import time
        self._clock = clock or time.monotonic
        self.dsn, self.timeout, self.role, self.log = dsn, timeout, role, log
        self.on_connect = on_connect
        self.backoff_max, self.log_every = backoff_max, log_every
        self.conn = None
        self._delay = 0.0
        self._retry_at = 0.0
        self._down_since = None
        self._last_log = 0.0
        self.errors = 0          # failures since the last take_errors() (sitewatch_db_errors_total)

    def get(self):
        """The open connection, or None while the database is unavailable (retry later)."""
        if self.conn is not None:
            return self.conn
        now = self._clock()
        if now < self._retry_at:
            return None
        conn = None
        try:
            conn = connect(self.dsn, self.timeout, self.role, autocommit=True)
            if self.on_connect is not None:
                self.on_connect(conn)
        except SchemaTooNew:
            # Waiting will not make the schema older: let the caller stop.
            conn.close()
            raise
        except Exception as e:  # DatabaseUnavailable, or on_connect failing on a half-up server
            if conn is not None:
                conn.close()
            self._failed(e)
            return None
        if self._down_since is not None:
            self.log.info("database connection restored", down_for_s=round(now - self._down_since, 1))
        self.conn, self._delay, self._down_since = conn, 0.0, None
        return conn

    def seconds_until_retry(self) -> float:
        return max(0.0, self._retry_at - self._clock())

    def broken(self, error: BaseException) -> None:
        """The connection failed: close it; get() reconnects after a backoff."""
        self.close()
        self._failed(error)

    def take_errors(self) -> int:
        """Connection failures since the last call, for the stats message."""
        errors, self.errors = self.errors, 0
        return errors

    def _failed(self, error: BaseException) -> None:
        self.errors += 1
        now = self._clock()
        self._delay = min(self.backoff_max, max(0.5, self._delay * 2))
        self._retry_at = now + self._delay
        if self._down_since is None:
            self._down_since = now
            self._last_log = now
            self.log.warning("database unavailable, retrying", error=describe_error(error, self.dsn),
                             retry_in_s=self._delay)
        elif now - self._last_log >= self.log_every:
            self._last_log = now
            self.log.warning("database still unavailable", error=describe_error(error, self.dsn),
                             down_for_s=round(now - self._down_since, 1))

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None
