"""Opening database connections, and deciding which database to use.

Connections are opened by the process that uses them, after any fork.
"""

import socket

import psycopg2
import psycopg2.extensions

from . import embedded
from .errors import DatabaseUnavailable
from .redact import redact_dsn, scrub


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


def connect(dsn: str, timeout: float, role: str, autocommit: bool = False):
    """A psycopg2 connection with connect and statement timeouts; DatabaseUnavailable on failure."""
    try:
        conn = psycopg2.connect(
            dsn,
            connect_timeout=max(1, int(round(timeout))),
            application_name=f"sitewatch {role}"[:63],
            options=f"-c statement_timeout={int(timeout * 1000)}",
            # Notice a dead server within seconds, not after the kernel's two hours.
            keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=3,
        )
    except psycopg2.Error as e:
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
        text = scrub(text, [params.get("password")])
    return text


def is_connection_error(error: BaseException) -> bool:
    """True for errors that mean "the connection is gone": reconnect and retry."""
    if isinstance(error, (psycopg2.OperationalError, psycopg2.InterfaceError, socket.error)):
        return True
    return isinstance(error, psycopg2.Error) and getattr(error, "pgcode", None) in (
        "57P01", "57P02", "57P03", "08000", "08003", "08006", "08001", "08004")


def hostname() -> str:
    return socket.gethostname()
