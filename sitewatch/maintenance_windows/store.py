"""The maintenance windows' SQL (queries.sql here), and planning their occurrences ahead.

Functions take an open psycopg2 connection; the caller owns connecting and retrying.
"""

import datetime

from ..alerts.store import like_pattern
from ..db.store import load_queries
from .schedule import Window

QUERIES = load_queries("sitewatch.maintenance_windows")
HORIZON = datetime.timedelta(days=1)    # occurrences are written this far ahead
# ...and by `maintenance add`, this far back: a window added late (the work began before it was
# entered) still leaves its slots out of uptime, for the hours not rolled up yet.
LOOKBACK = datetime.timedelta(days=1)


def add_window(conn, pattern: str, window: Window, reason: str | None, audit=None) -> int:
    """Store a window and write its first occurrences, in one transaction; audit(cur, id) in it."""
    with conn, conn.cursor() as cur:
        cur.execute(QUERIES["add_window"], {
            "pattern": pattern, "like_pattern": like_pattern(pattern), "start_local": window.start_local,
            "tz": window.tz, "duration": window.duration, "every": window.every, "reason": reason})
        window_id = cur.fetchone()[0]
        now = _now(cur)
        _write(cur, [(window_id, window)], now - LOOKBACK, now)
        if audit is not None:
            audit(cur, window_id)
    return window_id


def windows(conn) -> list[dict]:
    with conn, conn.cursor() as cur:
        cur.execute(QUERIES["windows"])
        names = [d.name for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def as_window(row: dict) -> Window:
    return Window(row["start_local"], row["tz"], row["duration"], row["every"])


def plan(conn) -> int:
    """Write every window's occurrences that start within HORIZON and are not over (the notifier
    calls this every minute). Returns how many were new. No window: one cheap read."""
    rows = windows(conn)
    if not rows:
        return 0
    with conn, conn.cursor() as cur:
        now = _now(cur)
        return _write(cur, [(row["id"], as_window(row)) for row in rows], now, now)


def _now(cur) -> datetime.datetime:
    cur.execute("SELECT now()")     # the database's clock, which the silences are read by
    return cur.fetchone()[0]


def _write(cur, planned, since, now) -> int:
    """Write the occurrences in force after `since` that start before now + HORIZON."""
    ids, starts, ends = [], [], []
    for window_id, window in planned:
        for start, end in window.occurrences(since, now + HORIZON):
            ids.append(window_id)
            starts.append(start)
            ends.append(end)
    if not ids:
        return 0
    cur.execute(QUERIES["write_occurrences"], {"ids": ids, "starts": starts, "ends": ends})
    return cur.rowcount


def remove_window(conn, window_id: int, audit=None) -> dict | None:
    """Delete a window and its planned occurrences; audit(cur, {id, pattern}) in the same transaction."""
    with conn, conn.cursor() as cur:
        cur.execute(QUERIES["delete_window"], {"id": window_id})
        found = cur.fetchone()
        if found is None:
            return None
        cur.execute(QUERIES["drop_occurrences"], {"id": window_id})     # a new snapshot: sees all planned
        removed = {"id": found[0], "pattern": found[1]}
        if audit is not None:
            audit(cur, removed)
        return removed


def in_maintenance(conn, ids: list[int]) -> set[int]:
    """The URLs among `ids` that a maintenance window covers now."""
    if not ids:
        return set()
    with conn.cursor() as cur:
        cur.execute(QUERIES["in_maintenance"], {"ids": list(ids)})
        return {row[0] for row in cur.fetchall()}
