"""Push monitors' statements (db/push.sql): adding one, its token, its pings and its missed slots.

Like store.py: functions take an open psycopg2 connection; the caller owns connecting and
transactions. The slot rules are written out in check/push.py.
"""

from ..errors import BadInput
from ..redact import redact_url
from .store import NO_ALERT_CHANNELS, load_queries

QUERIES = load_queries("sitewatch.db", "push.sql")


def _alert_params(alert_defaults: dict | None) -> dict:
    return {**NO_ALERT_CHANNELS, **(alert_defaults or {})}


def add_push(conn, entry, token_hash: bytes) -> int:
    """Register a push monitor (a validated UrlEntry); returns its id. BadInput when its identity
    is taken."""
    with conn, conn.cursor() as cur:
        cur.execute(QUERIES["add_push"], {**entry.as_row(), "token_hash": token_hash})
        row = cur.fetchone()
    if row is None:
        if entry.name:
            raise BadInput(f"a monitor is already named {entry.name!r} (use url update to change it)")
        raise BadInput(f"already monitored: {redact_url(entry.url)} (give this one a --name, or use "
                       f"url show-token to get a new token)")
    return row[0]


def new_token(conn, url_id: int, token_hash: bytes) -> None:
    with conn, conn.cursor() as cur:
        cur.execute(QUERIES["new_token"], {"id": url_id, "token_hash": token_hash})
        if cur.fetchone() is None:
            raise BadInput("not a push monitor: only push://NAME monitors have a token")


def ping(conn, token_hash: bytes, signal: str, owner: str, error_kind: str | None = None,
         error: str | None = None, message: str | None = None,
         alert_defaults: dict | None = None) -> tuple[bool, bool]:
    """One ping (check/push.py START, SUCCESS or FAILURE); returns (the token is a monitor's,
    a result was recorded). `conn` in autocommit mode: the statement is its own transaction."""
    with conn.cursor() as cur:
        cur.execute(QUERIES["ping"], {"token_hash": token_hash, "signal": signal, "owner": owner,
                                      "error_kind": error_kind, "error": error, "message": message,
                                      **_alert_params(alert_defaults)})
        found, recorded = cur.fetchone()
    return bool(found), bool(recorded)


def record_missed(conn, batch: int, owner: str, alert_defaults: dict | None = None) -> tuple[int, int]:
    """One step of the missed-slot writer; returns (monitors due, results recorded).
    `conn` in autocommit mode."""
    with conn.cursor() as cur:
        cur.execute(QUERIES["record_missed"], {"batch": batch, "owner": owner, **_alert_params(alert_defaults)})
        due, recorded = cur.fetchone()
    return due, recorded
