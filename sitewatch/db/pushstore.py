"""Push monitors' statements (db/push.sql): adding one, its token, its pings and its missed slots.

Like store.py: functions take an open psycopg2 connection; the caller owns connecting and
transactions. The slot rules are written out in check/push.py.
"""

import weakref
from datetime import timedelta, timezone
from typing import NamedTuple

from ..check import push, pushcron
from ..errors import BadInput
from ..redact import redact_url
from .store import NO_ALERT_CHANNELS, load_queries
from .store import QUERIES as STORE_QUERIES

QUERIES = load_queries("sitewatch.db", "push.sql")

# The ping statement's parameters and their types, for its prepared form (_ping_statement).
_PING_PARAMS = (("token_hash", "bytea[]"), ("signal", "text[]"), ("error_kind", "text[]"), ("error", "text[]"),
                ("message", "text[]"), ("owner", "text"), ("failure_threshold", "integer"),
                ("success_threshold", "integer"), ("channels", "text[]"), ("notify_degraded", "boolean"))
_PING_PREPARED = "sitewatch_ping"
_prepared_on: weakref.WeakSet = weakref.WeakSet()      # connections whose session has it prepared


def _alert_params(alert_defaults: dict | None) -> dict:
    return {**NO_ALERT_CHANNELS, **(alert_defaults or {})}


def add_push(conn, entry, token_hash: bytes, audit=None) -> int:
    """Register a push monitor (a validated UrlEntry); returns its id. BadInput when its identity
    is taken. audit(cur, id) in the same transaction."""
    with conn, conn.cursor() as cur:
        row = insert_push(cur, entry, token_hash)
        if audit is not None:
            audit(cur, row)
        return row


def insert_push(cur, entry, token_hash: bytes | None = None) -> int:
    """add_push in the caller's transaction. Without `token_hash` (a file-driven add: nobody to
    show a token to), the hash of a random token nobody ever sees: no ping is accepted until
    `url show-token` issues one."""
    if token_hash is None:
        token_hash = push.token_hash(push.new_token())
    cur.execute(QUERIES["add_push"], {**entry.as_row(), "token_hash": token_hash,
                                      "first_slot": pushcron.first_slot(entry.cron, entry.tz)})
    row = cur.fetchone()
    if row is None:
        if entry.name:
            raise BadInput(f"a monitor is already named {entry.name!r} (use url update to change it)")
        raise BadInput(f"already monitored: {redact_url(entry.url)} (give this one a --name, or use "
                       f"url show-token to get a new token)")
    return row[0]


def update_push(cur, url_id: int, entry) -> None:
    """A push monitor's new settings, in the caller's transaction, as `url update` writes them
    (queries.sql update_url: a new schedule or grace starts a new slot)."""
    cur.execute(STORE_QUERIES["update_url"], {**entry.as_row(), "id": url_id,
                                              "first_slot": pushcron.first_slot(entry.cron, entry.tz)})


def push_names(conn, names: list[str]) -> list[str]:
    """The names among `names` that push monitors have."""
    with conn, conn.cursor() as cur:
        cur.execute(QUERIES["push_names"], {"names": names})
        return [name for (name,) in cur.fetchall()]


def import_pushes(conn, entries, audit=None) -> tuple[list, int]:
    """`url import`'s push monitors, in one transaction: each one new is added with no token
    shown (insert_push), each one whose identity exists is updated (update_push). Returns (the
    entries added, how many were updated). BadInput, nothing written, when an identity is a
    checked monitor's. audit(cur, entries, [(inserted,) per entry]) as store.import_urls calls it."""
    added, updated, done = [], 0, []
    with conn, conn.cursor() as cur:
        for entry in entries:
            cur.execute(QUERIES["monitor_by_identity"], {"name": entry.name, "url": entry.url})
            found = cur.fetchone()
            if found is None:
                insert_push(cur, entry)
                added.append(entry)
                done.append((True,))
                continue
            url_id, url = found
            if not push.is_push(url):
                raise BadInput(f"{entry.shown}: a monitor cannot change between push:// and a checked URL "
                               f"(it is {redact_url(url)}): remove it and add the new one")
            update_push(cur, url_id, entry)
            updated += 1
            done.append((False,))
        if audit is not None and entries:
            audit(cur, entries, done)
    return added, updated


def new_token(conn, url_id: int, token_hash: bytes, audit=None) -> None:
    """A push monitor's new token hash; audit(cur, id) in the same transaction."""
    with conn, conn.cursor() as cur:
        cur.execute(QUERIES["new_token"], {"id": url_id, "token_hash": token_hash})
        if cur.fetchone() is None:
            raise BadInput("not a push monitor: only push://NAME monitors have a token")
        if audit is not None:
            audit(cur, url_id)


class Ping(NamedTuple):
    """One ping to write: its token's hash, check/push.py START, SUCCESS or FAILURE, and for a
    failure its error_kind and error; `message` is the body the job sent."""
    token_hash: bytes
    signal: str
    error_kind: str | None = None
    error: str | None = None
    message: str | None = None


def ping_many(conn, pings: list[Ping], owner: str, alert_defaults: dict | None = None) -> list[tuple[bool, bool]]:
    """Pings, in their order; returns for each (the token is a monitor's, a result was recorded).
    The caller owns the transaction: web/pingwriter.py writes a batch in one. Each round is one
    statement (push.sql ping) with each token at most once; a token pinged twice in the batch
    is in two rounds, in order, as if its pings had come one by one."""
    answers: list = [None] * len(pings)
    for round_ in _rounds(pings):
        batch = [pings[i] for i in round_]
        with conn.cursor() as cur:
            cur.execute(_ping_statement(cur), {**{field: [getattr(p, field) for p in batch] for field in Ping._fields},
                                               "owner": owner, **_alert_params(alert_defaults)})
            rows = cur.fetchall()
        for n, is_monitor, recorded, cron in rows:
            i = round_[n - 1]
            if cron:
                p = pings[i]
                answers[i] = (True, _ping_cron(conn, p.token_hash, p.signal, owner, p.error_kind, p.error,
                                             p.message, alert_defaults))
            else:
                answers[i] = (bool(is_monitor), bool(recorded))
    return answers


def _ping_statement(cur) -> str:
    """EXECUTE of push.sql's ping, prepared once per session (PREPARE outlives a rollback). Pings
    arrive a few at a time, so a batch is small, and planning the statement (its CTEs, the alert
    function's call) took about as long as running it (~0.9 ms each, docs/benchmarks.md)."""
    if cur.connection not in _prepared_on:
        body = QUERIES["ping"]
        for number, (name, _) in enumerate(_PING_PARAMS, 1):
            body = body.replace(f"%({name})s", f"${number}")
        types = ", ".join(kind for _, kind in _PING_PARAMS)
        cur.execute(f"PREPARE {_PING_PREPARED} ({types}) AS {body}")
        _prepared_on.add(cur.connection)
    return f"EXECUTE {_PING_PREPARED} ({', '.join(f'%({name})s' for name, _ in _PING_PARAMS)})"


def _rounds(pings: list[Ping]) -> list[list[int]]:
    """The pings' indexes in rounds: a token's first ping in the first round, its second in the
    second, and so on (push.sql ping moves each monitor at most once a statement)."""
    rounds: list[list[int]] = []
    seen: dict[bytes, int] = {}
    for i, p in enumerate(pings):
        k = seen.get(p.token_hash, 0)
        seen[p.token_hash] = k + 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(i)
    return rounds


def ping(conn, token_hash: bytes, signal: str, owner: str, error_kind: str | None = None,
         error: str | None = None, message: str | None = None,
         alert_defaults: dict | None = None) -> tuple[bool, bool]:
    """One ping (ping_many of one); returns (the token is a monitor's, a result was recorded)."""
    return ping_many(conn, [Ping(token_hash, signal, error_kind, error, message)], owner, alert_defaults)[0]


CRON_ATTEMPTS = 5       # a cron monitor's cursor moved by another writer meanwhile: read it again


class SlotContended(Exception):
    """A cron monitor's cursor moved under each of CRON_ATTEMPTS reads: the ping is not recorded
    and the job is told to retry (503), never given a 500."""


def _ping_cron(conn, token_hash, signal, owner, error_kind, error, message, alert_defaults) -> bool:
    """A cron monitor's ping: read its cursor, decide in Python (check/pushcron.py), write by
    compare-and-set (push.sql cron_settle); returns whether a result was recorded."""
    for _ in range(CRON_ATTEMPTS):
        with conn.cursor() as cur:
            cur.execute(QUERIES["cron_monitor"], {"token_hash": token_hash})
            row = cur.fetchone()
        if row is None:
            return False            # removed, or made fixed-rate, meanwhile
        url_id, expr, tz, grace, cursor, started_at, next_at, now = row
        slot, new_cursor, skipped = pushcron.settle_ping(expr, tz, grace, cursor, now, signal)
        started = now if signal == push.START else None     # any other ping closes an open run
        plan = {"id": url_id, "seen_slot": cursor, "seen_next": next_at, "seen_started": started_at,
                "slot": slot, "cursor": new_cursor, "next": pushcron.deadline(new_cursor, grace, started),
                "started": started, "skipped": skipped, "ok": signal == push.SUCCESS,
                "error_kind": error_kind, "error": error, "message": message}
        moved, recorded = _cron_settle(conn, [plan], owner, alert_defaults)
        if moved:
            return bool(recorded)
    raise SlotContended("the monitor's slot kept moving under this ping")   # never seen: five writers at once


def _cron_settle(conn, plans: list[dict], owner: str, alert_defaults) -> tuple[int, int]:
    params = {"ids" if key == "id" else key: [plan[key] for plan in plans] for key in plans[0]}
    with conn.cursor() as cur:
        cur.execute(QUERIES["cron_settle"], {**params, "owner": owner, **_alert_params(alert_defaults)})
        moved, recorded = cur.fetchone()
    return moved, recorded


def _record_missed_cron(conn, batch: int, owner: str, alert_defaults) -> tuple[int, int]:
    """The cron monitors' missed slots (check/pushcron.py settle_missed), written by
    compare-and-set: a monitor another host (or a ping) moved first is left to it."""
    with conn.cursor() as cur:
        cur.execute(QUERIES["cron_due"], {"batch": batch})
        rows = cur.fetchall()
    plans = []
    for url_id, expr, tz, grace, cursor, started_at, next_at, now in rows:
        slot, new_cursor, skipped = pushcron.settle_missed(expr, tz, grace, cursor, now)
        if started_at is not None and started_at + timedelta(seconds=grace) <= now:
            error = (f"started at {started_at.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC and no success "
                     f"or failure within the grace of {grace} s")
        else:
            error = (f"no ping within the grace of {grace} s after the fire time "
                     f"{slot.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC (cron {expr!r}, {tz})")
        plans.append({"id": url_id, "seen_slot": cursor, "seen_next": next_at, "seen_started": started_at,
                      "slot": slot, "cursor": new_cursor, "next": pushcron.deadline(new_cursor, grace, None),
                      "started": None, "skipped": skipped, "ok": False, "error_kind": push.ERROR_KIND_MISSED,
                      "error": error, "message": None})
    if not plans:
        return 0, 0
    return len(rows), _cron_settle(conn, plans, owner, alert_defaults)[1]


def record_missed(conn, batch: int, owner: str, alert_defaults: dict | None = None) -> tuple[int, int]:
    """One step of the missed-slot writer, fixed-rate monitors (push.sql record_missed) then cron
    ones (_record_missed_cron); returns (monitors due in the larger batch, results recorded).
    `conn` in autocommit mode."""
    with conn.cursor() as cur:
        cur.execute(QUERIES["record_missed"], {"batch": batch, "owner": owner, **_alert_params(alert_defaults)})
        due, recorded = cur.fetchone()
    cron_due, cron_recorded = _record_missed_cron(conn, batch, owner, alert_defaults)
    return max(due, cron_due), recorded + cron_recorded
