"""The alerts subsystem's SQL (sitewatch/alerts/queries.sql), loaded by db/store.py's loader.

Functions take an open psycopg2 connection; the caller owns connecting and retrying.
"""

import fnmatch

import psycopg2.extras

from ..db.store import load_queries

QUERIES = load_queries("sitewatch.alerts")


def _rows(conn, name, params) -> list[dict]:
    with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute(QUERIES[name], params)
        return [dict(r) for r in cur.fetchall()] if cur.description else []


# --- notifier ------------------------------------------------------------------------

def claim_outbox(conn, owner: str, rooms: dict[str, int], other_room: int, lease: float,
                 max_attempts: int, foreign_wait: float = 0.0) -> list[dict]:
    """Lease due notices: up to rooms[channel] per channel, other_room for any other channel once
    it is foreign_wait seconds old (left meanwhile to a host that has the channel)."""
    return _rows(conn, "claim_outbox", {"owner": owner, "channels": list(rooms), "rooms": list(rooms.values()),
                                         "other_room": other_room, "lease": lease, "max_attempts": max_attempts,
                                         "foreign_wait": foreign_wait})


def mark_sent(conn, row: dict, owner: str) -> bool:
    """False when the lease was lost (another notifier took the notice over)."""
    return bool(_rows(conn, "mark_sent", {"id": row["id"], "owner": owner, "attempts": row["attempts"]}))


def mark_failed(conn, row: dict, owner: str, error: str, retry_in: float, max_attempts: int) -> str | None:
    """'pending' (will retry), 'dead', or None when the lease was lost."""
    found = _rows(conn, "mark_failed", {"id": row["id"], "owner": owner, "attempts": row["attempts"],
                                        "error": error, "retry_in": retry_in, "max_attempts": max_attempts})
    return found[0]["status"] if found else None


def record_connectivity(conn, host: str, ok: bool | None, lookback: float = 10.0) -> None:
    """Record a connectivity verdict (None: no connectivity_url, forget the host). `lookback`:
    how far back a first failed check with no good one before it puts the outage's start."""
    with conn.cursor() as cur:
        if ok is None:
            cur.execute(QUERIES["forget_connectivity"], {"host": host})
        else:
            cur.execute(QUERIES["record_connectivity"], {"host": host, "ok": ok, "lookback": lookback})


def region_heartbeat(conn, owner: str, region: str) -> None:
    with conn.cursor() as cur:
        cur.execute(QUERIES["region_heartbeat"], {"owner": owner, "region": region})


def regions_in_use(conn) -> bool:
    """Whether any host ever had a region (a region's newest heartbeat row is never pruned)."""
    with conn.cursor() as cur:
        cur.execute("SELECT EXISTS (SELECT 1 FROM region_host)")
        return cur.fetchone()[0]


def announce_absent_regions(conn, after: float, channels: list[str]) -> int:
    """Queue region_absent notices for regions that lost every host; returns how many."""
    with conn.cursor() as cur:
        cur.execute(QUERIES["announce_absent_regions"], {"after": after, "channels": channels})
        return cur.rowcount


def queue_reminders(conn, interval: float, channels: list[str]) -> int:
    with conn.cursor() as cur:
        cur.execute(QUERIES["queue_reminders"], {"interval": interval, "channels": channels})
        return cur.rowcount


def settle_silences(conn, channels: list[str], notify_degraded: bool = True) -> int:
    """Queue the notices owed for silences that are over; returns how many were queued."""
    with conn.cursor() as cur:
        cur.execute(QUERIES["silences_to_settle"])
        if not cur.fetchone()[0]:
            return 0
        cur.execute(QUERIES["settle_silences"], {"channels": channels, "notify_degraded": notify_degraded})
        return cur.rowcount


# --- CLI ---------------------------------------------------------------------------------

def like_pattern(pattern: str) -> str:
    """A URL or glob (*, ?) as a LIKE pattern: LIKE's own % and _ are literal in a glob."""
    out = []
    for ch in pattern:
        if ch in "%_\\":
            out.append("\\" + ch)
        elif ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        else:
            out.append(ch)
    return "".join(out)


def names_only_glob(conn, pattern: str) -> list[str]:
    """The names (a few) a glob matches when it matches no monitored URL; [] otherwise."""
    with conn:
        return [r["name"] for r in _rows(conn, "names_only_glob", {"like_pattern": like_pattern(pattern)})]


def is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?") and fnmatch.translate(pattern) is not None


def add_silence(conn, pattern: str, seconds: float, reason: str | None, audit=None) -> dict:
    """A new silence (id, starts_at, ends_at); audit(cur, it) in the same transaction."""
    with conn:
        found = _rows(conn, "add_silence", {"pattern": pattern, "like_pattern": like_pattern(pattern),
                                             "seconds": seconds, "reason": reason})[0]
        if audit is not None:
            with conn.cursor() as cur:
                audit(cur, {**found, "pattern": pattern, "reason": reason})
        return found


def list_silences(conn) -> list[dict]:
    with conn:
        return _rows(conn, "list_silences", {})


def end_silence(conn, silence_id: int, audit=None) -> dict | None:
    """End a silence now (id, pattern), or None when there is none; audit(cur, it) when ended."""
    with conn:
        found = _rows(conn, "end_silence", {"id": silence_id})
        if found and audit is not None:
            with conn.cursor() as cur:
                audit(cur, found[0])
    return found[0] if found else None


def list_incidents(conn, open_only: bool, url: str | None, limit: int = 1000) -> list[dict]:
    with conn:
        return _rows(conn, "list_incidents", {"open": open_only, "url": url, "limit": limit})


def list_dead(conn, url: str | None, limit: int = 1000) -> list[dict]:
    with conn:
        return _rows(conn, "list_dead", {"url": url, "limit": limit})
